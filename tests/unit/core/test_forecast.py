"""The exhaustion forecast: the moving rate, and the walk to the reset with history."""

from __future__ import annotations

import pytest

from governor.core.forecast import RateEstimate, exhaustion

DAY = "2024-02-21"


def test_a_steady_growth_is_its_rate_and_a_new_period_starts_over() -> None:
    est = RateEstimate()
    assert est.observe(0.0, 0, DAY, 900) == 0.0  # the first observation is a baseline
    for minute in range(1, 11):
        rate = est.observe(minute * 60.0, minute * 6000, DAY, 900)
    assert rate == pytest.approx(100.0)  # 6000 bytes a minute
    est.observe(660.0, 66_000 + 60_000, DAY, 900)  # a burst moves it a little, not all
    assert 100.0 < est.rate < 200.0
    assert est.observe(700.0, 0, "2024-02-22", 900) == 0.0
    assert est.observe(760.0, 0, "2024-02-22", 900) == 0.0  # a reset never makes it negative


def test_now_plus_what_is_left_over_the_rate_or_none_past_the_reset() -> None:
    assert exhaustion(now=1000.0, used=0, cap=10_000, end=1_000_000.0, rate=10.0) == 2000.0
    assert exhaustion(now=1000.0, used=0, cap=10_000, end=1500.0, rate=10.0) is None
    assert exhaustion(now=1000.0, used=0, cap=10_000, end=1_000_000.0, rate=0.0) is None
    assert exhaustion(now=1000.0, used=20_000, cap=10_000, end=9e9, rate=0.0) == 1000.0


def test_the_same_hour_of_the_previous_day_weighs_half() -> None:
    quiet_now_busy_later = [0.0] * 24
    quiet_now_busy_later[1] = 10.0  # the hour after this one was busy yesterday
    at = exhaustion(
        now=0.0,
        used=0,
        cap=3600 * 5 + 1800 * 5,
        end=86_400.0,
        rate=5.0,
        hourly=quiet_now_busy_later,
        hour_of=0,
    )
    # Hour 0: (5 + 0) / 2 = 2.5 B/s for 3600 s = 9000; hour 1: (5 + 10) / 2 = 7.5 B/s for the
    # remaining 18000 bytes: 2400 s more.
    assert at == pytest.approx(3600 + 2400)
