"""The rows one measurement makes, and the table of medians they add up to."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

CEILING = "direct"
BASELINES = ("nginx", "haproxy")
GOVERNORS = ("gov-sqlite", "gov-redis", "gov-w2")
DASH = "\u2013"  # an en dash, for ranges and missing values


@dataclass
class Row:
    """One measurement of one setup in one round (round 0: the warm-up)."""

    round: int
    setup: str
    test: str
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    test: str
    key: str
    label: str
    decimals: int
    ratio: bool = True  # whether governor ÷ nginx / HAProxy means anything


def metrics(big: str) -> list[Metric]:
    """The table's rows; ``big`` names the file of the stream tests (1 GiB, or 10 MiB)."""
    table: list[Metric] = []
    for test, size in (("wrk-1k", "1 KiB"), ("wrk-64k", "64 KiB")):
        table += [
            Metric(test, "rps", f"{size}: requests/s", 0),
            Metric(test, "p50_ms", f"{size}: p50 latency, ms", 2),
            Metric(test, "p99_ms", f"{size}: p99 latency, ms", 2),
            Metric(test, "cpu_us", f"{size}: proxy CPU µs/request", 0),
            Metric(test, "cpu_user_us", f"{size}: of which user space, µs", 0),
            Metric(test, "cpu_pct", f"{size}: proxy CPU, % of a core", 0, ratio=False),
            Metric(test, "load_pct", f"{size}: load core busy, %", 0, ratio=False),
        ]
    for test, streams in (("stream-1", "1 stream"), ("stream-4", "4 streams")):
        table += [
            Metric(test, "mib_s", f"{big}, {streams}: MiB/s", 0),
            Metric(test, "cpu_s_gib", f"{big}, {streams}: proxy CPU s/GiB", 2),
            Metric(test, "cpu_user_s_gib", f"{big}, {streams}: of which user space, s", 2),
            Metric(test, "rss_peak_mib", f"{big}, {streams}: peak RSS, MiB", 1),
            Metric(test, "rss_steady_mib", f"{big}, {streams}: steady RSS, MiB", 1),
        ]
    return table


def _number(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def _values(rows: list[Row], setup: str, metric: Metric) -> list[float]:
    return [
        row.metrics[metric.key]
        for row in rows
        if row.round > 0 and row.setup == setup and row.test == metric.test
        if metric.key in row.metrics
    ]


def _cell(values: list[float], decimals: int) -> str:
    if not values:
        return DASH
    median = _number(statistics.median(values), decimals)
    if len(values) == 1:
        return median
    return f"{median} ({_number(min(values), decimals)}{DASH}{_number(max(values), decimals)})"


def _ratios(rows: list[Row], metric: Metric, baseline: str) -> str:
    base = _values(rows, baseline, metric)
    if not metric.ratio or not base or statistics.median(base) == 0:
        return DASH
    parts = []
    for governor in GOVERNORS:
        values = _values(rows, governor, metric)
        ratio = statistics.median(values) / statistics.median(base) if values else None
        parts.append(DASH if ratio is None else f"{ratio:.2f}")
    return " · ".join(parts)


def table(rows: list[Row], labels: dict[str, str], big: str) -> str:
    """A Markdown table: per metric, each setup's median (min to max over rounds), and each
    governor's median over nginx's and HAProxy's."""
    setups = [key for key in (CEILING, *BASELINES, *GOVERNORS) if key in labels]
    ratio_names = " · ".join(k.removeprefix("gov-") for k in GOVERNORS)
    head = [
        "metric",
        *(labels[k] for k in setups),
        f"governor ÷ nginx ({ratio_names})",
        f"governor ÷ HAProxy ({ratio_names})",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in metrics(big):
        cells = [_cell(_values(rows, k, metric), metric.decimals) for k in setups]
        ratios = [_ratios(rows, metric, baseline) for baseline in BASELINES]
        lines.append("| " + " | ".join([metric.label, *cells, *ratios]) + " |")
    return "\n".join(lines)
