"""The meter: the one thing that charges a tenant, pure, on an injected clock."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from governor.config import TenantConfig, UpstreamURL
from governor.core.ledger import Key, Ledger
from governor.core.meter import Meter
from governor.core.periods import PeriodTracker

UTC = ZoneInfo("UTC")
# 2024-03-10 23:59:59 UTC: one second before a midnight reset.
BEFORE_RESET = dt.datetime(2024, 3, 10, 23, 59, 59, tzinfo=UTC).timestamp()
DAY, NEXT = "2024-03-10", "2024-03-11"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tenant(count: str = "egress", cap: int = 1000, reset: dt.time = dt.time(0, 0)) -> TenantConfig:
    upstream = UpstreamURL(
        url="http://127.0.0.1:1", scheme="http", host="127.0.0.1", port=1, base_path=""
    )
    return TenantConfig(
        name="t",
        hosts=("a.test",),
        upstream=upstream,
        daily_cap=cap,
        timezone=UTC,
        reset_at=reset,
        count=count,  # type: ignore[arg-type]
    )


def meter(
    config: TenantConfig,
    clock: Clock,
    ledger: Ledger | None = None,
    grants: dict[Key, int] | None = None,
) -> Meter:
    return Meter(
        ledger=ledger if ledger is not None else Ledger(),
        tenant=config,
        periods=PeriodTracker(config.timezone, config.reset_at),
        clock=clock,
        grants=grants,
    )


@pytest.mark.parametrize(("count", "charged"), [("egress", 20), ("ingress", 300), ("both", 320)])
def test_only_the_tenants_count_directions_are_charged(count: str, charged: int) -> None:
    ledger = Ledger()
    m = meter(tenant(count), Clock(BEFORE_RESET), ledger)
    m.charge(300, 20)
    assert ledger.used(("t", DAY)) == charged
    assert m.used() == charged


def test_nothing_charged_adds_nothing() -> None:
    ledger = Ledger()
    m = meter(tenant("both"), Clock(BEFORE_RESET), ledger)
    m.charge(0, 0)
    m.charge(0, 5)
    assert ledger.pending_bytes() == 5


def test_bytes_are_charged_to_the_period_they_cross_the_wire_in() -> None:
    clock = Clock(BEFORE_RESET)
    ledger = Ledger()
    m = meter(tenant("egress"), clock, ledger)
    m.charge(0, 700)  # the old day, up to the reset
    assert m.period().key == DAY
    clock.now += 1.0  # midnight: the same request goes on in the new day
    m.charge(0, 400)
    assert m.period().key == NEXT
    assert ledger.used(("t", DAY)) == 700
    assert ledger.used(("t", NEXT)) == 400
    assert m.used() == 400  # the new day starts from what it was charged
    assert not m.blocked()


def test_a_reset_that_is_not_midnight_splits_there() -> None:
    reset_at_six = tenant("egress", reset=dt.time(6, 0))
    six = dt.datetime(2024, 3, 11, 6, 0, tzinfo=UTC).timestamp()
    clock = Clock(six - 0.5)
    ledger = Ledger()
    m = meter(reset_at_six, clock, ledger)
    m.charge(0, 10)
    clock.now = six
    m.charge(0, 20)
    assert (ledger.used(("t", DAY)), ledger.used(("t", NEXT))) == (10, 20)


def test_remaining_and_blocked_follow_the_cap() -> None:
    m = meter(tenant("egress", cap=1000), Clock(BEFORE_RESET))
    assert (m.remaining(), m.blocked()) == (1000, False)
    m.charge(0, 999)
    assert (m.remaining(), m.blocked()) == (1, False)
    m.charge(0, 1)
    assert (m.remaining(), m.blocked()) == (0, True)
    m.charge(0, 50)  # a response finished past the cap
    assert (m.remaining(), m.blocked()) == (-50, True)


def test_a_grant_raises_this_periods_cap_only() -> None:
    clock = Clock(BEFORE_RESET)
    grants: dict[Key, int] = {("t", DAY): 500}
    m = meter(tenant("egress", cap=1000), clock, grants=grants)
    assert m.cap == 1500
    m.charge(0, 1200)
    assert (m.remaining(), m.blocked()) == (300, False)
    clock.now += 1.0  # the grant was for yesterday
    assert m.cap == 1000


def test_meters_of_one_tenant_share_its_ledger() -> None:
    ledger = Ledger()
    clock = Clock(BEFORE_RESET)
    a, b = meter(tenant(), clock, ledger), meter(tenant(), clock, ledger)
    a.charge(0, 600)
    b.charge(0, 400)
    assert a.blocked()
    assert b.blocked()
    assert a.key() == b.key() == ("t", DAY)
