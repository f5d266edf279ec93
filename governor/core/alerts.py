"""Which warnings a tenant's usage calls for: thresholds crossed, blocked, open again.

Pure detection, no asyncio and no I/O: :class:`Alerts` compares each observation of a
tenant's period with the one before and returns the events that happened in between,
each at most once per period (per cap, for ``blocked`` and same-period ``reopened``).
The time is the caller's (``now``), so it is tested without a clock. Delivery (the
queue, the store claim that makes an event fleet-wide once, the webhook) is
:mod:`governor.observe.webhooks`. The rules, and why: docs/alerts.md.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

# "forecast": at the current rate the allowance runs out before the reset (raised by the
# forecasts, governor.observe.forecast, once per period; not by Alerts.observe).
AlertKind = Literal["threshold", "blocked", "reopened", "forecast"]
ReopenReason = Literal["period", "cap", "reset"]


class Usage(Protocol):
    """What detection reads of a tenant's current period."""

    @property
    def tenant(self) -> str: ...
    @property
    def period(self) -> str: ...
    @property
    def used_bytes(self) -> int: ...
    @property
    def cap_bytes(self) -> int: ...
    @property
    def blocked(self) -> bool: ...
    @property
    def would_block(self) -> bool: ...  # at its cap in shadow mode (enforce: false)


U = TypeVar("U", bound=Usage)


@dataclass(frozen=True, slots=True)
class Alert(Generic[U]):
    """One event for one tenant's period, with the observation that raised it."""

    kind: AlertKind
    usage: U
    time: float  # Unix time the event was seen
    threshold: float | None = None  # the share of the cap, for threshold events
    reason: ReopenReason | None = None  # for reopened events
    at: float | None = None  # for forecast events: when the allowance runs out (Unix time)

    @property
    def mark(self) -> str:
        """The event's identity within its period: what makes it once per period."""
        if self.kind == "threshold":
            return f"warn:{self.threshold:g}"
        if self.kind == "blocked":
            return f"blocked:{self.usage.cap_bytes}"
        if self.kind == "forecast":
            return "forecast"
        if self.reason == "period":
            return "reopened:period"
        return f"reopened:{self.reason}:{self.usage.cap_bytes}"


@dataclass(slots=True)
class _Seen:
    """What the last observation of a tenant showed."""

    period: str
    cap: int
    blocked: bool
    warned: set[float] = field(default_factory=set)  # shares reported this period


class Alerts(Generic[U]):
    """Remembers each tenant's last observation; :meth:`observe` returns what is new."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def forget_all_but(self, tenants: Collection[str]) -> None:
        """Drop what was seen of tenants no longer configured (a reload removed them)."""
        for name in [n for n in self._seen if n not in tenants]:
            del self._seen[name]

    def forget(self, name: str) -> None:
        """Drop what was seen of ``name``: idle in a new period, it has nothing to remember."""
        self._seen.pop(name, None)

    def observe(self, u: U, warn_at: Iterable[float], now: float) -> list[Alert[U]]:
        """The events since the last observation of ``u.tenant``, in the order they happened.

        A jump over several shares at once gives one threshold event for each, in the
        order of ``warn_at`` (ascending, as the config loader keeps it).
        """
        prev = self._seen.get(u.tenant)
        out = u.blocked or u.would_block  # in shadow mode, events fire as they would
        seen = _Seen(period=u.period, cap=u.cap_bytes, blocked=out)
        events: list[Alert[U]] = []
        if prev is not None and prev.period == u.period:
            seen.warned = prev.warned
            if prev.blocked and not out:
                reason: ReopenReason = "cap" if u.cap_bytes > prev.cap else "reset"
                events.append(Alert("reopened", u, now, reason=reason))
        elif prev is not None and prev.blocked and not out:
            events.append(Alert("reopened", u, now, reason="period"))
        for share in warn_at:
            if share not in seen.warned and u.used_bytes >= share * u.cap_bytes:
                seen.warned.add(share)
                events.append(Alert("threshold", u, now, threshold=share))
        if out and (prev is None or prev.period != u.period or not prev.blocked):
            events.append(Alert("blocked", u, now))
        self._seen[u.tenant] = seen
        return events
