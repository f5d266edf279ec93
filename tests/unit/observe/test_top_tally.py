"""TopTally tallies each request into the tables of its tenant's period, between takes."""

from __future__ import annotations

from pathlib import Path

from governor.observe.top import TopTally
from tests.support import FakeClock, seoul
from tests.unit.observe.test_activity import runtime, served


def _bytes(entries: list[tuple[str, str, str, str, int, int]]) -> dict[tuple[str, str], int]:
    """Bytes per (tenant, period) in the path dimension (every request has one path)."""
    out: dict[tuple[str, str], int] = {}
    for name, period, dimension, _item, nbytes, _requests in entries:
        if dimension == "path":
            out[name, period] = out.get((name, period), 0) + nbytes
    return out


def test_every_request_lands_in_its_own_tenant_and_period_across_takes(tmp_path: Path) -> None:
    clock = FakeClock(seoul(2024, 3, 1, 23, 59))
    tally = TopTally(runtime(tmp_path, 2, clock))
    tally.request_done(served("t0", 100))
    tally.request_done(served("t0", 100))
    tally.request_done(served("t1", 1000))
    tally.request_done(served("t0", 100))  # back to the first tenant
    first = _bytes(tally.take())
    assert first == {("t0", "2024-03-01"): 300, ("t1", "2024-03-01"): 1000}  # egress: out only
    tally.request_done(served("t0", 5))  # after a take: in the next one, not the taken tables
    clock.advance(120)  # past midnight in Seoul: the next period
    tally.request_done(served("t0", 7))
    assert _bytes(tally.take()) == {("t0", "2024-03-01"): 5, ("t0", "2024-03-02"): 7}
    assert tally.take() == []
