"""The ``limits`` section and the hardening timeouts: defaults, forms, and each problem's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from governor.config import LimitsConfig, Timeouts
from governor.http1.heads import Limits
from tests.unit.config.test_config import cfg, load, only, problems


def test_defaults_are_sane_and_match_the_parser(tmp_path: Path) -> None:
    config = load(tmp_path, cfg())
    assert config.limits == LimitsConfig()
    limits, parser = config.limits, Limits()
    assert (limits.request_line, limits.header_field) == (parser.request_line, parser.field)
    assert (limits.header_total, limits.header_count) == (parser.head, parser.fields)
    assert limits.body_max == 2**30
    assert (limits.connections, limits.connections_per_client) == (10_000, 256)
    timeouts = config.timeouts
    assert timeouts.request_header == 60.0
    assert timeouts.body_min_rate == 1024
    assert timeouts.websocket_idle == 600.0
    assert timeouts.send == 60.0


def test_every_limit_and_timeout_set(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        cfg(
            tail=(
                "limits:\n"
                "  request_line: 4 KiB\n"
                "  header_field: 2000\n"
                "  header_total: 32KiB\n"
                "  header_count: 50\n"
                "  body_max: 10 MB\n"
                "  connections: 500\n"
                "  connections_per_client: 0\n"
                "timeouts:\n"
                "  request_header: 10s\n"
                "  body_min_rate: 500 B/s\n"
                "  websocket_idle: 5m\n"
                "  send: 20s\n"
            )
        ),
    )
    assert config.limits == LimitsConfig(
        request_line=4096,
        header_field=2000,
        header_total=32768,
        header_count=50,
        body_max=10_000_000,
        connections=500,
        connections_per_client=0,
    )
    assert config.timeouts == Timeouts(
        request_header=10.0, body_min_rate=500, websocket_idle=300.0, send=20.0
    )


@pytest.mark.parametrize(
    ("value", "rate"), [("0", 0), ("1 KiB", 1024), ("2KB/s", 2000), ("100", 100)]
)
def test_body_min_rate_takes_a_size_per_second(tmp_path: Path, value: str, rate: int) -> None:
    config = load(tmp_path, cfg(tail=f"timeouts:\n  body_min_rate: {value}\n"))
    assert config.timeouts.body_min_rate == rate


def test_body_max_zero_means_no_limit(tmp_path: Path) -> None:
    assert load(tmp_path, cfg(tail="limits:\n  body_max: 0\n")).limits.body_max == 0


@pytest.mark.parametrize(
    ("tail", "line", "key", "fragment"),
    [
        ("limits:\n  request_line: 0\n", 8, "limits.request_line", "greater than zero"),
        ("limits:\n  header_field: lots\n", 8, "limits.header_field", "is not a size"),
        ("limits:\n  header_total: 2 MiB\n", 8, "limits.header_total", "at most 1 MiB"),
        ("limits:\n  header_count: 0\n", 8, "limits.header_count", "from 1 to"),
        ("limits:\n  header_count: 1.5\n", 8, "limits.header_count", "whole number"),
        ("limits:\n  body_max: -1\n", 8, "limits.body_max", "must not be negative"),
        ("limits:\n  body_max: [1]\n", 8, "limits.body_max", "got a list"),
        ("limits:\n  connections: 0\n", 8, "limits.connections", "from 1 to"),
        ("limits:\n  connections_per_client: -3\n", 8, "limits.connections_per_client", "0: no"),
        ("limits:\n  conections: 5\n", 8, "limits.conections", "did you mean connections?"),
        ("limits: 5\n", 7, "limits", "expected a mapping"),
        ("timeouts:\n  request_header: 0s\n", 8, "timeouts.request_header", "greater than zero"),
        ("timeouts:\n  websocket_idle: soon\n", 8, "timeouts.websocket_idle", "not a duration"),
        ("timeouts:\n  send: 0s\n", 8, "timeouts.send", "greater than zero"),
        ("timeouts:\n  send: -1s\n", 8, "timeouts.send", "must not be negative"),
        ("timeouts:\n  body_min_rate: fast\n", 8, "timeouts.body_min_rate", "is not a rate"),
        ("timeouts:\n  body_min_rate: 1 KiB/h\n", 8, "timeouts.body_min_rate", "/s"),
    ],
)
def test_single_problem(tmp_path: Path, tail: str, line: int, key: str, fragment: str) -> None:
    problem = only(tmp_path, cfg(tail=tail))
    assert (problem.line, problem.key) == (line, key), str(problem)
    assert fragment in problem.message, str(problem)


def test_head_parts_must_fit_in_the_whole_head(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        cfg(tail="limits:\n  header_total: 4 KiB\n  request_line: 8 KiB\n  header_field: 16000\n"),
    )
    assert [(p.line, p.key) for p in found] == [
        (9, "limits.request_line"),
        (10, "limits.header_field"),
    ]
    assert "more than limits.header_total (4096 bytes)" in found[0].message
    # Only header_total written: the default request_line (8 KiB) does not fit, and the
    # problem points at the key that made it so.
    (problem,) = problems(tmp_path, cfg(tail="limits:\n  header_total: 1000\n"))[:1]
    assert (problem.line, problem.key) == (8, "limits.request_line")
