"""Pacing: the send rate a tenant's large responses share so the rest lasts until the reset.

From ``pacing.from`` of the cap on, a tenant's large responses (above ``large.size``, or
1 MiB when ``large`` is not set) are slowed to share one rate:

    rate = share x (cap - used) / (seconds to the reset) - what the other responses use now

each paced response getting ``rate / (paced responses)``, never below ``pacing.floor``.
Pacing slows; it never refuses (``large`` and the cap do that).

*What the other responses use now* is this instance's byte rate for the tenant less its
paced bytes' rate, both moving averages (time constant :data:`TAU`).

*Between instances:* ``used`` is the fleet's total (the ledger's, refreshed at each flush),
so what is left is the fleet's; each instance takes ``share`` of it, its part of the
tenant's traffic: its own byte rate over the fleet's (the growth of ``used``), both
moving averages. An instance that serves half the tenant's traffic paces to half the
rate. How far off: the fleet's rate is learned a flush late, so a sudden shift of traffic
between instances is followed within about :data:`TAU` seconds; until then the fleet may
send up to (instances x the rate) at worst, and the floor (``floor`` x paced responses)
may exceed the rate by design. Each sample corrects the next, since what is left is
measured, not predicted.

This module is pure: times are passed in.
"""

from __future__ import annotations

import math
from typing import Final

from governor.config import PacingConfig, TenantConfig

TAU: Final = 30.0  # seconds: the time constant of the moving averages
SAMPLE: Final = 1.0  # seconds: the rates are sampled at most this often
DEFAULT_LARGE_SIZE: Final = 2**20  # "large" for pacing when the tenant sets no ``large.size``
BURST: Final = 0.25  # seconds of a paced response's rate it may send ahead


def large_size(tenant: TenantConfig) -> int:
    """Above this many bytes a response is large (and paced from ``pacing.from`` on)."""
    return DEFAULT_LARGE_SIZE if tenant.large is None else tenant.large.size


class Pacer:
    """One tenant's paced responses on this instance, and the rates they are paced by."""

    __slots__ = (
        "_at",
        "_local_at",
        "_paced_at",
        "_used_at",
        "active",
        "fleet_rate",
        "local",
        "local_rate",
        "paced",
        "paced_rate",
    )

    def __init__(self) -> None:
        self.active = 0  # responses being paced now
        self.local = 0  # bytes charged to the tenant here (every response)
        self.paced = 0  # bytes of paced responses passed on here
        self.local_rate = 0.0  # bytes/s, moving averages
        self.paced_rate = 0.0
        self.fleet_rate = 0.0
        self._at: float | None = None  # the last sample's time, and the counts then
        self._local_at = 0
        self._paced_at = 0
        self._used_at = 0

    def count(self, n: int) -> None:
        """``n`` bytes were charged to the tenant here."""
        self.local += n

    def sample(self, now: float, used: int) -> None:
        """Update the moving averages (at most every :data:`SAMPLE` seconds)."""
        at = self._at
        if at is None or now < at:
            self._restart(now, used)
            return
        elapsed = now - at
        if elapsed < SAMPLE:
            return
        local = (self.local - self._local_at) / elapsed
        paced = (self.paced - self._paced_at) / elapsed
        # The fleet sent at least what this instance did; a reset makes ``used`` fall.
        fleet = max((used - self._used_at) / elapsed, local)
        first = self.fleet_rate == 0.0 and self.local_rate == 0.0
        weight = 1.0 if first else 1.0 - math.exp(-elapsed / TAU)
        self.local_rate += weight * (local - self.local_rate)
        self.paced_rate += weight * (paced - self.paced_rate)
        self.fleet_rate += weight * (fleet - self.fleet_rate)
        self._restart(now, used)

    def _restart(self, now: float, used: int) -> None:
        self._at = now
        self._local_at = self.local
        self._paced_at = self.paced
        self._used_at = used

    def share(self) -> float:
        """This instance's part of the tenant's traffic (1 until the fleet's rate is known)."""
        if self.fleet_rate <= 0.0:
            return 1.0
        return min(1.0, self.local_rate / self.fleet_rate)

    def rate(
        self, pacing: PacingConfig, *, now: float, used: int, cap: int, end: float
    ) -> float | None:
        """Bytes per second for one paced response now, or None: not paced (before
        ``pacing.from``). ``end`` is the reset (Unix time)."""
        if used < cap * pacing.share:
            return None
        self.sample(now, used)
        left = max(cap - used, 0)
        others = max(self.local_rate - self.paced_rate, 0.0)
        budget = self.share() * left / max(end - now, 1.0) - others
        return max(budget / max(self.active, 1), float(pacing.floor))
