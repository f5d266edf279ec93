"""Client addresses against networks: the one check exempt clients and trusted proxies share."""

from __future__ import annotations

import ipaddress

import pytest

from governor.core.clients import is_trusted

NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize("addr", ["10.1.2.3", "10.255.255.255", "2001:db8::1", "2001:DB8:0::5"])
def test_an_address_inside_a_network_is_trusted(addr: str) -> None:
    assert is_trusted(addr, NETS)


@pytest.mark.parametrize(
    "addr", ["11.0.0.1", "2001:db9::1", "", None, "not-an-ip", "10.0.0.1:80", "[2001:db8::1]"]
)
def test_anything_else_is_not(addr: str | None) -> None:
    assert not is_trusted(addr, NETS)


def test_no_networks_trust_nobody() -> None:
    assert not is_trusted("10.1.2.3", ())
