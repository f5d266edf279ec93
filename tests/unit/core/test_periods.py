"""Periods: local-day boundaries, DST gaps and folds, odd offsets, and tiling."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governor.core.periods import Period, PeriodTracker, period_at

H = 3600.0
UTC = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
SEOUL = ZoneInfo("Asia/Seoul")


def ts(iso: str, tz: ZoneInfo, fold: int = 0) -> float:
    """Unix time of the local wall-clock time ``iso`` in ``tz``."""
    return dt.datetime.fromisoformat(iso).replace(tzinfo=tz, fold=fold).timestamp()


def utc(iso: str) -> float:
    return ts(iso, UTC)


def t(s: str) -> dt.time:
    return dt.time.fromisoformat(s)


# -- plain days ---------------------------------------------------------------------------


def test_utc_midnight_reset() -> None:
    p = period_at(utc("2024-05-17 12:34:56"), UTC, t("00:00"))
    assert p == Period("2024-05-17", utc("2024-05-17 00:00"), utc("2024-05-18 00:00"))


def test_before_reset_time_belongs_to_yesterday() -> None:
    p = period_at(utc("2024-05-17 03:59:59"), UTC, t("04:00"))
    assert p.key == "2024-05-16"
    assert p.start == utc("2024-05-16 04:00")
    assert p.end == utc("2024-05-17 04:00")


def test_reset_instant_starts_the_new_period() -> None:
    now = utc("2024-05-17 04:00")
    p = period_at(now, UTC, t("04:00"))
    assert p.key == "2024-05-17"
    assert p.start == now
    assert period_at(now - 1e-3, UTC, t("04:00")).end == now


def test_year_boundary() -> None:
    p = period_at(ts("2024-12-31 23:00", SEOUL), SEOUL, t("09:00"))
    assert p.key == "2024-12-31"
    assert p.resets_at(SEOUL) == dt.datetime(2025, 1, 1, 9, tzinfo=SEOUL)


def test_seoul() -> None:
    p = period_at(utc("2024-05-17 00:30"), SEOUL, t("09:00"))  # 09:30 in Seoul
    assert p.key == "2024-05-17"
    assert p.start == utc("2024-05-17 00:00")
    assert p.end - p.start == 24 * H


def test_kathmandu_quarter_hour_offset() -> None:
    p = period_at(utc("2024-05-17 18:15"), KATHMANDU, t("00:00"))
    assert p.key == "2024-05-18"
    assert p.start == utc("2024-05-17 18:15")
    assert p.end == utc("2024-05-18 18:15")
    assert period_at(utc("2024-05-17 18:14:59"), KATHMANDU, t("00:00")).key == "2024-05-17"


def test_resets_at_is_aware_in_the_zone() -> None:
    p = period_at(ts("2024-05-17 12:00", BERLIN), BERLIN, t("06:00"))
    r = p.resets_at(BERLIN)
    assert r.tzinfo is BERLIN
    assert r.replace(tzinfo=None) == dt.datetime(2024, 5, 18, 6)
    assert r.timestamp() == p.end


# -- daylight-saving time -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        (NEW_YORK, "2024-03-10", 23),
        (NEW_YORK, "2024-11-03", 25),
        (NEW_YORK, "2024-07-01", 24),
        (BERLIN, "2024-03-31", 23),
        (BERLIN, "2024-10-27", 25),
        (LORD_HOWE, "2024-10-06", 23.5),
        (LORD_HOWE, "2024-04-07", 24.5),
    ],
)
def test_midnight_reset_day_lengths(tz: ZoneInfo, day: str, hours: float) -> None:
    p = period_at(ts(f"{day} 12:00", tz), tz, t("00:00"))
    assert p.key == day
    assert p.start == ts(f"{day} 00:00", tz)
    assert p.end - p.start == hours * H


def test_reset_in_spring_forward_gap_happens_when_the_gap_ends() -> None:
    # 2024-03-10 in New York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
    reset = t("02:30")
    p = period_at(ts("2024-03-10 12:00", NEW_YORK), NEW_YORK, reset)
    assert p.key == "2024-03-10"
    assert p.start == utc("2024-03-10 07:00")  # 03:00 EDT, the first instant after the gap
    assert dt.datetime.fromtimestamp(p.start, NEW_YORK).time() == t("03:00")
    assert p.end == ts("2024-03-11 02:30", NEW_YORK)
    assert p.end - p.start == 23.5 * H

    before = period_at(p.start - 1, NEW_YORK, reset)
    assert before.key == "2024-03-09"
    assert before.start == ts("2024-03-09 02:30", NEW_YORK)
    assert before.end == p.start


def test_reset_in_lord_howe_half_hour_gap() -> None:
    # 2024-10-06 on Lord Howe: 02:00 (+10:30) jumps to 02:30 (+11:00).
    p = period_at(ts("2024-10-06 12:00", LORD_HOWE), LORD_HOWE, t("02:15"))
    assert p.key == "2024-10-06"
    assert dt.datetime.fromtimestamp(p.start, LORD_HOWE).time() == t("02:30")
    assert p.start == utc("2024-10-05 15:30")


def test_ambiguous_reset_uses_first_occurrence() -> None:
    # 2024-11-03 in New York: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
    reset = t("01:30")
    first = ts("2024-11-03 01:30", NEW_YORK, fold=0)
    assert first == utc("2024-11-03 05:30")
    p = period_at(ts("2024-11-03 12:00", NEW_YORK), NEW_YORK, reset)
    assert p.key == "2024-11-03"
    assert p.start == first
    assert p.end - p.start == 25 * H

    # 01:15 EDT is before the first 01:30; 01:15 EST (fold=1) is after it.
    assert period_at(ts("2024-11-03 01:15", NEW_YORK, fold=0), NEW_YORK, reset).key == "2024-11-02"
    assert period_at(ts("2024-11-03 01:15", NEW_YORK, fold=1), NEW_YORK, reset).key == "2024-11-03"
    # The second 01:30 is not a reset.
    assert period_at(ts("2024-11-03 01:30", NEW_YORK, fold=1), NEW_YORK, reset) == p


def test_tzinfo_and_fold_on_reset_at_are_ignored() -> None:
    now = ts("2024-11-03 12:00", NEW_YORK)
    plain = period_at(now, NEW_YORK, t("01:30"))
    assert period_at(now, NEW_YORK, dt.time(1, 30, fold=1)) == plain
    assert period_at(now, NEW_YORK, dt.time(1, 30, tzinfo=UTC)) == plain


# -- tracker ------------------------------------------------------------------------------


def test_tracker_caches_within_a_period() -> None:
    tracker = PeriodTracker(BERLIN, t("00:00"))
    now = ts("2024-05-17 00:00", BERLIN)
    p = tracker.current(now)
    assert tracker.current(now + 12 * H) is p
    assert tracker.current(p.end - 1e-3) is p


def test_tracker_rolls_over_at_end_and_follows_a_clock_step_back() -> None:
    tracker = PeriodTracker(BERLIN, t("00:00"))
    p = tracker.current(ts("2024-10-26 12:00", BERLIN))
    q = tracker.current(p.end)
    assert q.key == "2024-10-27"
    assert q.start == p.end
    assert q.end - q.start == 25 * H
    assert tracker.current(p.end - 1) == p
    assert tracker.tz is BERLIN
    assert tracker.reset_at == t("00:00")


# -- properties ---------------------------------------------------------------------------

ZONES = [UTC, NEW_YORK, BERLIN, KATHMANDU, LORD_HOWE, SEOUL]
LENGTHS = {
    "UTC": {24 * H},
    "Asia/Kathmandu": {24 * H},
    "Asia/Seoul": {24 * H},
    "America/New_York": {23 * H, 24 * H, 25 * H},
    "Europe/Berlin": {23 * H, 24 * H, 25 * H},
    "Australia/Lord_Howe": {23.5 * H, 24 * H, 24.5 * H},
}
# 2000-01-01 .. 2037-12-31: every zone above has settled rules in this range.
instants = st.floats(min_value=946_684_800.0, max_value=2_145_830_400.0)
zones = st.sampled_from(ZONES)
any_reset = st.times()
# No zone above skips a wall-clock time outside 02:00-03:00 in the range.
reset_outside_gaps = st.times().filter(lambda r: r.hour not in (1, 2))


@settings(max_examples=500)
@given(now=instants, tz=zones, reset=any_reset)
def test_period_contains_now_and_tiles(now: float, tz: ZoneInfo, reset: dt.time) -> None:
    p = period_at(now, tz, reset)
    assert p.start <= now < p.end
    assert 23 * H <= p.end - p.start <= 25 * H
    nxt = period_at(p.end, tz, reset)
    assert nxt.start == p.end
    assert nxt.key > p.key
    assert period_at(p.start, tz, reset) == p
    assert dt.datetime.fromtimestamp(p.start, tz).date().isoformat() == p.key


@settings(max_examples=500)
@given(now=instants, tz=zones, reset=reset_outside_gaps)
def test_period_lengths_and_start_wall_time(now: float, tz: ZoneInfo, reset: dt.time) -> None:
    p = period_at(now, tz, reset)
    # Unix seconds are floats: a reset with microseconds leaves a rounding error in the difference.
    assert round(p.end - p.start, 3) in LENGTHS[str(tz)]
    start = dt.datetime.fromtimestamp(p.start, tz)
    assert start.time() == reset
    assert start.fold == 0
    assert p.resets_at(tz).time() == reset


@given(
    tz=zones,
    reset=any_reset,
    start=instants,
    steps=st.lists(st.floats(min_value=0, max_value=30 * H), max_size=30),
)
def test_tracker_agrees_with_period_at(
    tz: ZoneInfo, reset: dt.time, start: float, steps: list[float]
) -> None:
    tracker = PeriodTracker(tz, reset)
    now = start
    for step in steps:
        now += step
        assert tracker.current(now) == period_at(now, tz, reset)


def test_weeks_and_months_are_named_by_their_first_day_and_tile_time() -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from governor.core.periods import period_at

    tz = ZoneInfo("America/New_York")
    at = dt.datetime(2024, 3, 20, 12, tzinfo=tz).timestamp()
    week = period_at(at, tz, dt.time(0), "week")
    assert week.key == "2024-03-18"  # a Monday
    assert (week.end - week.start) / 3600 == 168
    sunday = period_at(at, tz, dt.time(0), "week", week_starts=6)
    assert sunday.key == "2024-03-17"
    month = period_at(at, tz, dt.time(0), "month")
    assert month.key == "2024-03-01"
    assert (month.end - month.start) / 3600 == 31 * 24 - 1  # DST began on the 10th
    after = period_at(month.end, tz, dt.time(0), "month")
    assert (after.key, after.start) == ("2024-04-01", month.end)
    before = period_at(month.start - 1, tz, dt.time(0), "month")
    assert (before.key, before.end) == ("2024-02-01", month.start)
    december = period_at(
        dt.datetime(2024, 12, 31, 23, 59, tzinfo=tz).timestamp(), tz, dt.time(0), "month"
    )
    assert dt.datetime.fromtimestamp(december.end, tz) == dt.datetime(2025, 1, 1, tzinfo=tz)
    late = period_at(dt.datetime(2024, 3, 1, 3, tzinfo=tz).timestamp(), tz, dt.time(6), "month")
    assert late.key == "2024-02-01"  # before the 1st's 06:00 reset: still February's
