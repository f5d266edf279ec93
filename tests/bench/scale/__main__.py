"""``make bench-scale``: issue 13's table, governor at 1 / 10,000 / 100,000 configured tenants
with nginx's ``map`` layout beside it, from one run.

    .venv/bin/python -m tests.bench.scale                     # 1, 10,000 and 100,000 tenants
    SCALE_QUICK=1 .venv/bin/python -m tests.bench.scale       # 1 and 10,000, shorter wrk runs
    SCALE_TENANTS=1,20000 .venv/bin/python -m tests.bench.scale
    SCALE_PARTS=governor,nginx .venv/bin/python -m tests.bench.scale   # leave the fleet out

Environment: ``SCALE_TENANTS`` (comma-separated; 1 is always measured first: it is the
baseline), ``SCALE_TIMEOUT`` (the bound of every wait, 300 s; a timeout is a result in the
table, never a crash), ``SCALE_SECONDS`` (per wrk run, 5; 3 quick), ``SCALE_ROUNDS`` (wrk rounds,
3; 2 quick), ``SCALE_IDLE`` (seconds of the idle-CPU sample, 10), ``SCALE_FLEET_SECONDS``
(traffic to the fleet, 10; 5 quick), ``SCALE_PARTS`` (governor, fleet, nginx: all by default).

What it starts, each on free loopback ports in a temporary folder and stopped on the way
out (an error or Ctrl-C too): an origin nginx serving ``/1k.bin`` and a redis-server, on
the load core with the benchmark itself, wrk and the request stream; a 1-tenant governor
that runs all along (the baseline of the requests/s ratios, measured in the same rounds);
then for each tenant count N, with configs streamed to disk (tenant ``t<i>`` on host
``t<i>.scale.test``, one upstream, timezone UTC, a cap never reached):

* governor (``governor.py``, pinned to the proxy core, Redis store, ``flush_interval`` 1 s,
  ``store_timeout`` 500 ms): start-up to ``/readyz`` 200 and RSS; CPU over 10 s with no
  traffic (from /proc); a steady stream of sequential 1 KiB requests to one tenant
  (``stream.py``) quiet, then during each of 3 SIGHUPs (done at governor's "reloaded" log
  line), one ``/metrics`` scrape and one ``/status`` page: its longest wait and p99; RSS
  after the reloads; the flushes from governor's own ``governor_store_flush_seconds``
  histogram (the scraped page) and its "store flush failed" log lines; wrk 1 KiB requests/s
  to one tenant and spread over 1,000 (a Lua script picking the Host), interleaved with the
  baseline, as medians and ratios; then ``governor check``, on the same core.
* the fleet (``fleet.py``): four governors x N tenants on the one redis-server, exact clients
  spread over 1,000 tenants; whether Redis ends up holding every byte the clients received,
  and the share of flushes within the interval.
* nginx (``nginx.py``) with a ``map $host $upstream`` of N entries: ``nginx -t``, start-up,
  RSS, three reloads (SIGHUP until a new worker is there) under the same request stream.

Prints the table and writes every row as JSON lines to tests/bench/results/scale-<time>.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path
from types import FrameType

from tests.bench.lab import plan_cores, start_origin
from tests.bench.load import write_lua
from tests.bench.scale.common import Lab, Recorder, Settings, timeout_note, wait_for
from tests.bench.scale.fleet import measure_fleet
from tests.bench.scale.governor import measure_governor, ready, start_governor
from tests.bench.scale.nginx import measure_nginx
from tests.bench.scale.table import table
from tests.bench.tools import ensure_tools, machine
from tests.redis_servers import RedisServer

RESULTS = Path(__file__).parent.parent / "results"
PARTS = ("governor", "fleet", "nginx")


def _number(name: str, default: float) -> float:
    value = float(os.environ.get(name, default))
    if value <= 0:
        raise SystemExit(f"bench-scale: {name} must be positive")
    return value


def settings_from_env() -> tuple[Settings, list[str]]:
    quick = os.environ.get("SCALE_QUICK", "") not in ("", "0")
    default = "1,10000" if quick else "1,10000,100000"
    raw = os.environ.get("SCALE_TENANTS", default).replace("_", "")
    tenants = sorted({1, *(int(n) for n in raw.split(",") if n.strip())})
    if tenants[0] < 1:
        raise SystemExit("bench-scale: SCALE_TENANTS must be positive numbers")
    parts = [p.strip() for p in os.environ.get("SCALE_PARTS", ",".join(PARTS)).split(",")]
    if unknown := set(parts) - set(PARTS):
        raise SystemExit(f"bench-scale: SCALE_PARTS: unknown {sorted(unknown)}")
    settings = Settings(
        tenants=tenants,
        timeout=_number("SCALE_TIMEOUT", 300),
        wrk_seconds=_number("SCALE_SECONDS", 3 if quick else 5),
        wrk_rounds=int(_number("SCALE_ROUNDS", 2 if quick else 3)),
        idle_seconds=_number("SCALE_IDLE", 10),
        fleet_seconds=_number("SCALE_FLEET_SECONDS", 5 if quick else 10),
    )
    return settings, parts


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _part(lab: Lab, name: str, tenants: int, step: Callable[[], None]) -> None:
    """One part for one tenant count; an error is a row of the table, and the run goes on."""
    print(f"{name}, {tenants:,} tenants", flush=True)
    try:
        step()
    except Exception as exc:  # reported as a result; the next part still runs
        traceback.print_exc()
        lab.rec.add(tenants, name, "error", None, f"{type(exc).__name__}: {str(exc)[:200]}")


def run(settings: Settings, parts: list[str], tmp: Path, rec: Recorder) -> None:
    tools = ensure_tools()
    cores = plan_cores()
    if cores.load:
        os.sched_setaffinity(0, cores.load)  # wrk, the stream, the origin and Redis
    info = machine(tools)
    rec.out.write(json.dumps({"type": "meta", "settings": asdict(settings), "machine": info}))
    rec.out.write("\n")
    print(f"machine: {info['nproc']} x {info['cpu']}, {info['memory']}; {info['nginx']}")
    print(f"cores: {cores.note}; tenants {settings.tenants}; parts {parts}", flush=True)
    with ExitStack() as stack:
        origin = start_origin(stack, tools, tmp, cores)
        redis = stack.enter_context(RedisServer(tmp / "redis"))
        lab = Lab(settings, tools, cores, tmp, origin.port, redis, rec, write_lua(tmp))
        baseline = start_governor(lab, stack, "baseline", 1, cores.proxy)
        if wait_for([baseline], [ready(baseline)], settings.timeout) is None:
            raise SystemExit(
                f"bench-scale: the 1-tenant governor: {timeout_note(settings.timeout)}"
            )
        for n in settings.tenants:
            if "governor" in parts:
                _part(lab, "governor", n, partial(measure_governor, lab, n, baseline))
            if "fleet" in parts and n > 1:
                _part(lab, "fleet", n, partial(measure_fleet, lab, n))
            if "nginx" in parts:
                _part(lab, "nginx", n, partial(measure_nginx, lab, n))
    print("\n" + table(rec.rows, settings.tenants) + "\n")


def main() -> int:
    settings, parts = settings_from_env()
    signal.signal(signal.SIGTERM, _interrupt)
    RESULTS.mkdir(exist_ok=True)
    results = RESULTS / time.strftime("scale-%Y%m%d-%H%M%S.jsonl")
    tmp = Path(tempfile.mkdtemp(prefix="governor-bench-scale-"))
    started, keep = time.monotonic(), True
    try:
        with results.open("w") as out:
            rec = Recorder(out)
            run(settings, parts, tmp, rec)
        errors = [r for r in rec.rows if r.metric == "error"]
        print(f"raw rows: {results}; {time.monotonic() - started:.0f} s; {len(errors)} errors")
        keep = bool(errors)
        return 1 if errors else 0
    except KeyboardInterrupt:
        keep = False
        print("\nbench-scale: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"bench-scale: logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
