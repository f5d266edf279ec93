"""Delivering warnings: a log line on ``governor.warnings`` and a webhook POST per event.

:mod:`governor.core.alerts` decides which events happened; this module queues them,
claims each in the store (so the fleet sends it once), logs it and POSTs it, with
retries, in one owned task. Delivery is at most once. Design: docs/alerts.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import json
import logging
from collections import Counter
from collections.abc import Collection
from typing import Any, Final

import aiohttp

from governor.accounts.runtime import Runtime, Snapshot, TenantUsage
from governor.accounts.top import top_line
from governor.core.alerts import Alert, Alerts
from governor.errors import StoreError
from governor.observe.forecast import forecast_line
from governor.tasks import TaskGroup

log: Final = logging.getLogger("governor.warnings")

# Events waiting for delivery; beyond it new ones are dropped (and counted).
QUEUE_SIZE: Final = 1000
ATTEMPTS: Final = 4  # tries per webhook POST (and per store claim)
BACKOFF: Final = 0.5  # seconds before the 2nd try; doubled for each further try
BACKOFF_MAX: Final = 8.0
POST_TIMEOUT: Final = 5.0  # one webhook POST, connecting included
CONNECT_TIMEOUT: Final = 2.0
STOP_DEADLINE: Final = 5.0  # at stop, queued events get this long to go out
_RETRY_STATUSES: Final = frozenset({408, 425, 429})


WarningEvent = Alert[TenantUsage]
"""One event for one tenant's period, as :class:`~governor.core.alerts.Alerts` found it."""

Top = tuple[str, dict[str, Any]]
"""What used a tenant's allowance: a line ("facebookexternalhit 41%, ...") and the lists."""


def payload(event: WarningEvent, top: Top | None = None) -> dict[str, Any]:
    """The webhook's JSON body (with what used the allowance, for a warning or a block)."""
    u = event.usage
    body: dict[str, Any] = {
        "event": event.kind,
        "id": f"{u.tenant}/{u.period}/{event.mark}",
        "tenant": u.tenant,
    }
    if event.threshold is not None:
        body["threshold"] = event.threshold
    if event.reason is not None:
        body["reason"] = event.reason
    if event.at is not None:
        body["runs_out_at"] = dt.datetime.fromtimestamp(event.at, u.resets_at.tzinfo).isoformat(
            timespec="seconds"
        )
        body["before_reset_seconds"] = max(0, round(u.resets_at.timestamp() - event.at))
    body.update(
        used_bytes=u.used_bytes,
        cap_bytes=u.cap_bytes,
        resets_at=u.resets_at.isoformat(),
        period=u.period,
        time=dt.datetime.fromtimestamp(event.time, dt.UTC).isoformat(timespec="milliseconds"),
    )
    if not u.enforced:  # shadow mode: what would have happened
        body["enforced"] = False
        body["would_block"] = u.would_block
        if event.kind == "blocked":
            body["would_block_since"] = body["time"]
    if top is not None:
        body["summary"] = top[0]
        body["top"] = top[1]
    return body


def describe(event: WarningEvent, top: Top | None = None) -> str:
    """The log line."""
    u = event.usage
    facts = (
        f"{u.used_bytes} of {u.cap_bytes} bytes used in period {u.period}, "
        f"resets at {u.resets_at.isoformat()}"
    )
    if top is not None and top[0]:
        facts += f"; top: {top[0]}"
    if event.kind == "threshold":
        share = f"{(event.threshold or 0) * 100:g}%"
        return f"tenant {u.tenant} reached {share} of its daily cap: {facts}"
    if event.kind == "blocked" and not u.enforced:
        return (
            f"tenant {u.tenant} reached its daily cap and would be blocked now "
            f"(shadow mode, enforce: false; nothing is refused): {facts}"
        )
    if event.kind == "blocked":
        return f"tenant {u.tenant} reached its daily cap and is blocked: {facts}"
    if event.kind == "forecast":
        return f"tenant {u.tenant}: {forecast_line(event.at or 0.0, u.resets_at)}: {facts}"
    why = {
        "period": "a new period began",
        "cap": "its cap was raised",
        "reset": "its count was reset",
    }[event.reason or "period"]
    return f"tenant {u.tenant} is open again ({why}): {facts}"


