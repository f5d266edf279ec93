"""Charging one request's bytes to its tenant, period by period, pure.

The meter is the only thing that charges a tenant: the HTTP layer counts raw
bytes (:class:`governor.http1.request.Request`), the meter turns claims of them
into ledger entries. Invariant: every byte is charged to the period in which it
was claimed, that is when it crossed the wire (a download that runs past midnight
pays the old day up to the reset and the new day after it), and only in the
directions the tenant counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from governor.config import TenantConfig
from governor.core.ledger import Key, Ledger, is_blocked
from governor.core.periods import Period, PeriodTracker
from governor.core.shares import Visit


class Meter:
    """One request's byte counter, feeding the shared ledger."""

    __slots__ = (
        "_clock",
        "_count_in",
        "_count_out",
        "_daily_cap",
        "_days",
        "_grants",
        "_ledger",
        "_periods",
        "tenant",
        "visit",
    )

    def __init__(
        self,
        *,
        ledger: Ledger,
        tenant: TenantConfig,
        periods: PeriodTracker,
        clock: Callable[[], float],
        grants: Mapping[Key, int] | None = None,
        days: PeriodTracker | None = None,
    ) -> None:
        self._ledger = ledger
        self._periods = periods
        self._clock = clock
        self._count_out = tenant.count in ("egress", "both")
        self._count_in = tenant.count in ("ingress", "both")
        self.tenant = tenant.name
        self._daily_cap = tenant.daily_cap
        self._grants = grants or {}
        # A weekly or monthly tenant's days, for its day_guard (a cap on each day in it).
        self._days = days
        # The request's visitor and crawler accounts (client_share, crawlers), if counted.
        self.visit: Visit | None = None

    def now(self) -> float:
        """The time on the meter's clock (Unix seconds)."""
        return self._clock()

    def period(self) -> Period:
        """The tenant's period now."""
        return self._periods.current(self._clock())

    def key(self) -> Key:
        """The ledger key for the tenant's period now."""
        return (self.tenant, self._periods.current(self._clock()).key)

    def day_key(self) -> Key:
        """The account of today within a week or month (``day_guard``): ``PERIOD#day:DATE``."""
        assert self._days is not None
        now = self._clock()
        period = self._periods.current(now).key
        return (self.tenant, f"{period}#day:{self._days.current(now).key}")

    def day_used(self) -> int:
        """Today's bytes within a weekly or monthly period (0 without a day_guard)."""
        if self._days is None:
            return 0
        key = self.day_key()
        self._ledger.serve(key)
        return self._ledger.used(key)

    def day_period(self) -> Period:
        """Today (for a day_guard's notice), or the period itself when there is none."""
        return self.period() if self._days is None else self._days.current(self._clock())

    def charge(self, ingress: int, egress: int) -> None:
        """Charge bytes received from the client and sent to it, in the counted directions."""
        n = 0
        if ingress > 0 and self._count_in:
            n = ingress
        if egress > 0 and self._count_out:
            n += egress
        if n:
            key = self.key()
            self._ledger.add(key, n)
            if self._days is not None:
                self._ledger.add(self.day_key(), n)
            if self.visit is not None:
                self.visit.charge(key[1], n)

    @property
    def cap(self) -> int:
        """The tenant's allowance for the current period: its daily cap plus today's grant."""
        if not self._grants:
            return self._daily_cap
        return self._daily_cap + self._grants.get(self.key(), 0)

    def used(self) -> int:
        """The tenant's total for the current period, as this process knows it.

        Asked by every request, so it also marks the period served here: from the next
        flush on, this process learns the fleet's total for it (and only for such keys).
        """
        key = self.key()
        self._ledger.serve(key)
        return self._ledger.used(key)

    def remaining(self) -> int:
        """Bytes left before the cap (zero or less once reached)."""
        return self.cap - self.used()

    def blocked(self) -> bool:
        """Whether the tenant has reached its cap in the current period."""
        return is_blocked(self.used(), self.cap)
