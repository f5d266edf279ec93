"""A tenant's visitors and crawlers, counted per period in bounded memory, pure.

``client_share`` gives one visitor at most a share of the cap a period, and ``crawlers``
gives all crawlers together a share. Both need counts below the tenant's: the crawlers'
is one more ledger account (so it is fleet-wide like the tenant's), the visitors' would
be one per address, which no memory bound allows. So:

* Every visitor's bytes go to a space-saving table of ``k`` counters per tenant and period
  (Metwally et al., 2005): a visitor's estimate is never below its true count here and
  at most ``N / k`` above it, where ``N`` is every byte counted here for the tenant in
  the period. ``k`` is ``8 / client_share`` (80 at 10%, within 16..256), so the estimate
  overstates by at most an eighth of the share when ``N`` is the cap.
* A visitor whose estimate reaches a tenth of its share is *heavy*: from then on its
  bytes (its estimate first) also go to a ledger account of its own, which is flushed and
  read back like a tenant's, so heavy visitors are counted across the fleet. At most
  ``k`` heavy visitors per tenant and period. Before a visitor is heavy on an instance,
  that instance's bytes of it are not in the fleet count: the fleet count of a visitor
  is low by at most a tenth of its share per other instance.

Accounts are ledger keys ``(tenant, "PERIOD#crawlers")`` and ``(tenant,
"PERIOD#client:ADDRESS")``: a period key with a suffix, so the store prunes them with
their period and :func:`period_of` finds the period they belong to.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Callable
from typing import Final

from governor.config import CrawlerConfig, TenantConfig
from governor.core.clients import is_trusted
from governor.core.ledger import Key, Ledger
from governor.core.lightest import Lightest
from governor.core.pacing import Pacer

CRAWLERS: Final = "crawlers"
CLIENT: Final = "client:"
HEAVY_SHARE: Final = 0.1  # of a visitor's share: from this estimate on, it is counted fleet-wide
MIN_COUNTERS: Final = 16
MAX_COUNTERS: Final = 256


def account(period: str, name: str) -> str:
    """The period key of an account below a tenant's (``crawlers``, ``client:ADDR``)."""
    return f"{period}#{name}"


def period_of(period_key: str) -> str:
    """The period an account's key belongs to (a tenant's own key is its period)."""
    return period_key.partition("#")[0]


@functools.lru_cache(maxsize=4096)
def visitor_of(client: str) -> str:
    """The visitor an address is: an IPv4 address, or an IPv6 address's /64.

    An IPv4-mapped IPv6 address is its IPv4 address; anything else is itself.
    """
    if ":" not in client:
        return client
    try:
        ip = ipaddress.IPv6Address(client.partition("%")[0])
    except ValueError:
        return client
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)).network_address}/64"


def is_crawler(crawlers: CrawlerConfig, user_agent: str | None, client: str) -> bool:
    """Whether a request is a crawler's: its User-Agent names one, or its client is one.

    No look-up of any kind: a User-Agent substring (in lower case) or a configured network.
    """
    if user_agent:
        agent = user_agent.lower()
        for name in crawlers.agents:
            if name in agent:
                return True
    return bool(crawlers.clients) and is_trusted(client, crawlers.clients)


def counters_for(share: float) -> int:
    """The space-saving table's size for a visitor share (see the module's bound)."""
    return max(MIN_COUNTERS, min(MAX_COUNTERS, math.ceil(8 / share)))


