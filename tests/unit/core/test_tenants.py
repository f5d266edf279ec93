"""Host → tenant lookup: exact, wildcard, port, trailing dot, case, IPv6, unknown."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from governor.core.tenants import TenantIndex


@dataclass(frozen=True)
class T:
    name: str
    hosts: tuple[str, ...]


SITE = T("site", ("example.org", "www.example.org"))
WILD = T("wild", ("*.example.org",))
DEEP = T("deep", ("*.cdn.example.org",))
V6 = T("v6", ("2001:db8::1", "192.0.2.10"))
INDEX = TenantIndex([SITE, WILD, DEEP, V6])


@pytest.mark.parametrize(
    ("host", "tenant"),
    [
        ("example.org", SITE),
        ("www.example.org", SITE),  # an exact name wins over a wildcard that also matches
        ("example.org:8080", SITE),  # the port is not the site
        ("example.org.", SITE),  # nor one trailing dot
        ("example.org.:80", SITE),
        ("EXAMPLE.Org", SITE),  # nor ASCII case
        (" example.org\t", SITE),  # SP/HTAB around the value only
        ("a.example.org", WILD),
        ("a.b.example.org", WILD),  # any depth below the suffix
        ("x.cdn.example.org", DEEP),  # the longest wildcard suffix wins
        ("cdn.example.org", WILD),  # "*.cdn.example.org" does not match cdn.example.org
        ("[2001:db8::1]", V6),
        ("[2001:DB8:0:0::1]:443", V6),  # IPv6 spelt another way, with a port
        ("192.0.2.10:80", V6),
    ],
)
def test_a_host_finds_its_tenant(host: str, tenant: T) -> None:
    assert INDEX.lookup(host) is tenant


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "example.com",
        "org",  # a wildcard's suffix is not the bare top-level name
        "notexample.org",  # a suffix match is on a label boundary
        "example.org..",  # one trailing dot is folded, not two
        "[2001:db8::2]",
        "éxample.org",
    ],
)
def test_an_unknown_host_finds_no_tenant(host: str | None) -> None:
    assert INDEX.lookup(host) is None


def test_a_wildcard_does_not_match_its_own_apex() -> None:
    index = TenantIndex([WILD])
    assert index.lookup("example.org") is None
    assert index.lookup("www.example.org") is WILD


def test_the_first_tenant_to_claim_a_host_keeps_it() -> None:
    first, second = T("first", ("a.test",)), T("second", ("A.test.",))
    assert TenantIndex([first, second]).lookup("a.test") is first
