"""What a running governor knows: the live configuration snapshot and the byte accounts.

Invariants:

* A request reads :attr:`Runtime.snapshot` once, at its start, and keeps that
  snapshot to its end; a reload swaps in a new one atomically, so in-flight
  requests finish under the config they began with while new ones see the new.
* Counts live in one :class:`~governor.core.ledger.Ledger` that outlives reloads.
  Requests never wait on the store: they read and add to the ledger only. The
  periodic sync with the store is :mod:`governor.accounts.flusher`'s; the operator's
  reset and grant are the only calls here that reach the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from governor.config import Config, TenantConfig
from governor.core.ledger import Key, Ledger, is_blocked
from governor.core.periods import PeriodTracker
from governor.core.shares import ShareBook
from governor.core.tenants import TenantIndex
from governor.errors import StoreError
from governor.store.base import Store

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """A tenant's current period: what the admin API, the status page and the CLI show."""

    tenant: str
    period: str
    used_bytes: int
    cap_bytes: int  # daily_cap plus today's grant
    daily_cap_bytes: int
    granted_bytes: int
    resets_at: dt.datetime
    blocked: bool  # at its cap, its visitors get the notice
    # At its cap in shadow mode (enforce: false): reported, never refused.
    would_block: bool = False
    enforced: bool = True


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant at run time: its settings (:class:`TenantConfig`) and its period tracker.

    The tracker is shared by every tenant of the same ``timezone`` and ``reset_at``
    (their periods are the same), so a tenant costs one small object more than its config.
    """

    config: TenantConfig
    periods: PeriodTracker
    days: PeriodTracker | None = None  # a weekly or monthly tenant's days (its day_guard)

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.config.hosts


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One loaded configuration, ready to serve requests."""

    config: Config
    index: TenantIndex[Tenant]
    tenants: dict[str, Tenant]

    @classmethod
    def build(cls, config: Config) -> Snapshot:
        """Index a validated config for request handling (a reload does it off the loop)."""
        trackers: dict[tuple[ZoneInfo, dt.time, str, int], PeriodTracker] = {}
        tenants: dict[str, Tenant] = {}
        for t in config.tenants:
            how = (t.timezone, t.reset_at, t.period, t.week_starts)
            periods = trackers.get(how)
            if periods is None:
                periods = trackers[how] = PeriodTracker(*how)
            days = None
            if t.day_guard is not None:
                day = (t.timezone, t.reset_at, "day", 0)
                days = trackers.get(day)
                if days is None:
                    days = trackers[day] = PeriodTracker(t.timezone, t.reset_at)
            tenants[t.name] = Tenant(config=t, periods=periods, days=days)
        return cls(config=config, index=TenantIndex(tenants.values()), tenants=tenants)

    def current_keys(self, now: float) -> list[Key]:
        """The ledger key of every tenant's current period."""
        return [(name, tenant.periods.current(now).key) for name, tenant in self.tenants.items()]


