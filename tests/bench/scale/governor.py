"""One governor with N tenants (Redis store, ``store_timeout`` 500 ms, ``flush_interval`` 1 s,
pinned to the proxy core): check, start-up, RSS, idle CPU, reloads, a scrape, the status page,
its flushes, and 1 KiB requests/s beside the 1-tenant governor that runs all along."""

from __future__ import annotations

import http.client
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.bench.load import parse_wrk, run_wrk
from tests.bench.procs import Server, cpu_times, rss_bytes
from tests.bench.scale import gen
from tests.bench.scale.common import (
    Lab,
    MiB,
    answers,
    get,
    log_count,
    timed_run,
    timeout_note,
    wait_for,
)
from tests.bench.scale.stream import RequestStream
from tests.support import free_port

RELOADED = "reloaded "  # governor's log line once a reload is in place
REJECTED = "reload rejected"
FLUSH_FAILED = "store flush failed"
FLUSH_INTERVAL = 1.0
SYSTEM = "governor"


class Governor(Server):
    """``governor serve`` with its config and admin port."""

    conf: Path
    admin: int


def start_governor(
    lab: Lab, stack: ExitStack, name: str, tenants: int, cpus: frozenset[int] | None
) -> Governor:
    """Write the config and start ``governor serve`` (not waited for); stopped with ``stack``."""
    folder, port, admin = lab.tmp / name, free_port(), free_port()
    conf = gen.governor_yaml(
        folder / "governor.yaml",
        tenants=tenants,
        listen=port,
        admin=admin,
        upstream=lab.origin,
        store=lab.redis.url,
    )
    argv = [sys.executable, "-m", "governor", "serve", "-c", str(conf)]
    server = Governor(name, argv, folder / "out.log", cpus, port=port)
    server.conf, server.admin = conf, admin
    stack.callback(server.stop)
    server.start()
    return server


def ready(server: Governor) -> Callable[[], bool]:
    return lambda: answers(server.admin, "/readyz")


def flush_stats(text: str, interval: float) -> dict[str, float]:
    """From a /metrics page: flushes, their mean seconds, the share within ``interval``
    (the histogram's bucket ``le`` = interval) and the store errors."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("governor_store_flush_seconds_count"):
            out["flushes"] = float(line.split()[-1])
        elif line.startswith("governor_store_flush_seconds_sum"):
            out["flush_sum_s"] = float(line.split()[-1])
        elif line.startswith("governor_store_flush_seconds_bucket"):
            le = re.search(r'le="([^"]+)"', line)
            if le and le.group(1) != "+Inf" and float(le.group(1)) == interval:
                out["within"] = float(line.split()[-1])
        elif line.startswith("governor_store_errors_total"):
            out["store_errors"] = out.get("store_errors", 0.0) + float(line.split()[-1])
    return out


def _reload(lab: Lab, server: Governor, tenants: int) -> tuple[float | None, dict[str, Any]]:
    """One SIGHUP under the request stream: (seconds to 'reloaded', the stream's summary)."""
    timeout = lab.settings.timeout
    before = log_count(server, RELOADED) + log_count(server, REJECTED)
    with RequestStream(server.port, gen.host(0), timeout=timeout) as stream:
        time.sleep(0.3)
        assert server.proc is not None
        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGHUP)
        took: float | None = None
        while time.monotonic() - started < timeout:
            if log_count(server, RELOADED) + log_count(server, REJECTED) > before:
                took = time.monotonic() - started
                break
            time.sleep(0.01)
        time.sleep(0.3)
    if log_count(server, REJECTED):
        raise RuntimeError(f"governor rejected its own config\n{server.log_tail()}")
    return took, stream.summary()


def _during(lab: Lab, server: Governor, path: str) -> tuple[Any, dict[str, Any]]:
    """GET ``path`` on the admin port under the request stream: (the fetch or None, summary)."""
    with RequestStream(server.port, gen.host(0), timeout=lab.settings.timeout) as stream:
        time.sleep(0.3)
        try:
            fetched: Any = get(server.admin, path, timeout=lab.settings.timeout)
        except (OSError, http.client.HTTPException) as exc:
            fetched = exc
        time.sleep(0.3)
    return fetched, stream.summary()


def _wrk(lab: Lab, server: Governor, spread: Path | None) -> dict[str, Any]:
    s = lab.settings
    url = f"http://127.0.0.1:{server.port}/1k.bin"
    if spread is None:
        r = run_wrk(
            lab.tools.wrk,
            lab.totals_lua,
            url,
            gen.host(0),
            seconds=s.wrk_seconds,
            connections=s.connections,
        )
    else:
        argv = [lab.tools.wrk, "-t1", f"-c{s.connections}", f"-d{s.wrk_seconds:g}s", "--latency"]
        argv += ["-s", str(spread), url]
        done = timed_run(argv, s.wrk_seconds + 60)
        r = parse_wrk(done.output)
    return {"rps": r.rps, "non_2xx": r.non_2xx, "socket_errors": r.socket_errors}


