"""Host → tenant lookup, pure and O(labels) per request.

Invariant: a host maps to at most one tenant. Exact names win over wildcards; among
wildcards the longest suffix wins; ``*.example.org`` matches any name below
``example.org`` (like nginx) but not ``example.org`` itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar


class _HasHosts(Protocol):
    @property
    def hosts(self) -> tuple[str, ...]: ...


T = TypeVar("T", bound=_HasHosts)


def normalise_host(raw: str) -> str:
    """The host part of a Host header: no port, lower case, no trailing dot, IPv6 unbracketed.

    Exactly the folding every HTTP server applies to the Host it routes by (nginx
    too): ASCII case, the port, one trailing dot, IPv6 spelling. The Host itself
    reaches the upstream unchanged, and http1 has refused anything that is not a
    valid ``host[:port]`` (no whitespace of any kind, ASCII only), so the tenant
    charged is the site the upstream serves. Only SP/HTAB are trimmed here:
    ``str.strip()`` would take NBSP for whitespace.
    """
    host = raw.strip(" \t")
    if host.isascii():
        host = host.lower()  # str.lower() would fold non-ASCII letters as well
    if host.startswith("["):
        end = host.find("]")
        return _ipv6(host[1:end]) if end > 0 else host
    colon = host.rfind(":")
    if colon != -1 and host.count(":") == 1:
        host = host[:colon]
    return host.removesuffix(".")


def _ipv6(text: str) -> str:
    """An IPv6 literal in its compressed form (as tenant hosts are kept), or as it is."""
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return text


class TenantIndex(Generic[T]):
    """Maps a Host header to the tenant that claims it."""

    __slots__ = ("_exact", "_wildcards")

    def __init__(self, tenants: Iterable[T]) -> None:
        self._exact: dict[str, T] = {}
        self._wildcards: dict[str, T] = {}  # suffix without "*." → tenant
        for tenant in tenants:
            for host in tenant.hosts:
                if host.startswith("*."):
                    self._wildcards.setdefault(host[2:], tenant)
                else:
                    name = normalise_host(host)
                    # The loader's hosts are normalised already: keep its string, not a copy.
                    self._exact.setdefault(host if name == host else name, tenant)

    def lookup(self, raw_host: str | None) -> T | None:
        """The tenant for a Host header value, or None when no tenant claims it."""
        if not raw_host:
            return None
        host = normalise_host(raw_host)
        found = self._exact.get(host)
        if found is not None or not self._wildcards:
            return found
        # Try ever shorter suffixes: a.b.example.org → b.example.org → example.org → org.
        dot = host.find(".")
        while dot != -1:
            suffix = host[dot + 1 :]
            found = self._wildcards.get(suffix)
            if found is not None:
                return found
            dot = host.find(".", dot + 1)
        return None
