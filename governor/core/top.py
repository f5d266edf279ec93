"""Top consumers: which visitors, paths, User-Agents and referrers used a tenant's allowance.

Per tenant and period, four *dimensions* (:data:`DIMENSIONS`), each a space-saving table
of :data:`COUNTERS` items by bytes, with their requests. Each instance counts between two
flushes only (its tables start empty after each), then adds what it counted to the
store, which keeps the :data:`KEEP` heaviest items per dimension, merged across
instances and flushes.

The error, for an item of a tenant that transferred ``N`` bytes in the period:

* over: at most ``N / COUNTERS`` (1% of the tenant's bytes): a space-saving table
  overstates an item by at most its total over its counters, and the flushes' totals sum
  to ``N``;
* under: an item dropped from the store's ``KEEP`` (when ``KEEP`` heavier ones are
  there) loses what it had then, at most ``N / KEEP`` (0.5%) each time, and is counted
  again from its next bytes.

Visitors are stored as ``top_clients`` says: ``truncated`` (the default: an IPv4 /24,
an IPv6 /48: enough to name a network that burns the allowance, not a person), ``hashed``
(a per-tenant, per-period digest: the same visitor adds up within the period, and no
address is stored; an IPv4 digest can be reversed by trying all 2^32 addresses, so this
is pseudonymous, not anonymous), or ``full``. Paths lose their query string; referrers
are their host only.

This module is pure.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from typing import Final, Literal

from governor.config.model import ClientForm
from governor.core.lightest import Lightest

Dimension = Literal["client", "path", "agent", "referrer"]
DIMENSIONS: Final[tuple[Dimension, ...]] = ("client", "path", "agent", "referrer")
COUNTERS: Final = 100  # items per dimension an instance counts between two flushes
KEEP: Final = 200  # items per dimension the store keeps
MAX_ITEM: Final = 200  # characters of an item kept (a path or User-Agent is cut there)
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


class Count:
    """An item's bytes and requests (a native object: adding to it boxes no integer)."""

    __slots__ = ("nbytes", "requests")

    def __init__(self, nbytes: int, requests: int) -> None:
        self.nbytes = nbytes
        self.requests = requests


class TopTable:
    """Space-saving by bytes over ``capacity`` counters; each item's requests alongside."""

    __slots__ = ("capacity", "counts", "lightest")

    def __init__(self, capacity: int = COUNTERS) -> None:
        self.capacity = capacity
        self.counts: dict[str, Count] = {}
        self.lightest = Lightest()

    def add(self, item: str, nbytes: int, requests: int = 1) -> None:
        counts = self.counts
        entry = counts.get(item)
        if entry is not None:
            entry.nbytes += nbytes
            entry.requests += requests
            return
        if len(counts) < self.capacity:
            counts[item] = Count(nbytes, requests)
            self.lightest.add(item, nbytes)
            return
        old = counts.pop(self.lightest.replace(self._bytes_of, item, nbytes))
        counts[item] = Count(old.nbytes + nbytes, old.requests + requests)

    def _bytes_of(self, item: str) -> int:
        return self.counts[item].nbytes

    def items(self) -> list[tuple[str, int, int]]:
        """(item, bytes, requests), heaviest first."""
        return sorted(
            ((k, v.nbytes, v.requests) for k, v in self.counts.items()), key=lambda t: -t[1]
        )

    def __len__(self) -> int:
        return len(self.counts)


@functools.lru_cache(maxsize=4096)
def client_item(address: str, form: ClientForm, salt: str) -> str:
    """A visitor as stored: truncated (IPv4 /24, IPv6 /48), hashed, or as it is."""
    if form == "full" or not address:
        return address
    if form == "hashed":
        digest = hashlib.blake2b(address.encode(), key=salt.encode()[:64], digest_size=8)
        return "h:" + digest.hexdigest()
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network((ip, prefix), strict=False))


def path_item(target: str) -> str:
    """A request target without its query string, cut at :data:`MAX_ITEM` characters."""
    return target.partition("?")[0][:MAX_ITEM] or "/"


def agent_item(agent: str | None) -> str:
    return (agent or "-")[:MAX_ITEM]


def referrer_item(referer: str | None) -> str:
    """The referring host (``-`` for none, ``?`` for what is not a URL)."""
    if not referer:
        return "-"
    scheme, sep, rest = referer.partition("://")
    if not sep or _SCHEME.fullmatch(scheme) is None:
        return "?"
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    return host.lower()[:MAX_ITEM] or "?"
