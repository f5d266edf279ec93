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


def _wrk_metrics(test: str, size: str) -> list[Metric]:
    return [
        Metric(test, "rps", f"{size}: requests/s", 0),
        Metric(test, "p50_ms", f"{size}: p50 latency, ms", 2),
        Metric(test, "p99_ms", f"{size}: p99 latency, ms", 2),
        Metric(test, "cpu_us", f"{size}: proxy CPU µs/request", 0),
        Metric(test, "cpu_user_us", f"{size}: of which user space, µs", 0),
        Metric(test, "cpu_pct", f"{size}: proxy CPU, % of a core", 0, ratio=False),
        Metric(test, "load_pct", f"{size}: load core busy, %", 0, ratio=False),
    ]


def _stream_metrics(test: str, streams: str) -> list[Metric]:
    return [
        Metric(test, "mib_s", f"{streams}: MiB/s", 0),
        Metric(test, "cpu_s_gib", f"{streams}: proxy CPU s/GiB", 2),
        Metric(test, "cpu_user_s_gib", f"{streams}: of which user space, s", 2),
        Metric(test, "rss_peak_mib", f"{streams}: peak RSS, MiB", 1),
        Metric(test, "rss_steady_mib", f"{streams}: steady RSS, MiB", 1),
    ]


HANDSHAKES = "new TLS connections (full handshakes)"
HANDSHAKE_METRICS = [
    Metric("handshakes-tls", "conns_s", f"{HANDSHAKES}: per second", 0),
    Metric("handshakes-tls", "cpu_us", f"{HANDSHAKES}: proxy CPU µs each", 0),
    Metric("handshakes-tls", "cpu_user_us", f"{HANDSHAKES}: of which user space, µs", 0),
    Metric("handshakes-tls", "cpu_pct", f"{HANDSHAKES}: proxy CPU, % of a core", 0, ratio=False),
    Metric("handshakes-tls", "load_pct", f"{HANDSHAKES}: load core busy, %", 0, ratio=False),
]


def metrics(big: str) -> list[Metric]:
    """The table's rows, each TLS row after its plain HTTP one; ``big`` names the file of
    the stream tests (1 GiB, or 10 MiB)."""
    return [
        *_wrk_metrics("wrk-1k", "1 KiB"),
        *_wrk_metrics("wrk-1k-tls", "1 KiB over TLS"),
        *_wrk_metrics("wrk-64k", "64 KiB"),
        Metric("mixed", "rps", f"1 KiB beside downloads of {big}: requests/s", 0),
        Metric("mixed", "p50_ms", f"1 KiB beside downloads of {big}: p50 latency, ms", 2),
        Metric("mixed", "p99_ms", f"1 KiB beside downloads of {big}: p99 latency, ms", 2),
        Metric("mixed", "downloads_mib_s", f"1 KiB beside downloads of {big}: downloads, MiB/s", 0),
        *HANDSHAKE_METRICS,
        *_stream_metrics("stream-1", f"{big}, 1 stream"),
        *_stream_metrics("stream-1-tls", f"{big}, 1 stream over TLS"),
        *_stream_metrics("stream-4", f"{big}, 4 streams"),
    ]


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


def _ratio(rows: list[Row], metric: Metric, baseline: str, governor: str) -> float | None:
    """``governor``'s median over ``baseline``'s; None without both."""
    base, values = _values(rows, baseline, metric), _values(rows, governor, metric)
    if not base or not values or statistics.median(base) == 0:
        return None
    return statistics.median(values) / statistics.median(base)


def _joined(values: list[float | None], form: str = "{:.2f}") -> str:
    return " · ".join(DASH if v is None else form.format(v) for v in values)


def _ratios(rows: list[Row], metric: Metric, baseline: str) -> str:
    if not metric.ratio:
        return DASH
    return _joined([_ratio(rows, metric, baseline, governor) for governor in GOVERNORS])


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


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _verdicts(values: list[float | None], target: float) -> str:
    return " · ".join(
        DASH if v is None else ("met" if v >= target - 1e-9 else "NOT met") for v in values
    )


def tls_summary(rows: list[Row], labels: dict[str, str], big: str) -> str:
    """TLS against its targets (governor ÷ nginx at 1 KiB over TLS no more than 0.05 below
    the plain ratio; the big file over TLS, 1 stream, at least 0.8x HAProxy), and what
    held the handshake rate back for each setup (its last round)."""
    rps = Metric("wrk-1k", "rps", "", 0)
    rps_tls = Metric("wrk-1k-tls", "rps", "", 0)
    stream_tls = Metric("stream-1-tls", "mib_s", "", 0)
    names = " · ".join(k.removeprefix("gov-") for k in GOVERNORS)
    lines = [f"TLS (governor {names}; medians):"]
    for baseline in BASELINES:
        plain = [_ratio(rows, rps, baseline, g) for g in GOVERNORS]
        tls = [_ratio(rows, rps_tls, baseline, g) for g in GOVERNORS]
        drop = [_minus(t, p) for t, p in zip(tls, plain, strict=True)]
        target = f"; target >= -0.05: {_verdicts(drop, -0.05)}" if baseline == "nginx" else ""
        lines.append(
            f"  1 KiB requests/s ÷ {labels.get(baseline, baseline)}: over TLS "
            f"{_joined(tls)}, plain {_joined(plain)}; TLS ratio minus plain ratio "
            f"{_joined(drop, '{:+.2f}')}{target}"
        )
    over = [_ratio(rows, stream_tls, "haproxy", g) for g in GOVERNORS]
    lines.append(
        f"  {big}, 1 stream over TLS, MiB/s ÷ HAProxy: {_joined(over)}; "
        f"target >= 0.80: {_verdicts(over, 0.8)}"
    )
    lines.append(f"  {HANDSHAKES}, what held the rate back (last round):")
    last = {r.setup: r for r in rows if r.test == "handshakes-tls" and r.round > 0}
    for key, label in labels.items():
        if key in last:
            lines.append(f"    {label}: {last[key].info.get('limit', DASH)}")
    return "\n".join(lines)