class Warner:
    """Tells operators when a tenant crosses a warn_at threshold, is blocked, or reopens.

    Counters for tests and diagnostics: :attr:`sent` (events this instance logged and,
    with a webhook, delivered, by kind), :attr:`claimed_elsewhere` (events another
    instance, or an earlier run, had already claimed), :attr:`failed` (events whose
    webhook POST or store claim gave up), :attr:`dropped` (events not queued because the
    queue was full, or still queued when the stop deadline passed).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF,
        post_timeout: float = POST_TIMEOUT,
        stop_deadline: float = STOP_DEADLINE,
    ) -> None:
        self.runtime = runtime
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.post_timeout = post_timeout
        self.stop_deadline = stop_deadline
        self.sent: Counter[str] = Counter()
        self.claimed_elsewhere = 0
        self.failed = 0
        self.dropped = 0
        self._alerts: Alerts[TenantUsage] = Alerts()
        self._snapshot: Snapshot | None = None  # the config whose tenants _alerts follows
        # When each observed tenant's period ends: (Unix time, period, name), a heap.
        self._ends: list[tuple[float, str, str]] = []
        self._ends_of: dict[str, str] = {}  # name -> the period its heap item is for
        self._queue: asyncio.Queue[WarningEvent] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        self._current: WarningEvent | None = None  # the event being delivered
        self._session: aiohttp.ClientSession | None = None

    # --- detection (in the flusher; synchronous) ----------------------------------

    def flushed(self, changed: Collection[str]) -> None:
        """A flush listener: ask :mod:`governor.core.alerts` what happened; queue it.

        Only the tenants the flush changed are looked at, plus those whose period ended
        since (a blocked tenant reopens then); an idle tenant costs nothing. What was
        seen of tenants a reload removed is dropped once per reload.
        """
        runtime = self.runtime
        now = runtime.clock()
        snap = runtime.snapshot
        tenants = snap.tenants
        if snap is not self._snapshot:
            self._snapshot = snap
            self._alerts.forget_all_but(tenants)
        rolled = self._due(now)
        for name in dict.fromkeys(itertools.chain(changed, rolled)):
            tenant = tenants.get(name)
            usage = runtime.usage(name)
            if tenant is None or usage is None:
                continue
            for event in self._alerts.observe(usage, tenant.config.warn_at, now):
                self._enqueue(event)
            if name in rolled and not usage.blocked and usage.used_bytes == 0:
                self._alerts.forget(name)  # idle in its new period: nothing to remember
            elif self._ends_of.get(name) != usage.period:
                self._ends_of[name] = usage.period
                heapq.heappush(self._ends, (usage.resets_at.timestamp(), usage.period, name))

    def _due(self, now: float) -> set[str]:
        """The tenants whose period, as last observed, has ended by ``now``."""
        due: set[str] = set()
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, period, name = heapq.heappop(ends)
            if self._ends_of.get(name) == period:  # else a stale heap item
                del self._ends_of[name]
                due.add(name)
        return due

    def forecast(self, usage: TenantUsage, at: float) -> None:
        """A forecasts listener: ``usage``'s allowance runs out at ``at``, before its reset."""
        self._enqueue(Alert("forecast", usage, self.runtime.clock(), at=at))

    def _enqueue(self, event: WarningEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.error(
                    "warning queue full (%d events): dropped %s for tenant %s (%d dropped so far)",
                    QUEUE_SIZE,
                    event.kind,
                    event.usage.tenant,
                    self.dropped,
                )

    @property
    def webhook_url(self) -> str | None:
        """Where events go: read from the live config, so a reload can change it."""
        return self.runtime.snapshot.config.webhook_url

    # --- delivery (the owned task) ------------------------------------------------

    def start(self, tasks: TaskGroup) -> None:
        """Start the task (in ``tasks``) that claims, logs and delivers events; see :meth:`stop`."""
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": "governor"})
        self._task = tasks.spawn(self._run(), name="governor-warnings")

    async def stop(self) -> None:
        """Deliver what is queued within :attr:`stop_deadline` seconds, then stop the task."""
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(self.stop_deadline):
                    await self._queue.join()
            except TimeoutError:
                left = self._queue.qsize() + (self._current is not None)
                self.dropped += left
                log.error(
                    "stopping: %d warning event(s) not delivered within %gs",
                    left,
                    self.stop_deadline,
                )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            self._current = event
            try:
                await self._deliver(event)
            except Exception:  # one event's bug must not stop the warnings
                log.exception("delivering a %s event failed", event.kind)
            finally:
                self._current = None
                self._queue.task_done()

    async def _deliver(self, event: WarningEvent) -> None:
        tenant = event.usage.tenant
        claimed = await self._claim(event)
        if claimed is None:
            self.failed += 1
            return
        if not claimed:
            self.claimed_elsewhere += 1
            log.debug("%s event for %s already sent by another instance", event.mark, tenant)
            return
        level = logging.INFO if event.kind == "reopened" else logging.WARNING
        top = await self._top(event) if event.kind != "reopened" else None
        log.log(level, "%s", describe(event, top))
        session, url = self._session, self.webhook_url
        if session is None or url is None or await self._post(session, url, event, top):
            self.sent[event.kind] += 1
        else:
            self.failed += 1

    async def _top(self, event: WarningEvent) -> Top | None:
        """What used the allowance, from the store's top lists (None: the store failed)."""
        u = event.usage
        try:
            return await top_line(self.runtime.store, u.tenant, u.period, u.used_bytes)
        except StoreError as exc:
            log.warning("top consumers of %s not read for its event: %s", u.tenant, exc)
            return None

    async def _claim(self, event: WarningEvent) -> bool | None:
        """mark_once with retries; None when the store never answered."""
        key = (event.usage.tenant, event.usage.period)
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.runtime.store.mark_once(key, event.mark)
            except StoreError as exc:
                if attempt == self.attempts:
                    log.error(
                        "cannot claim the %s event for %s in the store after %d tries, "
                        "not sent: %s",
                        event.mark,
                        event.usage.tenant,
                        attempt,
                        exc,
                    )
                    return None
            await asyncio.sleep(self._delay(attempt))
        return None  # pragma: no cover - the loop returns

    async def _post(
        self, session: aiohttp.ClientSession, url: str, event: WarningEvent, top: Top | None
    ) -> bool:
        """POST the event to the webhook with retries; whether it was accepted."""
        body = json.dumps(payload(event, top)).encode()
        timeout = aiohttp.ClientTimeout(
            total=self.post_timeout, connect=min(CONNECT_TIMEOUT, self.post_timeout)
        )
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                async with session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                    timeout=timeout,
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    problem = f"HTTP {resp.status}"
                    if not (resp.status >= 500 or resp.status in _RETRY_STATUSES):
                        break
            except TimeoutError:
                problem = f"no answer within {self.post_timeout:g}s"
            except aiohttp.ClientError as exc:
                problem = str(exc) or type(exc).__name__
            if attempt < self.attempts:
                log.info("webhook %s for %s: %s; retrying", event.kind, event.usage.tenant, problem)
                await asyncio.sleep(self._delay(attempt))
        log.error(
            "webhook gave up on the %s event for tenant %s after %d tries: %s",
            event.kind,
            event.usage.tenant,
            attempt,
            problem,
        )
        return False

    def _delay(self, attempt: int) -> float:
        """The pause after try number ``attempt`` (1-based)."""
        return float(min(self.backoff * 2 ** (attempt - 1), BACKOFF_MAX))