class Runtime:
    """The live snapshot, the ledger, what the last flush learned, and the operator's changes.

    ``store_ok``, ``store_errors``, ``last_flush_seconds`` and ``unflushed_since`` are
    written by the flusher only (:class:`~governor.accounts.flusher.Flusher`); ``grants``
    by the flusher and by :meth:`grant`; everything else reads them.

    ``grants`` and the ledger's known totals cover the keys served here (see
    :meth:`~governor.core.ledger.Ledger.serve`): a tenant this process has not served
    in its current period shows this process's own counts until it is served or
    asked for by name (:meth:`usage` with ``learn``), and is learned at the next flush.
    """

    def __init__(self, config: Config, *, store: Store, clock: Clock) -> None:
        self.snapshot = Snapshot.build(config)
        self.ledger = Ledger()
        self.shares = ShareBook(self.ledger)  # visitors and crawlers (client_share, crawlers)
        self.store = store
        self.clock = clock
        self.store_ok = True
        self.store_errors = 0
        # Tenants an operator reset or granted since the last flush: the flusher tells its
        # listeners they changed (the grant is already applied here, so a flush sees none).
        self.touched: set[str] = set()
        self.grants: dict[Key, int] = {}  # extra allowance per current period, from the store
        self.last_flush_seconds = 0.0
        # Unix time of the first failed flush since the last one that worked (None: all well).
        self.unflushed_since: float | None = None
        # Set by the flusher that serves this runtime; nothing to do without one.
        self.on_nudge: Callable[[], None] = _no_flusher
        # Set by the same flusher: send this instance's pending counts now (before a reset).
        self.flush_now: Callable[[], Awaitable[None]] = _nothing_to_flush

    def reconfigure(self, config: Config, snapshot: Snapshot | None = None) -> None:
        """Serve new requests under ``config``; counts are kept.

        ``snapshot``: ``config`` built already (a reload builds it off the event loop).

        The snapshot carries tenants, ``trusted_proxies``, ``flush_interval``,
        ``history_days`` (pruning), ``webhook_url``, ``admin_token`` and
        ``timeouts.upstream_response`` to everything that reads them per request or per
        flush; the store takes ``store_timeout`` and ``history_days`` (key expiry).
        """
        self.snapshot = Snapshot.build(config) if snapshot is None else snapshot
        self.store.retune(timeout=config.store_timeout, history_days=config.history_days)

    def nudge(self) -> None:
        """Ask the flusher to flush soon: a tenant is near its cap (see ``Flusher.nudge``)."""
        self.on_nudge()

    def usage(self, name: str, *, learn: bool = False) -> TenantUsage | None:
        """A tenant's current period as this process knows it, or None for no such tenant.

        With ``learn`` (one tenant asked for by name: the admin API) the period counts as
        served here, so the next flush learns the fleet's total and grant for it.
        """
        tenant = self.snapshot.tenants.get(name)
        if tenant is None:
            return None
        now = self.clock()
        period = tenant.periods.current(now)
        key = (name, period.key)
        if learn:
            self.ledger.serve(key)
        grant = self.grants.get(key, 0)
        used = self.ledger.used(key)
        cap = tenant.config.daily_cap + grant
        at_cap, enforce = is_blocked(used, cap), tenant.config.enforce
        return TenantUsage(
            tenant=name,
            period=period.key,
            used_bytes=used,
            cap_bytes=cap,
            daily_cap_bytes=tenant.config.daily_cap,
            granted_bytes=grant,
            resets_at=period.resets_at(tenant.config.timezone),
            blocked=at_cap and enforce,
            would_block=at_cap and not enforce,
            enforced=enforce,
        )

    async def would_block_since(self, usage: TenantUsage) -> dt.datetime | None:
        """When a tenant in shadow mode reached its cap this period, from the store's history
        buckets (to their 5 minutes), or None: not at its cap, or not known."""
        if not usage.would_block:
            return None
        return await cap_reached_at(
            self.store, usage.tenant, usage.period, usage.cap_bytes, usage.resets_at.tzinfo
        )

    async def lookup(self, name: str) -> TenantUsage | None:
        """:meth:`usage` for one tenant asked for by name (the admin API): learns it now.

        A tenant not served here in its current period is read from the store at once (one
        total, one grant) and served from then on, so the answer is the fleet's. A store
        that fails leaves the local view, and the next flush tries again.
        """
        tenant = self.snapshot.tenants.get(name)
        if tenant is None:
            return None
        key = (name, tenant.periods.current(self.clock()).key)
        if self.ledger.is_served(key):  # each flush reads it: what is known is fresh
            return self.usage(name)
        self.ledger.serve(key)
        try:
            total = (await self.store.totals([key])).get(key, 0)
            grant = (await self.store.grants([key])).get(key, 0)
        except StoreError:
            return self.usage(name)
        if self.ledger.learn(key, total):
            self.grants[key] = grant
        return self.usage(name)

    async def reset(self, name: str) -> TenantUsage | None:
        """Set a tenant's count for its current period back to zero, in the store."""
        usage = self.usage(name)
        if usage is None:
            return None
        key = (name, usage.period)
        self.ledger.serve(key)
        # What this instance counted before the reset goes to the store first, or it would
        # land after the reset, up to a flush_interval later, as if counted after it.
        await self.flush_now()
        await self.store.reset(key)
        self.ledger.seed({key: 0})
        self.touched.add(name)
        return self.usage(name)

    async def grant(self, name: str, nbytes: int) -> TenantUsage | None:
        """Give a tenant ``nbytes`` more for its current period, in the store."""
        usage = self.usage(name)
        if usage is None:
            return None
        key = (name, usage.period)
        self.ledger.serve(key)
        self.grants[key] = await self.store.grant(key, nbytes)
        self.touched.add(name)
        return self.usage(name)


async def cap_reached_at(
    store: Store, tenant: str, period: str, cap: int, zone: dt.tzinfo | None
) -> dt.datetime | None:
    """The start of the history bucket in which ``tenant``'s period reached ``cap`` (or None:
    not in the buckets, or the store failed)."""
    try:
        buckets = await store.buckets(tenant, period)
    except StoreError:
        return None
    total = 0
    for start in sorted(buckets):
        total += buckets[start]
        if total >= cap:
            return dt.datetime.fromtimestamp(start, zone)
    return None


def _no_flusher() -> None:
    pass


async def _nothing_to_flush() -> None:
    pass
