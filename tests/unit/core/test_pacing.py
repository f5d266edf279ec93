"""The pacing rate: what is left over the time to the reset, less the other responses'
use, split among paced responses and instances, never below the floor."""

from __future__ import annotations

import pytest

from governor.config import PacingConfig
from governor.core.pacing import Pacer

PACING = PacingConfig(0.5, 1000)
CAP = 1_000_000
END = 10_000.0


def test_no_pacing_before_pacing_from() -> None:
    assert Pacer().rate(PACING, now=0.0, used=CAP // 2 - 1, cap=CAP, end=END) is None


def test_what_is_left_spread_over_the_time_to_the_reset() -> None:
    rate = Pacer().rate(PACING, now=9_900.0, used=600_000, cap=CAP, end=END)
    assert rate == pytest.approx(400_000 / 100)


def test_the_floor_and_the_split_among_paced_responses() -> None:
    pacer = Pacer()
    pacer.active = 4
    rate = pacer.rate(PACING, now=9_990.0, used=600_000, cap=CAP, end=END)
    assert rate == pytest.approx(400_000 / 10 / 4)
    late = pacer.rate(PACING, now=0.0, used=999_000, cap=CAP, end=END)
    assert late == 1000.0  # 1000 bytes over 10,000 s, split four ways: the floor


def test_the_other_responses_use_comes_off_the_rate() -> None:
    pacer = Pacer()
    pacer.sample(0.0, 600_000)
    pacer.count(50_000)  # 50 KB/s here, none of it paced: pages
    pacer.sample(1.0, 650_000)
    assert pacer.local_rate == pytest.approx(50_000)
    assert pacer.share() == pytest.approx(1.0)
    rate = pacer.rate(PACING, now=1.0, used=650_000, cap=CAP, end=2.0)
    assert rate == pytest.approx(350_000 - 50_000)


def test_an_instance_takes_its_part_of_the_fleets_traffic() -> None:
    pacer = Pacer()
    pacer.sample(0.0, 500_000)
    pacer.count(10_000)
    pacer.paced += 10_000  # all of it paced here
    pacer.sample(1.0, 540_000)  # the fleet sent 40 KB meanwhile: this instance a quarter
    assert pacer.share() == pytest.approx(0.25)
    rate = pacer.rate(PACING, now=1.0, used=540_000, cap=CAP, end=101.0)
    assert rate == pytest.approx(0.25 * 460_000 / 100)
