"""Metering periods: which local day an instant belongs to, and when it resets.

Usage is counted per tenant per *period*. A period runs from the local wall-clock
time ``reset_at`` on local date D to ``reset_at`` on local date D+1, in the
configured time zone, and is named by D ("YYYY-MM-DD").

Invariant: periods tile time. For every instant there is exactly one period
containing it (``start <= now < end``), and the period after ``p`` starts exactly
at ``p.end``, so no byte is ever counted in two periods or in none.

Daylight-saving time is handled by defining the reset instant of local date D as
the *first* instant at which the local wall clock on D reads ``reset_at`` or
later:

* an ordinary day gives the one instant showing ``reset_at``;
* a ``reset_at`` repeated in a fall-back hour gives its first occurrence (fold=0);
* a ``reset_at`` skipped by a spring-forward gap gives the first instant after
  the gap (02:30 in a 02:00-03:00 gap resets at 03:00).

So periods last 23, 24 or 25 hours (23.5 or 24.5 in zones with 30-minute
shifts), or in between when ``reset_at`` lies in a gap.

A *week* (``period: week``) runs from the reset on its first local day (``week_starts``,
Monday by default) to the reset seven local days later; a *month* (``period: month``)
from the reset on the 1st to the reset on the 1st of the next month. Both are named by
their first local date, as a day is, and are built of the same reset instants, so the
rules above hold for them too.

This module is pure: no I/O, no clock reads; callers pass ``now``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

from governor.config.model import PeriodKind

__all__ = ["Period", "PeriodTracker", "period_at"]

_ONE_DAY: Final = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Period:
    """One metering period: the half-open interval ``[start, end)`` of Unix time."""

    key: str
    """The local date on which the period starts, ``"YYYY-MM-DD"``."""
    start: float
    """Unix timestamp of the start (inclusive)."""
    end: float
    """Unix timestamp of the end (exclusive): the next reset."""

    def resets_at(self, tz: ZoneInfo) -> dt.datetime:
        """The end of this period (the next reset) as an aware datetime in ``tz``."""
        return dt.datetime.fromtimestamp(self.end, tz)


def _wall(ts: float, tz: ZoneInfo) -> dt.datetime:
    """The naive local wall-clock time at Unix time ``ts`` in ``tz``."""
    return dt.datetime.fromtimestamp(ts, tz).replace(tzinfo=None, fold=0)


def _reset_instant(day: dt.date, tz: ZoneInfo, reset_at: dt.time) -> float:
    """The first instant at which the wall clock on local ``day`` is at or past ``reset_at``."""
    wall = dt.datetime.combine(day, reset_at.replace(tzinfo=None, fold=0))
    # fold=0 picks the first occurrence of an ambiguous time. For a time inside a
    # gap it applies the offset from before the transition, which lands *after*
    # the gap; fold=1 applies the later offset, which lands before it.
    late = wall.replace(tzinfo=tz, fold=0).timestamp()
    if _wall(late, tz) == wall:
        return late
    # ``wall`` does not exist: find the transition, the first instant whose wall
    # clock is at or past ``wall``. It lies in (early, late]; transitions fall on
    # whole seconds, so bisect on integers.
    early = wall.replace(tzinfo=tz, fold=1).timestamp()
    lo, hi = math.floor(early), math.ceil(late)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return float(hi)


def period_at(
    now: float,
    tz: ZoneInfo,
    reset_at: dt.time,
    kind: PeriodKind = "day",
    week_starts: int = 0,
) -> Period:
    """The period containing Unix time ``now`` for resets at local ``reset_at`` in ``tz``:
    a day, a week starting on weekday ``week_starts`` (0: Monday), or a calendar month.

    ``reset_at`` is a naive wall-clock time; any tzinfo or fold on it is ignored.
    """
    day = _day_at(now, tz, reset_at)
    if kind == "day":
        return day
    first = dt.date.fromisoformat(day.key)
    if kind == "week":
        first -= dt.timedelta(days=(first.weekday() - week_starts) % 7)
        after = first + dt.timedelta(days=7)
    else:
        first = first.replace(day=1)
        after = (first + dt.timedelta(days=32)).replace(day=1)
    start = day.start if first.isoformat() == day.key else _reset_instant(first, tz, reset_at)
    return Period(key=first.isoformat(), start=start, end=_reset_instant(after, tz, reset_at))


def _day_at(now: float, tz: ZoneInfo, reset_at: dt.time) -> Period:
    """The day period containing ``now``."""
    day = dt.datetime.fromtimestamp(now, tz).date()
    start = _reset_instant(day, tz, reset_at)
    while start > now:
        day -= _ONE_DAY
        start = _reset_instant(day, tz, reset_at)
    end = _reset_instant(day + _ONE_DAY, tz, reset_at)
    while end <= now:  # only if a reset gap straddles midnight
        day += _ONE_DAY
        start, end = end, _reset_instant(day + _ONE_DAY, tz, reset_at)
    return Period(key=day.isoformat(), start=start, end=end)


class PeriodTracker:
    """The current period for one zone and reset time, cached for the per-request hot path.

    :meth:`current` costs two comparisons while ``now`` stays inside the cached
    period and recomputes only when ``now`` leaves it (normally at the reset;
    also if the clock steps backwards).
    """

    __slots__ = ("_kind", "_period", "_reset_at", "_tz", "_week_starts")

    def __init__(
        self, tz: ZoneInfo, reset_at: dt.time, kind: PeriodKind = "day", week_starts: int = 0
    ) -> None:
        self._tz = tz
        self._reset_at = reset_at
        self._kind: PeriodKind = kind
        self._week_starts = week_starts
        self._period: Period | None = None

    @property
    def kind(self) -> PeriodKind:
        """``day``, ``week`` or ``month``."""
        return self._kind

    @property
    def tz(self) -> ZoneInfo:
        """The time zone periods are computed in."""
        return self._tz

    @property
    def reset_at(self) -> dt.time:
        """The local wall-clock time at which each period starts."""
        return self._reset_at

    def current(self, now: float) -> Period:
        """The period containing Unix time ``now``."""
        p = self._period
        if p is None or not p.start <= now < p.end:
            p = self._period = period_at(
                now, self._tz, self._reset_at, self._kind, self._week_starts
            )
        return p
