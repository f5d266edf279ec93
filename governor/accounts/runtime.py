"""What a running governor knows: the live configuration and the byte accounts.

Invariants:

* A request reads :attr:`Runtime.snapshot` once, at its start, and keeps that
  snapshot to its end; a reload swaps in a new one atomically, so in-flight
  requests finish under the config they began with while new ones see the new.
* Counts live in one :class:`~governor.ledger.Ledger` that outlives reloads; the
  flusher is the only code that talks to the store, and it is owned: started by
  :meth:`Runtime.run_flusher`, stopped by :meth:`Runtime.stop`, which flushes
  one last time and spools to disk whatever the store would not take. The spool
  file is this process's alone from :meth:`Runtime.claim_spool` (or the start) until
  the flusher ends (see :mod:`governor.accounts.spool`).
* Requests never wait on the store: they read and add to the ledger only. A store
  that is down or slow costs the flusher one ``store_timeout`` per interval and
  nothing else; counts wait in memory and go out with the first flush that works,
  and enforcement continues on the last known totals plus local counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from governor.accounts import spool
from governor.config import Config, TenantConfig
from governor.core.ledger import Key, Ledger, is_blocked
from governor.core.periods import PeriodTracker
from governor.core.tenants import TenantIndex
from governor.errors import GovernorError, StoreError
from governor.observe.events import RequestSink
from governor.store.base import Store

log = logging.getLogger("governor.accounts")

Clock = Callable[[], float]

PRUNE_EVERY = 3600.0
NEAR_CAP = 0.9  # from this share of its cap on, a tenant's requests nudge the flusher
NUDGE_GAP = 0.1  # nudged flushes are at least this share of flush_interval apart


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
    blocked: bool


@dataclass(frozen=True, slots=True)
class Site:
    """A tenant at run time: its config and its period tracker."""

    config: TenantConfig
    periods: PeriodTracker

    @property
    def hosts(self) -> tuple[str, ...]:
        return self.config.hosts


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One loaded configuration, ready to serve requests."""

    config: Config
    index: TenantIndex[Site]
    sites: dict[str, Site]

    @classmethod
    def build(cls, config: Config) -> Snapshot:
        """Index a validated config for request handling."""
        sites = {
            t.name: Site(config=t, periods=PeriodTracker(t.timezone, t.reset_at))
            for t in config.tenants
        }
        return cls(config=config, index=TenantIndex(sites.values()), sites=sites)

    def current_keys(self, now: float) -> list[Key]:
        """The ledger key of every tenant's current period."""
        return [(name, site.periods.current(now).key) for name, site in self.sites.items()]


