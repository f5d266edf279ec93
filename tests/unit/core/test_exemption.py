"""Which requests pass a blocked tenant, and which tenant a Host names: pure, without sockets."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pytest

from governor.config import TenantConfig, UpstreamURL
from governor.core.exemption import exemption_path, is_exempt
from governor.core.tenants import TenantIndex, normalise_host

PREFIXES = ("/robots.txt", "/.well-known/acme-challenge/")


def tenant(**options: object) -> TenantConfig:
    upstream = UpstreamURL(
        url="http://127.0.0.1:1", scheme="http", host="127.0.0.1", port=1, base_path=""
    )
    return TenantConfig(
        name="t",
        hosts=("a.test",),
        upstream=upstream,
        daily_cap=1,
        timezone=ZoneInfo("UTC"),
        reset_at=dt.time(0, 0),
        **options,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "target",
    [
        "/robots.txt",
        "/robots.txt?x",
        "/robots.txt?/../../big",
        "/robots.txt/",
        "/robots%2Etxt",
        "/%72%6F%62ots.txt",
        "/.well-known/acme-challenge/abc-DEF_123",
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/a;b=c",
        "/.well-known/acme-challenge/a%3Fb",
    ],
)
def test_exempt(target: str) -> None:
    assert is_exempt(tenant(exempt_paths=PREFIXES), target, "192.0.2.1")


@pytest.mark.parametrize(
    "target",
    [
        "/robots.txtbig",
        "/robots.txt.bak",
        "/robots.txt\\..\\big",
        "/.well-known/acme-challenge/..\\..\\big",
        "/robots.txt%5C..%5Cbig",
        "/robots.txt%5c..%5cbig",
        "/robots.txt%2F..%2Fbig",
        "/.well-known/acme-challenge/%2e%2e/%2e%2e/big",
        "/.well-known/acme-challenge/.%2E/.%2e/big",
        "/.well-known/acme-challenge/../../big",
        "/.well-known/acme-challenge/x/../../../big",
        "/.well-known/acme-challenge/./x",
        "/.well-known/acme-challenge//../../big",
        "/.well-known/acme-challenge/..;/..;/big",
        "/.well-known/acme-challenge/.../big",
        "/.well-known/acme-challenge/%252e%252e/big",
        "/.well-known/acme-challenge/%C3%A9",
        "/.well-known/acme-challenge/\u00e9",
        "/.well-known/acme-challenge/%00",
        "/.well-known/acme-challenge/%20",
        "/.well-known/acme-challenge/%zz",
        "/.well-known/acme-challenge/%4",
        "/.well-known/acme-challenge/#/../../big",
        "/.well-known/acme-challenge/x/..",
        "/.well-known/acme-challenge",
        "/.well-known/acme-challengex/y",
        "//robots.txt",
        "/./robots.txt",
        "/big/../robots.txt",
        "*",
        "a.test:443",
    ],
)
def test_not_exempt(target: str) -> None:
    assert not is_exempt(tenant(exempt_paths=PREFIXES), target, "192.0.2.1")


def test_an_upgrade_is_never_exempt() -> None:
    paths = tenant(exempt_paths=("/",))
    clients = tenant(exempt_clients=(ipaddress.ip_network("192.0.2.0/24"),))
    assert is_exempt(paths, "/ws", "198.51.100.1")
    assert is_exempt(clients, "/ws", "192.0.2.1")
    assert not is_exempt(paths, "/ws", "198.51.100.1", upgrade=True)
    assert not is_exempt(clients, "/ws", "192.0.2.1", upgrade=True)


def test_configured_prefixes_are_read_like_request_paths() -> None:
    assert is_exempt(tenant(exempt_paths=("/%7Euser/",)), "/~user/x", "192.0.2.1")
    assert exemption_path("/a/%7e/b") == "/a/~/b"
    assert exemption_path("/a/%3f") == "/a/%3F"


@dataclass(frozen=True)
class Named:
    hosts: tuple[str, ...]
    name: str = field(default="")


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        ("A.Test", "a.test"),
        ("a.test.", "a.test"),
        ("a.test:8080", "a.test"),
        ("\ta.test ", "a.test"),
        ("[0:0::1]:80", "::1"),
        ("\xa0a.test", "\xa0a.test"),  # NBSP is not whitespace in HTTP
        ("a.test\x85", "a.test\x85"),
        ("\xc0.test", "\xc0.test"),  # no Unicode case folding either
    ],
)
def test_normalise_host_folds_only_what_http_servers_fold(raw: str, host: str) -> None:
    assert normalise_host(raw) == host


def test_a_host_with_unicode_whitespace_names_no_tenant() -> None:
    index = TenantIndex([Named(("a.test", "*.b.test"), "a"), Named(("::1",), "v6")])
    assert index.lookup("A.TEST.:80") is not None
    assert index.lookup("\xa0a.test") is None
    assert index.lookup("a.test\xa0") is None
    assert index.lookup("x.b.test\x85") is None
    found = index.lookup("[0::1]")
    assert found is not None
    assert found.name == "v6"
