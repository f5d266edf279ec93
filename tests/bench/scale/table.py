"""The issue's table: one row per figure, one column per tenant count, governor then nginx."""

from __future__ import annotations

from tests.bench.scale.common import Result

DASH = "\u2013"

# (system, metric, label, decimals)
ROWS: list[tuple[str, str, str, int]] = [
    ("governor", "check_s", "`governor check`, s", 2),
    ("governor", "startup_s", "start-up to /readyz 200, s", 2),
    ("governor", "rss_start_mib", "RSS after start, MiB", 0),
    ("governor", "rss_reloads_mib", "RSS after 3 reloads, MiB", 0),
    ("governor", "idle_cpu_pct", "CPU with no traffic, % of a core", 1),
    ("governor", "quiet_max_ms", "request stream, nothing happening: longest wait, ms", 1),
    ("governor", "reload_s", "SIGHUP until 'reloaded' (longest of 3), s", 2),
    ("governor", "reload_max_ms", "SIGHUP: longest wait of the stream, ms", 1),
    ("governor", "reload_p99_ms", "SIGHUP: p99 wait of the stream, ms", 1),
    ("governor", "metrics_s", "one /metrics scrape, s", 2),
    ("governor", "metrics_mb", "one /metrics scrape, MB", 1),
    ("governor", "metrics_max_ms", "/metrics: longest wait of the stream, ms", 1),
    ("governor", "status_s", "one /status page, s", 2),
    ("governor", "status_mb", "one /status page, MB", 1),
    ("governor", "status_max_ms", "/status: longest wait of the stream, ms", 1),
    ("governor", "flush_mean_ms", "Redis flush, mean (histogram), ms", 0),
    ("governor", "flush_within_pct", "flushes within flush_interval (1 s), %", 0),
    ("governor", "flush_errors", "flushes failed (store errors)", 0),
    ("fleet", "fleet_startup_s", "4 instances: all ready, s", 1),
    ("fleet", "fleet_stored_pct", "4 instances, 1,000 active: bytes in Redis, % of received", 2),
    ("fleet", "fleet_settle_s", "4 instances: Redis equal to the clients after, s", 2),
    ("fleet", "fleet_flush_mean_ms", "4 instances: flush mean, ms", 0),
    ("fleet", "fleet_within_pct", "4 instances: flushes within flush_interval, %", 0),
    ("fleet", "fleet_failed_flushes", "4 instances: flushes failed (store errors)", 0),
    ("governor", "rps_one", "1 KiB req/s, one tenant", 0),
    ("governor", "rps_one_ratio", "1 KiB req/s, one tenant ÷ 1-tenant config", 2),
    ("governor", "rps_spread", "1 KiB req/s, spread over 1,000 tenants", 0),
    ("governor", "rps_spread_ratio", "1 KiB req/s, spread ÷ 1-tenant config", 2),
    ("nginx", "check_s", "nginx map: `nginx -t`, s", 2),
    ("nginx", "startup_s", "nginx map: start-up, s", 2),
    ("nginx", "rss_start_mib", "nginx map: RSS after start, MiB", 0),
    ("nginx", "rss_reloads_mib", "nginx map: RSS after 3 reloads, MiB", 0),
    ("nginx", "quiet_max_ms", "nginx map: nothing happening, longest wait, ms", 1),
    ("nginx", "reload_s", "nginx map: SIGHUP until a new worker (longest of 3), s", 2),
    ("nginx", "reload_max_ms", "nginx map: reload, longest wait of the stream, ms", 1),
]


def _cell(row: Result | None, decimals: int) -> str:
    if row is None:
        return DASH
    if row.value is None:
        return row.note or "n/a"
    text = f"{row.value:,.{decimals}f}"
    return f"{text} ({row.note})" if row.note else text


def table(rows: list[Result], tenants: list[int]) -> str:
    """A Markdown table of the rows measured (rows never measured are left out)."""
    found = {(r.system, r.metric, r.tenants): r for r in rows}
    head = ["tenants in the config", *(f"{n:,}" for n in tenants)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, metric, label, decimals in ROWS:
        cells = [_cell(found.get((system, metric, n)), decimals) for n in tenants]
        if any(c != DASH for c in cells):
            lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)
