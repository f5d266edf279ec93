"""``make bench``: governor against nginx and HAProxy on this machine.

    .venv/bin/python -m tests.bench            # 3 rounds of 5 s wrk runs, the 1 GiB file
    BENCH_QUICK=1 .venv/bin/python -m tests.bench    # 1 round of 2 s, 10 MiB instead of 1 GiB
    BENCH_SECONDS=10 BENCH_ROUNDS=5 .venv/bin/python -m tests.bench

Starts, each on free loopback ports and in a temporary folder, an origin nginx serving
static files, nginx as a reverse proxy, HAProxy with a per-Host byte-counting stick
table, and governor three ways (SQLite, Redis, ``workers: 2``). Each listens on plain
HTTP and terminates TLS (1.3, as the clients negotiate it) with the same ECDSA P-256
certificate, made for the run by a test CA in the temporary folder; the origin stays
plain HTTP behind them. It measures them, and the origin without a proxy (the load
generators' ceiling), in interleaved rounds, verifies every count, prints a table of
medians and the TLS targets, and writes the raw rows to tests/bench/results/<time>.jsonl.
Every process it starts is stopped on the way out, on an error or Ctrl-C too. See
measure.py for what is checked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TextIO

from tests.bench.configs import make_certificate
from tests.bench.lab import Setup, governor_count, plan_cores, start_setups
from tests.bench.load import write_lua
from tests.bench.measure import Bench, Settings, tests, warm_up
from tests.bench.report import Row, table, tls_summary
from tests.bench.tools import ensure_tools, machine

RESULTS = Path(__file__).parent / "results"


def settings_from_env() -> Settings:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    seconds = float(os.environ.get("BENCH_SECONDS", "2" if quick else "5"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "1" if quick else "3"))
    if seconds <= 0 or rounds <= 0:
        raise SystemExit("bench: BENCH_SECONDS and BENCH_ROUNDS must be positive")
    return Settings(seconds=seconds, rounds=rounds, quick=quick)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _summary(row: Row) -> str:
    m = row.metrics
    if row.test.startswith("wrk") or row.test == "mixed":
        text = f"{m['rps']:>9,.0f} req/s  p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms"
        text += f"  {m['cpu_us']:5.0f} µs/req" if "cpu_us" in m else ""
        if row.test == "mixed":
            text += f"  downloads beside {m['downloads_mib_s']:,.0f} MiB/s"
            text += f" ({row.info['downloads_completed']} completed"
            text += f", {row.info['downloads_cut']} cut at the end)"
    elif row.test.startswith("stream"):
        text = f"{m['mib_s']:>9,.0f} MiB/s"
        if "cpu_s_gib" in m:
            text += f"  {m['cpu_s_gib']:.2f} CPU s/GiB  RSS peak {m['rss_peak_mib']:.1f} MiB"
    elif row.test.startswith("handshakes"):
        text = f"{m['conns_s']:>9,.0f} conn/s"
        text += f"  {m['cpu_us']:5.0f} µs/handshake" if "cpu_us" in m else ""
        text += f"  limit: {row.info['limit']}"
    else:
        text = f"{row.info['received']:>9,} B read"
    if "governor_counted" in row.info:
        text += f"  counted {row.info['governor_counted']:,} B"
    return f"{text}  {'FAILED: ' + '; '.join(row.problems) if row.problems else 'ok'}"


def _record(out: TextIO, rows: list[Row], row: Row) -> None:
    rows.append(row)
    out.write(json.dumps({"type": "row", **asdict(row)}) + "\n")
    out.flush()
    print(f"  r{row.round} {row.test:<14} {row.setup:<11} {_summary(row)}", flush=True)


def _rounds(bench: Bench, setups: list[Setup], out: TextIO, rows: list[Row]) -> None:
    print("warm-up (round 0: exact counts, then 1 s wrk runs over HTTP and HTTPS)", flush=True)
    for setup in setups:
        _record(out, rows, warm_up(bench, setup))
    for rnd in range(1, bench.settings.rounds + 1):
        for title, measure in tests(bench.settings):
            print(f"round {rnd}/{bench.settings.rounds}: {title}", flush=True)
            for setup in setups:
                _record(out, rows, measure(bench, setup, rnd))


def _final_counts(setups: list[Setup], out: TextIO, rows: list[Row]) -> None:
    """Stop each governor (SIGTERM: its final flush) and check the store's total then
    is the last settled count: nothing was left unflushed."""
    for setup in setups:
        if setup.config is None or setup.count is None:
            continue
        setup.server.stop()
        row = Row(-1, setup.key, "final")
        final = governor_count(setup.config)
        row.info = {"received": final.used, "settled_before_stop": setup.count.used}
        if final != setup.count:
            row.problems.append(f"after SIGTERM the store holds {final}, not {setup.count}")
        _record(out, rows, row)


def _header(settings: Settings, info: dict[str, str], note: str) -> str:
    big = "10 MiB" if settings.quick else "1 GiB"
    lines = [
        f"machine: {info['nproc']} x {info['cpu']}, {info['memory']}, Linux {info['kernel']}",
        f"python {info['python']}, aiohttp {info['aiohttp']}, uvloop {info['uvloop']}, "
        f"governor {info['governor']}",
        f"build: {info['build']}",
        f"{info['nginx']}; {info['haproxy'].split(' - ')[0]}; {info['wrk']}",
        f"cores: {note}",
        f"{settings.rounds} round(s); wrk -t1 -c{settings.connections} -d{settings.seconds:g}s "
        f"--latency; curl {big} x1 and x{settings.streams}",
        f"TLS: {info['openssl']}; ECDSA P-256 certificate; the 1 KiB wrk and {big} x1 rows "
        f"over HTTPS; openssl s_time -new x{settings.handshake_clients} "
        f"(-time {max(1, round(settings.seconds))})",
    ]
    return "\n".join(lines)


def run(settings: Settings, tmp: Path, out: TextIO) -> list[Row]:
    tools = ensure_tools()
    cores = plan_cores()
    if cores.load:
        os.sched_setaffinity(0, cores.load)  # wrk, curl, the origin and Redis inherit it
    info = machine(tools)
    print(_header(settings, info, cores.note), flush=True)
    out.write(json.dumps({"type": "meta", "settings": asdict(settings), "machine": info}) + "\n")
    rows: list[Row] = []
    with ExitStack() as stack:
        print("starting the origin, nginx, HAProxy, Redis and three governors", flush=True)
        files = make_certificate(tmp / "tls")
        setups = start_setups(stack, tools, tmp, cores, files)
        bench = Bench(settings, tools, cores, write_lua(tmp), files)
        _rounds(bench, setups, out, rows)
        _final_counts(setups, out, rows)
    labels = {s.key: s.label for s in setups}
    big = "10 MiB" if settings.quick else "1 GiB"
    print("\n" + table(rows, labels, big) + "\n")
    print(tls_summary(rows, labels, big) + "\n")
    return rows


def _report(rows: list[Row], results: Path, seconds: float) -> bool:
    """Print every failed check; True if there was none."""
    problems = [f"{r.setup} {r.test} r{r.round}: {p}" for r in rows for p in r.problems]
    for problem in problems:
        print(f"FAILED {problem}")
    verdict = "some checks FAILED" if problems else "every check passed"
    print(f"raw rows: {results}; {seconds:.0f} s; {verdict}")
    return not problems


def main() -> int:
    settings = settings_from_env()
    signal.signal(signal.SIGTERM, _interrupt)
    RESULTS.mkdir(exist_ok=True)
    results = RESULTS / time.strftime("%Y%m%d-%H%M%S.jsonl")
    tmp = Path(tempfile.mkdtemp(prefix="governor-bench-"))
    started, keep = time.monotonic(), True
    try:
        with results.open("w") as out:
            rows = run(settings, tmp, out)
        passed = _report(rows, results, time.monotonic() - started)
        keep = not passed
        return 0 if passed else 1
    except KeyboardInterrupt:
        keep = False
        print("\nbench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"bench: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
