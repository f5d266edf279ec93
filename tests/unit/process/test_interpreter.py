"""What ``governor serve`` sets in the interpreter before it serves."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from governor.process.serve import GC_GEN0_THRESHOLD, SWITCH_INTERVAL, _tune_interpreter


@pytest.fixture
def restored() -> Iterator[None]:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    yield
    sys.setswitchinterval(interval)
    gc.set_threshold(*thresholds)
    gc.unfreeze()


@pytest.mark.usefixtures("restored")
def test_a_background_thread_hands_the_loop_the_lock_every_half_millisecond() -> None:
    """A scrape's render or a reload's build runs in a thread: at CPython's 5 ms switch
    interval requests beside a 20,000-tenant scrape waited 16-17 ms, 4-6 times the
    control of test_scale_scrape, which no longer tells that apart from its 2-3 times;
    this holds the setting itself."""
    sys.setswitchinterval(0.005)
    _tune_interpreter()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
    assert SWITCH_INTERVAL <= 0.0005
    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    assert gc.get_freeze_count() > 0
