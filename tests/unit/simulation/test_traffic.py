"""Reading traffic: governor's own access log (both formats) and profiles."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from governor.errors import ConfigError
from governor.observe.accesslog import format_json, format_plain
from governor.observe.events import RequestRecord
from governor.simulation.command import SEED_PROFILE
from governor.simulation.traffic import Hit, expand, read_access_log, read_profile


def record(**changes: object) -> RequestRecord:
    r = RequestRecord(
        time=1708484400.25,
        tenant="site",
        client="2001:db8::7",
        method="GET",
        path='/a b"c',
        status=200,
        bytes_out=5120,
        bytes_in=87,
        duration=0.0123,
        outcome="proxied",
        upstream_seconds=0.0091,
        agent='Mozilla/5.0 "quoted" \\ x',
    )
    for name, value in changes.items():
        setattr(r, name, value)
    return r


@pytest.mark.parametrize("fmt", [format_plain, format_json])
def test_both_access_log_formats_read_back(tmp_path: Path, fmt: object) -> None:
    log = tmp_path / "access.log"
    lines = [fmt(record()), fmt(record(tenant="other")), fmt(record(agent=None, time=1708484401.5))]  # type: ignore[operator]
    log.write_text("\n".join(lines) + "\n")
    hits = read_access_log(log, "site")
    assert hits == [
        Hit(1708484400.25, "2001:db8::7", 'Mozilla/5.0 "quoted" \\ x', '/a b"c', 5120, 87),
        Hit(1708484401.5, "2001:db8::7", None, '/a b"c', 5120, 87),
    ]


def test_a_line_that_is_not_governors_is_named_by_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(format_plain(record()) + "\n127.0.0.1 - - [10/Oct/2000:13:55:36] GET\n")
    with pytest.raises(ConfigError) as caught:
        read_access_log(log, "site")
    problem = caught.value.problems[0]
    assert (problem.file, problem.line) == (str(log), 2)


def test_the_seed_profile_expands_the_same_every_time() -> None:
    profile = read_profile(SEED_PROFILE)
    seoul = ZoneInfo("Asia/Seoul")
    one, two = expand(profile, seoul), expand(profile, seoul)
    assert one == two
    assert len(one) == sum(s["requests"] for s in profile.streams)
    first = dt.datetime.fromtimestamp(one[0].time, seoul)
    last = dt.datetime.fromtimestamp(one[-1].time, seoul)
    assert first.date() == last.date() == profile.date
    scraper = [h for h in one if h.agent == "python-requests/2.32.3"]
    assert len({h.client for h in scraper}) == 1
    assert all(9 <= dt.datetime.fromtimestamp(h.time, seoul).hour < 15 for h in scraper)


def test_profile_problems_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "date: 2026-13-01\nstreams:\n  - {visitors: 0, requests: 5, window: ['09:00', '25:00'],"
        " sizes: [{share: 150%, size: big}], colour: red}\n"
    )
    with pytest.raises(ConfigError) as caught:
        read_profile(path)
    keys = {p.key for p in caught.value.problems}
    assert keys == {
        "date",
        "streams[0].visitors",
        "streams[0].window",
        "streams[0].sizes[0].share",
        "streams[0].sizes[0].size",
        "streams[0].colour",
    }
