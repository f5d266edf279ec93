"""The flusher: the one background task that syncs the ledger with the store.

Invariants:

* It is the only code that writes request counts to the store (an operator's reset and
  grant go through :class:`~governor.accounts.runtime.Runtime`), and it is owned: started by
  :meth:`Flusher.run` (a task of the instance's :class:`~governor.tasks.TaskGroup`),
  stopped by :meth:`Flusher.stop`, after which it flushes one last time and spools to
  disk whatever the store would not take. The spool file is this process's alone from
  :meth:`Flusher.claim_spool` (or the start) until :meth:`Flusher.run` returns (see
  :mod:`governor.accounts.spool`).
* Requests never wait on it: a store that is down or slow costs one ``store_timeout``
  per interval and nothing else; counts wait in the ledger and go out with the first
  flush that works, and enforcement continues on the last known totals plus local counts.
* What a flush learns (totals, grants, whether the store answered) is written into the
  :class:`~governor.accounts.runtime.Runtime` here and nowhere else.
* A flush costs what traffic costs: it sends the keys with pending bytes and reads back
  the keys served here in their current period (:meth:`Ledger.served
  <governor.core.ledger.Ledger.served>`), never every configured tenant; a served key
  whose period is over is dropped as the flush passes it. Once, after the first flush
  that works, every tenant's current total and grant are read, in slices of
  :data:`LEARN_SLICE` (so a restart resumes the day: a tenant at its cap stays
  blocked); totals of past periods are forgotten with the hourly prune. Listeners hear
  which tenants' totals, grants or periods changed.
* When counts stop reaching the store, it says so once (a log line, and
  ``Runtime.unflushed_since`` for ``/readyz`` and the metrics), and once more when they
  reach it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from pathlib import Path
from typing import Final

from governor.accounts import spool
from governor.accounts.runtime import Runtime
from governor.config import Config
from governor.core.ledger import Key
from governor.core.shares import period_of
from governor.errors import GovernorError, StoreError
from governor.store.base import Store

log: Final = logging.getLogger("governor.accounts")

PRUNE_EVERY: Final = 3600.0
LEARN_SLICE = 10_000  # keys per read while learning every tenant's total after the start
NUDGE_GAP: Final = 0.1  # nudged flushes are at least this share of flush_interval apart


class Flusher:
    """Flushes the ledger every ``flush_interval`` (sooner when nudged); spools at stop."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        spool_path: Path | None = None,
        spool_orphans: Callable[[], Iterable[Path]] = list,
    ) -> None:
        self.runtime = runtime
        self.spool = (
            None
            if spool_path is None
            else spool.Spool(
                spool_path, where=f"{runtime.snapshot.config.path}: ", orphans=spool_orphans
            )
        )
        self._spooled: set[str] = set()  # flush ids of the batches the spool file holds
        self._stopping = False
        self._wake = asyncio.Event()  # set by stop(), by nudge() and by a new flush_interval
        self._retimed = False  # a reload changed flush_interval while the flusher waited
        self._interval = runtime.snapshot.config.flush_interval
        self._flush_lock = asyncio.Lock()
        self._last_prune = 0.0
        # Every tenant's current key, until its total and grant were read once (a slice at
        # a time); None until the first flush that works.
        self._unlearned: list[Key] | None = None
        # Called after every flush attempt, in the flusher (metrics, warnings), with the
        # tenants whose total, grant or period changed in it; must not block.
        self.listeners: list[Callable[[Collection[str]], None]] = []
        # Called with the store after each flush that reached it (the top consumers).
        self.writers: list[Callable[[Store], Awaitable[None]]] = []
        runtime.on_nudge = self.nudge
        runtime.flush_now = self.flush

    def reconfigure(self, config: Config) -> None:
        """A reload's fan-out: a new ``flush_interval`` counts from now, not from the last wait."""
        if config.flush_interval != self._interval:
            self._interval = config.flush_interval
            self._retimed = True
            self._wake.set()

    def claim_spool(self) -> None:
        """Make the spool file this process's (:class:`~governor.accounts.spool.SpoolBusy`)."""
        if self.spool is not None:
            self.spool.claim()

    def release_spool(self) -> None:
        """Let the spool file go (a start that failed; :meth:`run` does it at its end)."""
        if self.spool is not None:
            self.spool.release()

    async def start(self) -> None:
        """Take back spooled counts, then learn today's totals, so a restart resumes the day."""
        ledger = self.runtime.ledger
        if self.spool is not None:
            batches = self.spool.load()
            if batches:
                ledger.carry(batches)
                self._spooled = {b.flush_id for b in batches}
                log.warning(
                    "replaying %d spooled bytes (%d batches) from %s",
                    ledger.pending_bytes(),
                    len(batches),
                    self.spool.path,
                )
        await self.flush()
        for _ in range(len(self._spooled)):  # one spooled batch per flush, while it works
            if not self._spooled or not self.runtime.store_ok:
                break
            await self.flush()
        if self.runtime.store_ok:
            # The whole day before serving (a tenant at its cap stays blocked), in slices.
            # Bounded: each round learns a slice or fails, and a failure stops the loop.
            while self._unlearned and await self._learn_slice(set()):
                pass

    async def flush(self) -> None:
        """Send pending counts to the store and learn the totals of the keys served here."""
        rt = self.runtime
        changed: set[str] = set()
        async with self._flush_lock:
            started = time.monotonic()
            now = rt.clock()
            ledger = rt.ledger
            batch = ledger.take(now)
            read, stale = self._served_now(now)
            ledger.unserve(stale)
            changed.update(name for name, _ in stale)
            changed.update(rt.touched)  # reset or granted by an operator since the last flush
            rt.touched.clear()
            try:
                if batch is None and not read:
                    await rt.store.ping()  # idle: still learn whether the store is there
                    totals, grants = {}, {}
                else:
                    totals = await rt.store.flush(batch, read)
                    grants = await rt.store.grants([k for k in read if "#" not in k[1]])
            except StoreError as exc:
                if batch is not None:
                    ledger.fail(batch)
                rt.store_errors += 1
                if rt.store_ok:
                    log.error("store flush failed, counts kept in memory: %s", exc)
                rt.store_ok = False
                if rt.unflushed_since is None:
                    rt.unflushed_since = now
                    log.error(
                        "counts are not reaching the store since %s: %d bytes wait in memory",
                        _when(now),
                        ledger.pending_bytes(),
                    )
                rt.last_flush_seconds = time.monotonic() - started
                self._tell_listeners(changed)
                return
            changed.update(
                k[0] for k, n in totals.items() if (ledger.known(k) or 0) != n and "#" not in k[1]
            )
            changed.update(k[0] for k, n in grants.items() if rt.grants.get(k, 0) != n)
            if batch is not None:
                ledger.commit(batch, totals)
            else:
                ledger.seed(totals)
            rt.grants.update(grants)  # in place, as much as was read (readers only .get())
            for key in stale:
                rt.grants.pop(key, None)
            if not rt.store_ok:
                log.warning("store flush succeeded again")
            rt.store_ok = True
            if rt.unflushed_since is not None:
                log.warning(
                    "counts reach the store again, after %.1f s (since %s)",
                    max(now - rt.unflushed_since, 0.0),
                    _when(rt.unflushed_since),
                )
                rt.unflushed_since = None
            if batch is not None and batch.flush_id in self._spooled:
                self._settle(batch.flush_id)
            rt.last_flush_seconds = time.monotonic() - started
            if self._unlearned is None:
                self._unlearned = rt.snapshot.current_keys(now)  # once
            if self._unlearned:  # left by a failure at the start: a slice per flush
                await self._learn_slice(set(read), changed)
        # After the counts and before the listeners (a warning event reads the top lists).
        for write in self.writers:
            try:
                await write(rt.store)
            except Exception:  # a writer's bug must not stop the counting
                log.exception("a flush writer failed")
        self._tell_listeners(changed)
        await self._maybe_prune()

    async def _learn_slice(self, done: set[Key], changed: set[str] | None = None) -> bool:
        """Read the current total and grant of :data:`LEARN_SLICE` more tenants; False on failure.

        After the start, every tenant's total is read once, so a restart resumes the day
        (a tenant at its cap stays blocked) without serving every tenant from then on.
        Not served, these are not read again. In slices, so that no one read is as large
        as the config; not part of a flush's time. ``changed`` gets the tenants whose
        total or grant this taught.
        """
        rt = self.runtime
        unlearned = self._unlearned or []
        keys = [key for key in unlearned[-LEARN_SLICE:] if key not in done]
        try:
            totals = await rt.store.totals(keys)
            grants = await rt.store.grants(keys)
        except StoreError as exc:
            log.warning("reading every tenant's total failed, tried again next flush: %s", exc)
            return False
        del unlearned[-LEARN_SLICE:]
        learned = {key[0] for key, n in totals.items() if n and rt.ledger.learn(key, n)}
        for key, n in grants.items():
            if n:
                rt.grants[key] = n
                learned.add(key[0])
        if changed is not None:
            changed.update(learned)
        else:
            self._tell_listeners(learned)
        return True

    def _forget_past_periods(self, now: float) -> None:
        """Drop known totals and grants of periods that are over (hourly: one pass over them)."""
        rt = self.runtime
        tenants = rt.snapshot.tenants
        periods: dict[str, str | None] = {}

        def current(key: Key) -> bool:
            name = key[0]
            if name not in periods:
                tenant = tenants.get(name)
                periods[name] = None if tenant is None else tenant.periods.current(now).key
            return periods[name] == period_of(key[1])

        def period(name: str) -> str | None:
            tenant = tenants.get(name)
            return None if tenant is None else tenant.periods.current(now).key

        rt.ledger.forget(current)
        rt.shares.forget(period)
        rt.grants = {key: n for key, n in rt.grants.items() if current(key)}

    def _served_now(self, now: float) -> tuple[list[Key], list[Key]]:
        """The served keys still in their tenant's current period, and those that are not.

        Costs one period lookup per served key: what traffic touched, not the config.
        """
        tenants = self.runtime.snapshot.tenants
        periods: dict[str, str | None] = {}
        read: list[Key] = []
        stale: list[Key] = []
        for key in self.runtime.ledger.served():
            name = key[0]
            if name not in periods:
                tenant = tenants.get(name)
                periods[name] = None if tenant is None else tenant.periods.current(now).key
            (read if periods[name] == period_of(key[1]) else stale).append(key)
        return read, stale

    def _settle(self, flush_id: str) -> None:
        """A spooled batch is in the store: take it out of the file."""
        self._spooled.discard(flush_id)
        if self.spool is None:
            return
        try:
            self.spool.settle(flush_id)
        except OSError as exc:  # it stays in the file; replayed, the store ignores it
            log.error("the spool %s could not be updated: %s", self.spool.path, exc)

    def _tell_listeners(self, changed: Collection[str]) -> None:
        for listener in self.listeners:
            try:
                listener(changed)
            except Exception:  # a listener's bug must not stop the counting
                log.exception("a flush listener failed")

    async def _maybe_prune(self) -> None:
        now = self.runtime.clock()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        self._forget_past_periods(now)
        days = self.runtime.snapshot.config.history_days
        cutoff = dt.datetime.fromtimestamp(now, dt.UTC).date() - dt.timedelta(days=days + 1)
        try:
            await self.runtime.store.prune(cutoff.isoformat())
        except StoreError as exc:
            log.error("pruning old periods failed: %s", exc)

    async def run(self) -> None:
        """Flush every ``flush_interval`` until :meth:`stop`, once more, then spool what is left."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._stopping:
                interval = self._interval
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
            # Only a flush begun after stop() (the drain is over) takes every count; one
            # stop() interrupts took its batch before the last requests' charges.
            last = self._stopping
            try:
                await self.flush()
            except Exception:  # a bug here must not end the counting: log it, go on
                log.exception("flush failed unexpectedly; the counts stay in memory")
            if last or (self._stopping and not self.runtime.store_ok):  # a failing store: spool now
                break
        self._spool_leftovers()
        self.release_spool()

    def _spool_leftovers(self) -> None:
        ledger = self.runtime.ledger
        if self.spool is None:
            lost = ledger.pending_bytes()
            if lost:
                log.error(
                    "the store did not take the last %d bytes of counts and no spool is "
                    "configured (the spool key): they are lost",
                    lost,
                )
            return
        batches = ledger.seal(self.runtime.clock())
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
                ledger.pending_bytes(),
            )
            return
        self._spooled.update(b.flush_id for b in batches)
        log.warning(
            "the store is unreachable: %d bytes of counts spooled to %s for the next start",
            ledger.pending_bytes(),
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
        """Ask :meth:`run` to make its final flush and return."""
        self._stopping = True
        self._wake.set()


def _when(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="seconds")
