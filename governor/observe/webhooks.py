"""Warnings before the cap: a log line and a webhook event, once per event per period, fleet-wide.

After every flush, :meth:`Warner.flushed` (a flush listener: synchronous, never blocks)
compares each tenant's usage with what it saw last time and queues the events that
happened since:

``threshold``
    The tenant's bytes for the period reached ``warn_at`` share *s* of its cap
    (``used_bytes >= s * cap_bytes``, the cap including today's grant). One event per
    share per period; a jump over several shares at once gives one event for each, in
    ascending order.
``blocked``
    The tenant reached its cap (``used_bytes >= cap_bytes``): new requests get the notice.
``reopened``
    A tenant this instance saw blocked is open again. ``reason`` says why:
    ``period`` (its last observation in the previous period was blocked, and the new
    period is open: the daily reset), ``cap`` (same period, the cap went up: a grant or a
    reload with a larger ``daily_cap``), or ``reset`` (same period, same cap or lower,
    the count went down: an operator reset).

The owned delivery task (:meth:`Warner.start` / :meth:`Warner.stop`) takes events off
the queue one at a time, in order. For each it first claims the event in the store
with :meth:`~governor.store.base.Store.mark_once`, keyed by (tenant, period) and the
event's *mark* (``warn:0.8``, ``blocked:<cap>``, ``reopened:period``,
``reopened:cap:<cap>``, ``reopened:reset:<cap>``): only the first instance of the
fleet to claim it logs the line and POSTs the webhook, so each event goes out once
however many instances (or restarts) see it. ``blocked`` and same-period ``reopened``
events are keyed by the cap, so a tenant blocked again after a grant is reported
again, while one blocked again at the same cap after a reset is not.

Delivery is at most once: a webhook POST is tried :attr:`Warner.attempts` times with
exponential backoff (connection errors, timeouts, 408, 429 and 5xx are retried; other
answers are not), then given up with an error in the log. A claim the store cannot
answer is retried the same way; when it still fails the event is dropped, because
sending it might send it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from governor.accounts.runtime import Runtime, TenantUsage
from governor.errors import StoreError

log = logging.getLogger("governor.warnings")

EventKind = Literal["threshold", "blocked", "reopened"]
ReopenReason = Literal["period", "cap", "reset"]

QUEUE_SIZE = 1000  # events waiting for delivery; beyond it new ones are dropped (and counted)
ATTEMPTS = 4  # tries per webhook POST (and per store claim)
BACKOFF = 0.5  # seconds before the 2nd try; doubled for each further try
BACKOFF_MAX = 8.0
POST_TIMEOUT = 5.0  # one webhook POST, connecting included
CONNECT_TIMEOUT = 2.0
STOP_DEADLINE = 5.0  # at stop, queued events get this long to go out
_RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class WarningEvent:
    """One event for one tenant's period, as queued by :meth:`Warner.flushed`."""

    kind: EventKind
    usage: TenantUsage
    time: float  # Unix time the event was seen
    threshold: float | None = None  # the share of the cap, for threshold events
    reason: ReopenReason | None = None  # for reopened events

    @property
    def mark(self) -> str:
        """The event's name for :meth:`~governor.store.base.Store.mark_once`."""
        if self.kind == "threshold":
            return f"warn:{self.threshold:g}"
        if self.kind == "blocked":
            return f"blocked:{self.usage.cap_bytes}"
        if self.reason == "period":
            return "reopened:period"
        return f"reopened:{self.reason}:{self.usage.cap_bytes}"

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        u = self.usage
        body: dict[str, Any] = {
            "event": self.kind,
            "id": f"{u.tenant}/{u.period}/{self.mark}",
            "tenant": u.tenant,
        }
        if self.threshold is not None:
            body["threshold"] = self.threshold
        if self.reason is not None:
            body["reason"] = self.reason
        body.update(
            used_bytes=u.used_bytes,
            cap_bytes=u.cap_bytes,
            resets_at=u.resets_at.isoformat(),
            period=u.period,
            time=dt.datetime.fromtimestamp(self.time, dt.UTC).isoformat(timespec="milliseconds"),
        )
        return body

    def describe(self) -> str:
        """The log line."""
        u = self.usage
        facts = (
            f"{u.used_bytes} of {u.cap_bytes} bytes used in period {u.period}, "
            f"resets at {u.resets_at.isoformat()}"
        )
        if self.kind == "threshold":
            share = f"{(self.threshold or 0) * 100:g}%"
            return f"tenant {u.tenant} reached {share} of its daily cap: {facts}"
        if self.kind == "blocked":
            return f"tenant {u.tenant} reached its daily cap and is blocked: {facts}"
        why = {
            "period": "a new period began",
            "cap": "its cap was raised",
            "reset": "its count was reset",
        }[self.reason or "period"]
        return f"tenant {u.tenant} is open again ({why}): {facts}"


@dataclass(slots=True)
class _Seen:
    """What this instance saw of a tenant at the last flush."""

    period: str
    cap: int
    used: int
    blocked: bool
    warned: set[float] = field(default_factory=set)  # shares queued this period


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
        self._seen: dict[str, _Seen] = {}
        self._queue: asyncio.Queue[WarningEvent] = asyncio.Queue(QUEUE_SIZE)
        self._task: asyncio.Task[None] | None = None
        self._current: WarningEvent | None = None  # the event being delivered
        self._session: aiohttp.ClientSession | None = None

    # --- detection (in the flusher; synchronous) ----------------------------------

    def flushed(self) -> None:
        """A flush listener: compare usage with the thresholds and queue what happened."""
        now = self.runtime.clock()
        sites = self.runtime.snapshot.sites
        for name in list(self._seen):
            if name not in sites:
                del self._seen[name]  # removed by a reload
        for name, site in sites.items():
            usage = self.runtime.usage(name)
            if usage is not None:
                for event in self._observe(usage, site.config.warn_at, now):
                    self._enqueue(event)

    def _observe(
        self, u: TenantUsage, warn_at: tuple[float, ...], now: float
    ) -> list[WarningEvent]:
        prev = self._seen.get(u.tenant)
        seen = _Seen(period=u.period, cap=u.cap_bytes, used=u.used_bytes, blocked=u.blocked)
        events: list[WarningEvent] = []
        if prev is not None and prev.period == u.period:
            seen.warned = prev.warned
            if prev.blocked and not u.blocked:
                reason: ReopenReason = "cap" if u.cap_bytes > prev.cap else "reset"
                events.append(WarningEvent("reopened", u, now, reason=reason))
        elif prev is not None and prev.blocked and not u.blocked:
            events.append(WarningEvent("reopened", u, now, reason="period"))
        for share in warn_at:
            if share not in seen.warned and u.used_bytes >= share * u.cap_bytes:
                seen.warned.add(share)
                events.append(WarningEvent("threshold", u, now, threshold=share))
        if u.blocked and (prev is None or prev.period != u.period or not prev.blocked):
            events.append(WarningEvent("blocked", u, now))
        self._seen[u.tenant] = seen
        return events

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

    async def start(self) -> None:
        """Start the owned task that claims, logs and delivers events."""
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": "governor"})
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="governor-warnings")

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
        log.log(level, "%s", event.describe())
        session, url = self._session, self.webhook_url
        if session is None or url is None or await self._post(session, url, event):
            self.sent[event.kind] += 1
        else:
            self.failed += 1

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

    async def _post(self, session: aiohttp.ClientSession, url: str, event: WarningEvent) -> bool:
        """POST the event to the webhook with retries; whether it was accepted."""
        body = json.dumps(event.payload()).encode()
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
