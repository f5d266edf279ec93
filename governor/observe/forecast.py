"""Each active tenant's exhaustion forecast, kept up to date at each flush.

A flush listener (:meth:`Forecasts.flushed`): the tenants whose total the flush changed,
and those with a forecast before their reset, are observed (:mod:`governor.core.forecast`):
their rate is updated and the instant their allowance runs out is projected. The gauge
(:mod:`governor.observe.metrics`), the status page and the ``forecast`` warning event read
:meth:`Forecasts.of`. The previous day's hourly profile of a tenant is read from the
store's history buckets once per period, by an owned task, for the tenants forecast only.
Work follows traffic: an idle tenant costs nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from collections.abc import Callable, Collection
from typing import Final

from governor.accounts.runtime import Runtime, TenantUsage
from governor.core.forecast import RateEstimate, exhaustion
from governor.errors import StoreError
from governor.tasks import TaskGroup

log: Final = logging.getLogger("governor.forecast")

QUEUE_SIZE: Final = 1000  # tenants waiting for their history; beyond it, asked again next flush
STOP_WAIT: Final = 5.0  # seconds stop() waits for a history read in progress


def forecast_line(at: float, resets_at: dt.datetime) -> str:
    """``at this rate it runs out at 17:04 KST, 6 h 56 min before the reset``."""
    when = dt.datetime.fromtimestamp(at, resets_at.tzinfo)
    ahead = max(0, int(resets_at.timestamp() - at)) // 60
    hours, minutes = divmod(ahead, 60)
    before = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"at this rate it runs out at {when:%H:%M} {when.tzname()}, {before} before the reset"


class Forecasts:
    """Per active tenant: its rate, its previous day's profile, and its forecast."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._rates: dict[str, RateEstimate] = {}
        self._at: dict[str, tuple[str, float | None]] = {}  # name -> (period, forecast)
        self._history: dict[str, tuple[str, list[float] | None]] = {}  # name -> (period, hourly)
        self._queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._queued: set[str] = set()
        self._told: dict[str, str] = {}  # name -> the period its forecast event was raised in
        # Called once per period when a tenant's forecast first falls before its reset.
        self.on_forecast: Callable[[TenantUsage, float], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.observed: list[str] = []  # the tenants the last flush observed
        self._stopping = False

    def of(self, name: str, period: str) -> float | None:
        """The tenant's forecast in ``period`` (Unix time), or None: not before the reset."""
        found = self._at.get(name)
        return found[1] if found is not None and found[0] == period else None

    def forecast_known(self, name: str, period: str) -> bool:
        """Whether ``name`` was forecast in ``period`` (a None forecast then means: it lasts)."""
        found = self._at.get(name)
        return found is not None and found[0] == period

    def running_out(self) -> list[str]:
        """The tenants forecast to run out before their reset (re-observed at each flush)."""
        return [name for name, (_, at) in self._at.items() if at is not None]

    def flushed(self, changed: Collection[str]) -> None:
        """Observe the tenants the flush changed and those forecast to run out."""
        runtime = self.runtime
        tenants = runtime.snapshot.tenants
        now = runtime.clock()
        names = list(dict.fromkeys(itertools.chain(changed, self.running_out())))
        self.observed = names  # what the metrics bring up to date after this flush
        for name in names:
            tenant = tenants.get(name)
            usage = runtime.usage(name)
            if tenant is None or usage is None:
                self._forget(name)
                continue
            estimate = self._rates.get(name)
            if estimate is None:
                estimate = self._rates[name] = RateEstimate()
            rate = estimate.observe(
                now, usage.used_bytes, usage.period, tenant.config.forecast_window
            )
            hourly = self._hourly(name, usage.period)
            at = None
            if not usage.blocked:
                at = exhaustion(
                    now=now,
                    used=usage.used_bytes,
                    cap=usage.cap_bytes,
                    end=usage.resets_at.timestamp(),
                    rate=rate,
                    hourly=hourly,
                    hour_of=dt.datetime.fromtimestamp(now, tenant.config.timezone).hour,
                )
            self._at[name] = (usage.period, at)
            if at is not None and self._told.get(name) != usage.period:
                self._told[name] = usage.period
                if self.on_forecast is not None:
                    self.on_forecast(usage, at)

    def _hourly(self, name: str, period: str) -> list[float] | None:
        """The previous day's bytes per second by local hour, once read (else queue it)."""
        found = self._history.get(name)
        if found is not None and found[0] == period:
            return found[1]
        if name not in self._queued and not self._queue.full():
            self._queued.add(name)
            self._queue.put_nowait(name)
        return None

    def _forget(self, name: str) -> None:
        for table in (self._rates, self._at, self._history, self._told):
            table.pop(name, None)

    def start(self, tasks: TaskGroup) -> None:
        """Start the task (in ``tasks``) that reads previous days' profiles; see :meth:`stop`."""
        if self._task is None:
            self._task = tasks.spawn(self._run(), name="governor-forecast-history")

    async def stop(self) -> None:
        """Stop the task: at once when it waits, after the read in progress otherwise.

        Not by cancelling it alone: a store client that swallows a cancellation mid-read
        (redis-py has) would leave it waiting on the queue for good; an empty name wakes
        it, and it checks :attr:`_stopping` after every read.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait("")
        done, _ = await asyncio.wait([task], timeout=STOP_WAIT)
        if not done:
            task.cancel()
            await asyncio.wait([task], timeout=STOP_WAIT)

    async def _run(self) -> None:
        while not self._stopping:
            name = await self._queue.get()
            if not name:
                return
            self._queued.discard(name)
            try:
                await self._read_history(name)
            except StoreError as exc:
                log.debug("history of %s not read (asked again next flush): %s", name, exc)
            except Exception:  # a bug here must not stop the forecasts
                log.exception("reading the history of %s failed", name)

    async def _read_history(self, name: str) -> None:
        runtime = self.runtime
        tenant = runtime.snapshot.tenants.get(name)
        if tenant is None:
            return
        period = tenant.periods.current(runtime.clock())
        previous = tenant.periods.current(period.start - 1)
        buckets = await runtime.store.buckets(name, previous.key)
        hourly: list[float] | None = None
        if buckets:
            hourly = [0.0] * 24
            zone = tenant.config.timezone
            for start, nbytes in buckets.items():
                hourly[dt.datetime.fromtimestamp(start, zone).hour] += nbytes / 3600.0
        self._history[name] = (period.key, hourly)
