"""When a tenant's allowance runs out at the rate it is used: the exhaustion forecast, pure.

The rate is a moving average of the growth of the tenant's total (the fleet's, as each
flush learns it) with a time constant of ``forecast_window`` (15 minutes by default). Where
the history of earlier days exists, each coming hour is weighed half by that rate and half
by the rate the same local hour had on the previous day (:data:`HISTORY_WEIGHT`): a site
that is busy every evening is expected to be busy this evening too.

:func:`exhaustion` walks from now to the reset, hour by hour, and returns the instant the
allowance is used up, or None when that is not before the reset (or nothing is being
used). Work: one step per hour to the reset, at most 25.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

HISTORY_WEIGHT: Final = 0.5  # of an hour's rate taken from the same hour of the previous day
HOUR: Final = 3600.0


@dataclass(slots=True)
class RateEstimate:
    """A tenant's use in bytes per second: a moving average of its total's growth."""

    period: str = ""
    at: float | None = None  # when the total was last observed
    used: int = 0
    rate: float = 0.0
    samples: int = 0

    def observe(self, now: float, used: int, period: str, window: float) -> float:
        """Take an observation of the period's total; the rate afterwards."""
        if period != self.period or self.at is None:
            if period != self.period:
                self.rate, self.samples = 0.0, 0  # a new period: its use starts over
            self.period, self.at, self.used = period, now, used
            return self.rate
        elapsed = now - self.at
        if elapsed <= 0:
            return self.rate
        growth = max(used - self.used, 0) / elapsed  # a reset makes the total fall
        weight = 1.0 - math.exp(-elapsed / window) if self.samples else 1.0
        self.rate += weight * (growth - self.rate)
        self.samples += 1
        self.at, self.used = now, used
        return self.rate


def exhaustion(
    *,
    now: float,
    used: int,
    cap: int,
    end: float,
    rate: float,
    hourly: Sequence[float] | None = None,
    hour_of: int = 0,
) -> float | None:
    """The Unix time ``cap`` is reached, or None: not before ``end`` (the reset).

    ``rate`` is bytes per second now. ``hourly`` (24 values, bytes per second in each local
    hour of the previous day) weighs each coming hour; ``hour_of`` is the local hour
    ``now`` falls in. At or over the cap, it is now.
    """
    left = float(cap - used)
    if left <= 0:
        return now
    t = now
    hour = hour_of
    step_end = now - (now % HOUR) + HOUR  # the next hour boundary (UTC-aligned hours)
    while t < end:
        stop = min(step_end, end)
        r = rate
        if hourly is not None:
            r = (1 - HISTORY_WEIGHT) * rate + HISTORY_WEIGHT * hourly[hour % 24]
        if r > 0:
            need = left / r
            if t + need <= stop:
                return t + need
            left -= r * (stop - t)
        t = stop
        step_end = stop + HOUR
        hour += 1
    return None