class Runtime:
    """The live snapshot, the ledger, and the owned flusher that syncs it with the store."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        clock: Clock,
        spool_path: Path | None = None,
        spool_orphans: Callable[[], Iterable[Path]] = list,
    ) -> None:
        self.snapshot = Snapshot.build(config)
        self.ledger = Ledger()
        self.store = store
        self.clock = clock
        self.spool_path = spool_path
        self.spool = (
            None
            if spool_path is None
            else spool.Spool(spool_path, where=f"{config.path}: ", orphans=spool_orphans)
        )
        self.store_ok = True
        self.store_errors = 0
        self._spooled: set[str] = set()  # flush ids of the batches the spool file holds
        self._stopping = False
        self._wake = asyncio.Event()  # set by stop(), by nudge() and by a new flush_interval
        self._retimed = False  # a reload changed flush_interval while the flusher waited
        self._flush_lock = asyncio.Lock()
        self._last_prune = 0.0
        self.grants: dict[Key, int] = {}  # extra allowance per current period, from the store
        self.last_flush_seconds = 0.0
        # Told about every answered request (metrics, the access log).
        self.request_sinks: list[RequestSink] = []
        # Called after every flush attempt, in the flusher (metrics, warnings); must not block.
        self.flush_listeners: list[Callable[[], None]] = []

    def reconfigure(self, config: Config) -> None:
        """Serve new requests under ``config``; counts are kept.

        The snapshot carries tenants, ``trusted_proxies``, ``flush_interval``,
        ``history_days`` (pruning), ``webhook_url``, ``admin_token`` and
        ``timeouts.upstream_response`` to everything that reads them per request or per
        flush; the store takes ``store_timeout`` and ``history_days`` (key expiry).
        """
        retimed = config.flush_interval != self.snapshot.config.flush_interval
        self.snapshot = Snapshot.build(config)
        self.store.retune(timeout=config.store_timeout, history_days=config.history_days)
        if retimed:  # the flusher waits out the new interval from now, not the old one
            self._retimed = True
            self._wake.set()

    def claim_spool(self) -> None:
        """Make the spool file this process's (:class:`~governor.spool.SpoolBusy` if taken)."""
        if self.spool is not None:
            self.spool.claim()

    def release_spool(self) -> None:
        """Let the spool file go (a start that failed; the flusher does it at the end)."""
        if self.spool is not None:
            self.spool.release()

    async def start(self) -> None:
        """Take back spooled counts, then learn today's totals, so a restart resumes the day."""
        if self.spool is not None:
            batches = self.spool.load()
            if batches:
                self.ledger.carry(batches)
                self._spooled = {b.flush_id for b in batches}
                log.warning(
                    "replaying %d spooled bytes (%d batches) from %s",
                    self.ledger.pending_bytes(),
                    len(batches),
                    self.spool.path,
                )
        await self.flush()
        for _ in range(len(self._spooled)):  # one spooled batch per flush, while it works
            if not self._spooled or not self.store_ok:
                break
            await self.flush()

    async def flush(self) -> None:
        """Send pending counts to the store and learn every current total back."""
        async with self._flush_lock:
            started = time.monotonic()
            snap = self.snapshot
            now = self.clock()
            read = snap.current_keys(now)
            batch = self.ledger.take(now)
            try:
                totals = await self.store.flush(batch, read)
                self.grants = await self.store.grants(read)
            except StoreError as exc:
                if batch is not None:
                    self.ledger.fail(batch)
                self.store_errors += 1
                if self.store_ok:
                    log.error("store flush failed, counts kept in memory: %s", exc)
                self.store_ok = False
                self.last_flush_seconds = time.monotonic() - started
                self._tell_listeners()
                return
            if batch is not None:
                self.ledger.commit(batch, totals)
            else:
                self.ledger.seed(totals)
            if not self.store_ok:
                log.warning("store flush succeeded again")
            self.store_ok = True
            if batch is not None and batch.flush_id in self._spooled:
                self._settle(batch.flush_id)
            current = set(read)
            self.ledger.forget(lambda key: key in current)
            self.last_flush_seconds = time.monotonic() - started
        self._tell_listeners()
        await self._maybe_prune()

    def _settle(self, flush_id: str) -> None:
        """A spooled batch is in the store: take it out of the file."""
        self._spooled.discard(flush_id)
        if self.spool is None:
            return
        try:
            self.spool.settle(flush_id)
        except OSError as exc:  # it stays in the file; replayed, the store ignores it
            log.error("the spool %s could not be updated: %s", self.spool.path, exc)

    def _tell_listeners(self) -> None:
        for listener in self.flush_listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not stop the counting
                log.exception("a flush listener failed")

    def usage(self, name: str) -> TenantUsage | None:
        """A tenant's current period as this process knows it, or None for no such tenant."""
        site = self.snapshot.sites.get(name)
        if site is None:
            return None
        now = self.clock()
        period = site.periods.current(now)
        key = (name, period.key)
        grant = self.grants.get(key, 0)
        used = self.ledger.used(key)
        cap = site.config.daily_cap + grant
        return TenantUsage(
            tenant=name,
            period=period.key,
            used_bytes=used,
            cap_bytes=cap,
            daily_cap_bytes=site.config.daily_cap,
            granted_bytes=grant,
            resets_at=period.resets_at(site.config.timezone),
            blocked=is_blocked(used, cap),
        )

    async def reset(self, name: str) -> TenantUsage | None:
        """Set a tenant's count for its current period back to zero, in the store."""
        usage = self.usage(name)
        if usage is None:
            return None
        key = (name, usage.period)
        await self.store.reset(key)
        self.ledger.seed({key: 0})
        return self.usage(name)

    async def grant(self, name: str, nbytes: int) -> TenantUsage | None:
        """Give a tenant ``nbytes`` more for its current period, in the store."""
        usage = self.usage(name)
        if usage is None:
            return None
        key = (name, usage.period)
        self.grants = {**self.grants, key: await self.store.grant(key, nbytes)}
        return self.usage(name)

    async def _maybe_prune(self) -> None:
        now = self.clock()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        days = self.snapshot.config.history_days
        cutoff = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=days + 1)
        try:
            await self.store.prune(cutoff.isoformat())
        except StoreError as exc:
            log.error("pruning old periods failed: %s", exc)

    async def run_flusher(self) -> None:
        """Flush every ``flush_interval`` until :meth:`stop`, once more, then spool what is left."""
        loop = asyncio.get_running_loop()
        while True:
            stopping = self._stopping  # seen before the flush: that flush is the last one
            if not stopping:
                interval = self.snapshot.config.flush_interval
                waited_from = loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=interval)
                self._wake.clear()
                if self._retimed and not self._stopping:
                    self._retimed = False
                    continue  # wait again, the new interval
                rest = waited_from + interval * NUDGE_GAP - loop.time()
                if rest > 0 and not self._stopping:
                    await asyncio.sleep(rest)  # nudged: early, but not in a storm
            try:
                await self.flush()
            except Exception:  # a bug here must not end the counting: log it, go on
                log.exception("flush failed unexpectedly; the counts stay in memory")
            if stopping or self._stopping:
                break
        self._spool_leftovers()
        self.release_spool()

    def _spool_leftovers(self) -> None:
        if self.spool is None:
            return
        batches = self.ledger.seal(self.clock())
        if not batches:
            return
        try:
            self.spool.save(batches)
        except (OSError, GovernorError) as exc:
            log.error(
                "the store is unreachable and the spool %s cannot be written (%s): "
                "%d bytes of counts are lost",
                self.spool.path,
                exc.strerror if isinstance(exc, OSError) and exc.strerror else exc,
                self.ledger.pending_bytes(),
            )
            return
        self._spooled.update(b.flush_id for b in batches)
        log.warning(
            "the store is unreachable: %d bytes of counts spooled to %s for the next start",
            self.ledger.pending_bytes(),
            self.spool.path,
        )

    def nudge(self) -> None:
        """Flush soon: a tenant is near its cap, so the fleet's totals matter now.

        Instances learn each other's bytes only through the store, up to two
        flush intervals late; near a cap that lag is overshoot, so nudged
        flushes come every ``flush_interval * NUDGE_GAP`` instead.
        """
        self._wake.set()

    def stop(self) -> None:
        """Ask the flusher to make its final flush and return."""
        self._stopping = True
        self._wake.set()
