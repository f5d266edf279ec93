"""A wall clock the test moves by hand, injected where governor takes a ``clock``, so period
boundaries (a reset at local midnight) are reached without waiting for them."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, when: dt.datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: dt.datetime) -> None:
        self.now = when.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += seconds


def seoul(y: int, m: int, d: int, hh: int = 12, mm: int = 0, ss: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, ss, tzinfo=ZoneInfo("Asia/Seoul"))