def measure_rps(lab: Lab, server: Governor, baseline: Governor, tenants: int) -> None:
    """Interleaved rounds of wrk: the 1-tenant baseline, all to one tenant, spread over
    ``active`` tenants; each a median, as a ratio of the baseline's median."""
    active = min(lab.settings.active, tenants)
    spread = gen.spread_lua(lab.tmp, active, lab.totals_lua.read_text()) if active > 1 else None
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "one": [], "spread": []}
    for _ in range(lab.settings.wrk_rounds):
        runs["base"].append(_wrk(lab, baseline, None))
        runs["one"].append(_wrk(lab, server, None))
        if spread is not None:
            runs["spread"].append(_wrk(lab, server, spread))
    base = statistics.median(r["rps"] for r in runs["base"])
    for kind in ("one", "spread"):
        if not runs[kind]:
            continue
        rps = statistics.median(r["rps"] for r in runs[kind])
        bad = sum(r["non_2xx"] + r["socket_errors"] for r in runs[kind])
        note = f"{bad} non-2xx or socket errors" if bad else ""
        lab.rec.add(tenants, SYSTEM, f"rps_{kind}", rps, note, runs=runs[kind])
        lab.rec.add(tenants, SYSTEM, f"rps_{kind}_ratio", rps / base, baseline_rps=base)


def _scrape(lab: Lab, server: Governor, tenants: int, what: str, path: str) -> str | None:
    fetched, summary = _during(lab, server, path)
    rec = lab.rec
    if isinstance(fetched, Exception):
        note = f"{type(fetched).__name__}: {fetched}"
        if isinstance(fetched, TimeoutError):
            note = timeout_note(lab.settings.timeout)
        rec.add(tenants, SYSTEM, f"{what}_s", None, note)
        rec.add(tenants, SYSTEM, f"{what}_max_ms", summary["max_ms"], **summary)
        return None
    note = "" if fetched.status == 200 else f"status {fetched.status}"
    rec.add(tenants, SYSTEM, f"{what}_s", fetched.seconds, note)
    rec.add(tenants, SYSTEM, f"{what}_mb", fetched.size / 1e6)
    rec.add(tenants, SYSTEM, f"{what}_max_ms", summary["max_ms"], **summary)
    return bytes(fetched.body).decode(errors="replace")


def _flushes(lab: Lab, server: Governor, tenants: int, metrics: str | None) -> None:
    failed = log_count(server, FLUSH_FAILED)
    if metrics is None:
        lab.rec.add(tenants, SYSTEM, "flush_mean_ms", None, "no /metrics page", log_failed=failed)
        return
    st = flush_stats(metrics, FLUSH_INTERVAL)
    n = st.get("flushes", 0.0)
    mean = 1000 * st.get("flush_sum_s", 0.0) / n if n else None
    within = 100 * st.get("within", 0.0) / n if n else None
    lab.rec.add(tenants, SYSTEM, "flush_mean_ms", mean, "", **st, log_failed=failed)
    lab.rec.add(tenants, SYSTEM, "flush_within_pct", within, "", **st)
    lab.rec.add(tenants, SYSTEM, "flush_errors", st.get("store_errors", 0.0), log_failed=failed)


def measure_governor(lab: Lab, tenants: int, baseline: Governor) -> None:
    """Every single-instance row for ``tenants``."""
    rec, timeout = lab.rec, lab.settings.timeout
    with ExitStack() as stack:
        server = start_governor(lab, stack, f"gov-{tenants}", tenants, lab.cores.proxy)
        started = time.monotonic()
        argv = [sys.executable, "-m", "governor", "check", "-c", str(server.conf)]
        if lab.cores.proxy:  # on the core governor serves on, like serve
            argv = ["taskset", "-c", ",".join(map(str, lab.cores.proxy)), *argv]
        # check while the server starts would share the core: wait for the start first
        took = wait_for([server], [ready(server)], timeout)
        if took is None:
            rec.add(tenants, SYSTEM, "startup_s", None, timeout_note(timeout))
            return
        rec.add(tenants, SYSTEM, "startup_s", time.monotonic() - started)
        rec.add(tenants, SYSTEM, "rss_start_mib", rss_bytes(server.pids()) / MiB)
        pids = server.pids()
        cpu0, t0 = cpu_times(pids), time.monotonic()
        time.sleep(lab.settings.idle_seconds)
        cpu1 = cpu_times(server.pids())
        busy = (cpu1[0] + cpu1[1] - cpu0[0] - cpu0[1]) / (time.monotonic() - t0)
        rec.add(tenants, SYSTEM, "idle_cpu_pct", 100 * busy)
        with RequestStream(server.port, gen.host(0), timeout=timeout) as quiet:
            time.sleep(2)
        rec.add(tenants, SYSTEM, "quiet_max_ms", quiet.summary()["max_ms"], **quiet.summary())
        reloads: list[tuple[float | None, dict[str, Any]]] = []
        for _ in range(3):
            reloads.append(_reload(lab, server, tenants))
            if reloads[-1][0] is None:
                break
        rec.reloads(tenants, SYSTEM, reloads, timeout)
        rec.add(tenants, SYSTEM, "rss_reloads_mib", rss_bytes(server.pids()) / MiB)
        metrics = _scrape(lab, server, tenants, "metrics", "/metrics")
        _scrape(lab, server, tenants, "status", "/status")
        _flushes(lab, server, tenants, metrics)
        measure_rps(lab, server, baseline, tenants)
        server.stop()
    done = timed_run(argv, timeout)
    if done.seconds is None:
        rec.add(tenants, SYSTEM, "check_s", None, timeout_note(timeout))
    else:
        note = "" if done.returncode == 0 else f"exit {done.returncode}: {done.output[-300:]}"
        rec.add(tenants, SYSTEM, "check_s", done.seconds, note)
