"""A day of traffic replayed through the real decision code, on a virtual clock, no sockets.

Each hit meets what a request meets in the proxy: :func:`governor.core.policy.decide`
(the cap, the visitor's share, the crawlers'), then :func:`~governor.core.policy.refusal`
on its response (large files first, admission), with the real :class:`Meter`, ledger,
visitor table (:mod:`governor.core.shares`) and pacer (:mod:`governor.core.pacing`).
What the proxy does over time, the replay does in ticks of :data:`TICK` seconds: a paced
response is sent at its pacer's rate, tick by tick, and charged as it goes.

What it simplifies: a response that is not paced is charged at once, at its start (a
page takes milliseconds; a large unpaced download is charged when it starts rather than
as it streams); there is no store (one instance, so the fleet is this instance); a
response of undeclared length is taken as declared.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from governor.config import CrawlerConfig, TenantConfig
from governor.core.ledger import Ledger
from governor.core.meter import Meter
from governor.core.pacing import large_size
from governor.core.periods import PeriodTracker
from governor.core.policy import decide, left_for, refusal
from governor.core.shares import ShareBook, is_crawler, visit_of, visitor_of
from governor.simulation.traffic import Hit

TICK: Final = 10.0  # seconds between the steps of paced responses
CATEGORIES: Final = ("pages", "large files", "crawlers", "heaviest visitor")


@dataclass(slots=True)
class Category:
    """What one kind of traffic asked for and got."""

    name: str
    requests: int = 0
    asked: int = 0  # bytes the responses would have taken
    served: int = 0  # bytes charged
    refused: int = 0  # requests refused (a notice instead)
    cut: int = 0  # responses cut at the cap
    paced: int = 0  # responses paced
    reasons: Counter[str] = field(default_factory=Counter)
    minutes: set[int] = field(default_factory=set)  # Unix minutes with a refusal or a cut

    def refuse(self, reason: str, at: float) -> None:
        self.refused += 1
        self.reasons[reason] += 1
        self.minutes.add(int(at // 60))


@dataclass(slots=True)
class Run:
    """One replay: the tenant as configured (or with the features off)."""

    label: str
    tenant: TenantConfig
    cap: int = 0
    served: int = 0
    capped_at: float | None = None  # when the cap was first reached
    categories: dict[str, Category] = field(
        default_factory=lambda: {name: Category(name) for name in CATEGORIES}
    )


def without_features(tenant: TenantConfig) -> TenantConfig:
    """The tenant with only its cap: no large-first, pacing, shares or admission."""
    return dataclasses.replace(
        tenant, admission=False, large=None, pacing=None, client_share=None, crawlers=None
    )


@dataclass(slots=True)
class _Transfer:
    """A paced response on its way: a meter charging it, and what is left of it."""

    meter: Meter
    left: int
    category: Category
    cut: bool


class _Replay:
    def __init__(self, run: Run, kinds: Sequence[str]) -> None:
        tenant = run.tenant
        self.run = run
        self.tenant = tenant
        self.kinds = kinds
        self.ledger = Ledger()
        self.book = ShareBook(self.ledger)
        self.periods = PeriodTracker(
            tenant.timezone, tenant.reset_at, tenant.period, tenant.week_starts
        )
        self.now = 0.0
        self.transfers: list[_Transfer] = []
        self.large = large_size(tenant)

    def clock(self) -> float:
        return self.now

    def meter(self) -> Meter:
        return Meter(ledger=self.ledger, tenant=self.tenant, periods=self.periods, clock=self.clock)

    def play(self, hits: Sequence[Hit]) -> None:
        next_tick = hits[0].time + TICK if hits else 0.0
        for hit, kind in zip(hits, self.kinds, strict=True):
            while self.transfers and next_tick <= hit.time:
                self.advance(next_tick)
                next_tick += TICK
            if not self.transfers:
                next_tick = hit.time + TICK
            self.now = hit.time
            self.hit(hit, self.run.categories[kind])
        while self.transfers:  # ends: every tick sends each at least floor x TICK bytes
            self.advance(next_tick)
            next_tick += TICK

    def hit(self, hit: Hit, category: Category) -> None:
        tenant = self.tenant
        category.requests += 1
        category.asked += hit.size
        meter = self.meter()
        used, cap = meter.used(), meter.cap
        self.run.cap = max(self.run.cap, cap)
        visit = visit_of(
            self.book, tenant, agent=hit.agent, client=hit.client, cap=cap, period=meter.key()[1]
        )
        meter.visit = visit
        crawler = visit is not None and visit.crawler
        visitor_used = None if visit is None else visit.visitor_used()
        crawlers_used = None if visit is None else visit.crawlers_used()
        decision = decide(
            tenant,
            used=used,
            cap=cap,
            target=hit.path,
            client=hit.client,
            visitor_used=visitor_used or 0,
            crawler=crawler,
            crawlers_used=crawlers_used or 0,
        )
        if decision.verdict == "block":
            category.refuse(decision.reason or "cap", hit.time)
            return
        self.charge(meter, category, ingress=hit.request)
        if decision.verdict == "allow":
            left = None
            if visit is not None:
                left = left_for(
                    tenant,
                    used=used,
                    cap=cap,
                    visitor_used=visitor_used,
                    crawlers_used=crawlers_used,
                )
            why = refusal(tenant, declared=hit.size, used=used, cap=cap, left=left)
            if why is not None:
                category.refuse(why, hit.time)
                return
            pacer = None if visit is None else visit.pacer
            if pacer is not None and tenant.pacing is not None and hit.size > self.large:
                end = meter.period().end
                if pacer.rate(tenant.pacing, now=self.now, used=used, cap=cap, end=end):
                    pacer.active += 1
                    category.paced += 1
                    self.transfers.append(_Transfer(meter, hit.size, category, decision.cut))
                    return
        self.send(meter, hit.size, category, cut=decision.cut)

    def send(self, meter: Meter, n: int, category: Category, *, cut: bool) -> bool:
        """Charge ``n`` response bytes (what fits under the cap, under a cut); False: cut."""
        if cut:
            room = max(meter.remaining(), 0)
            if n > room:
                self.charge(meter, category, egress=room)
                category.cut += 1
                category.minutes.add(int(self.now // 60))
                return False
        self.charge(meter, category, egress=n)
        return True

    def charge(
        self, meter: Meter, category: Category, *, ingress: int = 0, egress: int = 0
    ) -> None:
        """Charge through the meter (by the tenant's ``count``); count what it charged."""
        key = meter.key()
        before = self.ledger.used(key)
        meter.charge(ingress, egress)
        charged = self.ledger.used(key) - before
        category.served += charged
        self.run.served += charged
        if self.run.capped_at is None and before + charged >= meter.cap:
            self.run.capped_at = self.now

    def advance(self, at: float) -> None:
        """One tick of every paced response."""
        self.now = at
        pacing = self.tenant.pacing
        assert pacing is not None
        going: list[_Transfer] = []
        for t in self.transfers:
            meter = t.meter
            visit = meter.visit
            pacer = None if visit is None else visit.pacer
            assert pacer is not None
            end = meter.period().end
            rate = pacer.rate(pacing, now=at, used=meter.used(), cap=meter.cap, end=end)
            n = t.left if rate is None else min(t.left, int(rate * TICK) or 1)
            sent = self.send(meter, n, t.category, cut=t.cut)
            pacer.paced += n
            t.left -= n
            if t.left > 0 and sent:
                going.append(t)
            else:
                pacer.active -= 1
        self.transfers = going


def kinds_of(tenant: TenantConfig, hits: Sequence[Hit]) -> list[str]:
    """Each hit's category, the same for every run: a crawler's (by the tenant's ``crawlers``
    or the built-in agents), the heaviest visitor's (the one asking the most bytes, not a
    crawler), a large file's (above ``large.size``, else 1 MiB), or a page."""
    crawlers = tenant.crawlers or CrawlerConfig(None)
    large = large_size(tenant)
    crawling = [is_crawler(crawlers, hit.agent, hit.client) for hit in hits]
    asked: Counter[str] = Counter()
    for hit, crawler in zip(hits, crawling, strict=True):
        if not crawler:
            asked[visitor_of(hit.client)] += hit.size
    heaviest = asked.most_common(1)[0][0] if asked else None
    kinds = []
    for hit, crawler in zip(hits, crawling, strict=True):
        if crawler:
            kinds.append("crawlers")
        elif visitor_of(hit.client) == heaviest:
            kinds.append("heaviest visitor")
        else:
            kinds.append("large files" if hit.size > large else "pages")
    return kinds


def simulate(tenant: TenantConfig, hits: Sequence[Hit]) -> tuple[Run, Run]:
    """The hits replayed as configured, and with the cap only (the features off)."""
    kinds = kinds_of(tenant, hits)
    runs = (Run("as configured", tenant), Run("cap only", without_features(tenant)))
    for run in runs:
        _Replay(run, kinds).play(hits)
    return runs