class SpaceSaving:
    """The heaviest items of a stream by weight, in ``capacity`` counters.

    An item's estimate is at least its true weight and at most ``total / capacity`` above
    it. Replacing the lightest counter is amortized O(log capacity) (:class:`Lightest`);
    adding to a counted item is a dict update.
    """

    __slots__ = ("capacity", "counts", "lightest", "total")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.total = 0
        self.lightest = Lightest()

    def add(self, item: str, n: int) -> int:
        """Add ``n`` to ``item``; its estimate afterwards."""
        counts = self.counts
        self.total += n
        count = counts.get(item)
        if count is not None:
            count += n
        elif len(counts) < self.capacity:
            count = n
            self.lightest.add(item, count)
        else:
            count = counts.pop(self.lightest.replace(counts.__getitem__, item, n)) + n
        counts[item] = count
        return count

    def estimate(self, item: str) -> int:
        """The item's estimate; 0 when not counted (its weight is then at most the least count)."""
        return self.counts.get(item, 0)

    def top(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` heaviest items and their estimates, heaviest first."""
        return sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]


class Shares:
    """One tenant's visitors and crawlers in one period, as this instance counts them."""

    __slots__ = ("heavy", "heavy_at", "ledger", "period", "tenant", "visitors")

    def __init__(self, ledger: Ledger, tenant: TenantConfig, period: str, cap: int) -> None:
        self.ledger = ledger
        self.tenant = tenant.name
        self.period = period
        share = tenant.client_share or 1.0
        self.visitors = SpaceSaving(counters_for(share))
        self.heavy: set[str] = set()
        self.heavy_at = max(1, int(cap * share * HEAVY_SHARE))

    def crawler_key(self) -> Key:
        return (self.tenant, account(self.period, CRAWLERS))

    def visitor_key(self, visitor: str) -> Key:
        return (self.tenant, account(self.period, CLIENT + visitor))

    def charge(self, visitor: str | None, crawler: bool, n: int) -> None:
        """Count ``n`` bytes of a visitor's (None: visitors are not counted), a crawler's."""
        ledger = self.ledger
        if crawler:
            ledger.add(self.crawler_key(), n)
        if visitor is None:
            return
        estimate = self.visitors.add(visitor, n)
        if visitor in self.heavy:
            ledger.add(self.visitor_key(visitor), n)
        elif estimate >= self.heavy_at and len(self.heavy) < self.visitors.capacity:
            self.heavy.add(visitor)
            key = self.visitor_key(visitor)
            ledger.add(key, estimate)
            ledger.serve(key)

    def visitor_used(self, visitor: str) -> int:
        """A visitor's bytes this period: the fleet's count once heavy, else this instance's."""
        if visitor in self.heavy:
            return max(self.ledger.used(self.visitor_key(visitor)), self.visitors.estimate(visitor))
        return self.visitors.estimate(visitor)

    def crawlers_used(self) -> int:
        """All crawlers' bytes this period, fleet-wide (the account is served from now on)."""
        key = self.crawler_key()
        self.ledger.serve(key)
        return self.ledger.used(key)


class Visit:
    """One request's visitor and crawler accounting (and its tenant's pacer's count), fed by
    its meter's charges."""

    __slots__ = ("book", "cap", "crawler", "pacer", "period", "tenant", "visitor")

    def __init__(
        self,
        book: ShareBook,
        tenant: TenantConfig,
        visitor: str | None,
        crawler: bool,
        cap: int,
        period: str,
    ) -> None:
        self.book = book
        self.tenant = tenant
        self.visitor = visitor  # None: the tenant does not count visitors
        self.crawler = crawler
        self.cap = cap
        self.period = period  # the request's period when it began
        self.pacer = None if tenant.pacing is None else book.pacer(tenant.name)

    def visitor_used(self) -> int | None:
        """The visitor's bytes in the request's period (None: visitors are not counted)."""
        if self.visitor is None:
            return None
        return self.book.get(self.tenant, self.period, self.cap).visitor_used(self.visitor)

    def crawlers_used(self) -> int | None:
        """All crawlers' bytes in the request's period (None: not a crawler's request)."""
        if not self.crawler:
            return None
        return self.book.get(self.tenant, self.period, self.cap).crawlers_used()

    def charge(self, period: str, n: int) -> None:
        """Count ``n`` bytes charged to the tenant in ``period`` to this visitor, crawler."""
        if self.visitor is not None or self.crawler:
            self.book.get(self.tenant, period, self.cap).charge(self.visitor, self.crawler, n)
        if self.pacer is not None:
            self.pacer.count(n)


def counts_visits(tenant: TenantConfig) -> bool:
    """Whether the tenant counts visitors, crawlers or paced bytes (a :class:`Visit` each)."""
    return (
        tenant.client_share is not None or tenant.crawlers is not None or tenant.pacing is not None
    )


def visit_of(
    book: ShareBook,
    tenant: TenantConfig,
    *,
    agent: str | None,
    client: str,
    cap: int,
    period: str,
) -> Visit | None:
    """One request's accounting below its tenant's, or None when there is nothing to count:
    its visitor (``client_share``), whether it is a crawler's (``crawlers``), the pacer."""
    crawlers = tenant.crawlers
    crawler = crawlers is not None and is_crawler(crawlers, agent, client)
    visitor = visitor_of(client) if tenant.client_share is not None and client else None
    if visitor is None and not crawler and tenant.pacing is None:
        return None
    return Visit(book, tenant, visitor, crawler, cap, period)


class ShareBook:
    """Every tenant's :class:`Shares` for its current period, made on first use.

    Bounded by the tenants that saw traffic with ``client_share`` or ``crawlers`` set;
    :meth:`forget` drops those of past periods (the flusher's hourly pass).
    """

    __slots__ = ("book", "ledger", "pacers")

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.book: dict[str, Shares] = {}
        self.pacers: dict[str, Pacer] = {}  # per tenant with ``pacing`` that saw traffic

    def pacer(self, name: str) -> Pacer:
        """The tenant's pacer, made on first use (it outlives periods and reloads)."""
        pacer = self.pacers.get(name)
        if pacer is None:
            pacer = self.pacers[name] = Pacer()
        return pacer

    def get(self, tenant: TenantConfig, period: str, cap: int) -> Shares:
        """The tenant's shares for ``period``; a request that began in the period before
        gets the current one's (never the old one's again: its counts would be lost)."""
        shares = self.book.get(tenant.name)
        if shares is None or shares.period < period:
            shares = self.book[tenant.name] = Shares(self.ledger, tenant, period, cap)
        return shares

    def peek(self, name: str) -> Shares | None:
        return self.book.get(name)

    def forget(self, current: Callable[[str], str | None]) -> None:
        """Drop the shares whose period is not their tenant's current one (``current``), and
        the pacers of tenants no longer configured (None)."""
        self.book = {n: s for n, s in self.book.items() if current(n) == s.period}
        self.pacers = {n: p for n, p in self.pacers.items() if p.active or current(n) is not None}
