"""``make bench-workers``: what a request costs one governor process against ``workers: 2``.

    .venv/bin/python -m tests.bench.workers                 # both parts, 1 KiB and 64 KiB
    WORKERS_ROUNDS=5 WORKERS_SECONDS=5 .venv/bin/python -m tests.bench.workers
    WORKERS_PARTS=cpu .venv/bin/python -m tests.bench.workers   # leave callgrind out

make bench's ``workers: 2`` row spends more CPU per request than one process, and by an
amount that swings from run to run (+6 to +18%). On this 2-core machine the second worker
shares the load core with wrk and the origin. This tells what governor does more per
request from what the shared core costs. It has two parts, each run against one process
and against ``workers: 2``, on the same origin and files:

* **cpu**: three setups in interleaved rounds: one process on the proxy core (``w1``);
  ``workers: 2`` on make bench's cores, the second worker on the load core (``w2``); and
  ``workers: 2`` both on the proxy core (``w2-proxy``). Each is loaded twice: saturated
  (wrk with 32 connections, as make bench) and paced (each connection waits ``PACE_MS``
  before each request, so that no core is saturated and the second worker is not preempted
  by wrk, as on a machine with a core to spare). Per request: CPU µs, and the context
  switches the kernel made (voluntary: the loop waited for events; involuntary: it was
  preempted), read from /proc. Medians.
* **instructions** (when valgrind is installed): each setup under ``valgrind
  --tool=callgrind`` (workers included, ``--trace-children``), counters zeroed after a
  warm-up, then wrk for a fixed time; instructions per request over every process. A count
  of instructions does not depend on what else the machine runs, so it shows the work
  governor does per request, whatever the core it runs on is shared with. The event loop's
  batching does differ: under valgrind every process is saturated.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench import configs
from tests.bench.ab import start_governor
from tests.bench.lab import Setup, plan_cores, start_origin
from tests.bench.load import run_wrk, write_lua
from tests.bench.procs import Server, cpu_times
from tests.bench.tools import Tools, ensure_tools
from tests.support import free_port

FILES = ("1k.bin", "64k.bin")
CONNECTIONS = 32
# (key, workers, spread): one process on the proxy core; workers: 2 on make bench's cores
# (the second worker on the load core); workers: 2 both on the proxy core, where nothing
# but governor runs, so what they cost beyond one process is governor's alone.
SETUPS = (("w1", 1, False), ("w2", 2, True), ("w2-proxy", 2, False))
# The paced load: each of the 32 connections waits this long before each request, about
# 40% of what one process answers at 1 KiB, so no core is saturated: the second worker is
# not preempted by wrk and the origin, which is the case of a machine with a core to spare.
PACE_MS = 2
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Costs:
    cpu_us: float
    voluntary: float  # context switches per request
    involuntary: float


_FIELDS = ("cpu_us", "voluntary", "involuntary")


def _switches(pids: list[int]) -> tuple[int, int]:
    """Voluntary and involuntary context switches of ``pids``' threads, so far."""
    voluntary = involuntary = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                text = (task / "status").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


def _under_valgrind(
    stack: ExitStack, folder: Path, upstream: int, workers: int, valgrind: list[str]
) -> Setup:
    """governor serve run by ``valgrind``, on make bench's cores (slow to start and stop)."""
    cores = plan_cores()
    key = f"w{workers}"
    server = Server(key, [], folder / "out.log", cores.workers if workers > 1 else cores.proxy)
    server.port = free_port()
    top: dict[str, Any] = {"workers": workers} if workers > 1 else {}
    conf = configs.governor(folder, server.port, upstream, **top)
    python = ROOT / ".venv" / "bin" / "python"
    server.argv = [*valgrind, str(python), "-m", "governor", "serve", "-c", str(conf)]
    server.listeners = workers
    stack.callback(server.stop, 120.0)
    server.start()
    server.wait_ready(lambda: True, timeout=900.0)
    return Setup(key, key, server, config=conf)


def _cpu_part(tools: Tools, folder: Path, upstream: int, rounds: int, seconds: float) -> None:
    folder.mkdir(parents=True)
    loads = {"saturated": write_lua(folder), "paced": write_lua(folder, delay_ms=PACE_MS)}
    rows: dict[tuple[str, str, str], list[Costs]] = {}
    with ExitStack() as stack:
        setups = [
            start_governor(stack, key, ROOT, folder / key, upstream, {}, w, spread=spread)
            for key, w, spread in SETUPS
        ]
        for r in range(rounds):
            for setup in setups if r % 2 == 0 else setups[::-1]:
                for name in FILES:
                    for load, lua in loads.items():
                        costs, rps = _measure(tools, setup, lua, name, seconds)
                        rows.setdefault((load, setup.key, name), []).append(costs)
                        print(
                            f"  round {r + 1} {setup.key} {name} {load}: {rps:,.0f} req/s,"
                            f" {costs.cpu_us:.1f} µs, context switches {costs.voluntary:.3f}"
                            f" voluntary, {costs.involuntary:.3f} involuntary per request",
                            flush=True,
                        )
    print(f"\ncpu: medians of {rounds} rounds of {seconds:g} s, per request")
    for load in loads:
        for name in FILES:
            medians = {
                key: Costs(
                    *(
                        statistics.median(getattr(c, f) for c in rows[(load, key, name)])
                        for f in _FIELDS
                    )
                )
                for key, _, _ in SETUPS
            }
            one = medians["w1"]
            for key, _, _ in SETUPS:
                costs = medians[key]
                print(
                    f"  {load:>9} {name:>8} {key:>8}: CPU {costs.cpu_us:.1f} µs"
                    f" ({costs.cpu_us / one.cpu_us - 1:+.1%} against w1);"
                    f" context switches {costs.voluntary:.3f} voluntary,"
                    f" {costs.involuntary:.3f} involuntary"
                )


def _measure(
    tools: Tools, setup: Setup, lua: Path, name: str, seconds: float
) -> tuple[Costs, float]:
    """One wrk run against ``setup``: its costs per request, and the requests/s."""
    pids = setup.server.pids()
    (u0, s0), (v0, i0) = cpu_times(pids), _switches(pids)
    result = run_wrk(
        tools.wrk, lua, setup.url(name), configs.HOST, seconds=seconds, connections=CONNECTIONS
    )
    (u1, s1), (v1, i1) = cpu_times(pids), _switches(pids)
    n = max(result.requests, 1)
    return Costs(1e6 * (u1 + s1 - u0 - s0) / n, (v1 - v0) / n, (i1 - i0) / n), result.rps


_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.M)


def _instructions(
    tools: Tools, folder: Path, upstream: int, workers: int, name: str, seconds: float
) -> tuple[int, int, list[int]]:
    """(requests, instructions, per process) for one setup under callgrind."""
    out = folder / "callgrind"
    out.mkdir(parents=True)  # and folder
    lua = write_lua(folder)
    valgrind = [
        "valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no",
        f"--callgrind-out-file={out}/cg.%p",
    ]  # fmt: skip
    with ExitStack() as stack:
        setup = _under_valgrind(stack, folder, upstream, workers, valgrind)
        url = setup.url(name)
        run_wrk(tools.wrk, lua, url, configs.HOST, seconds=10, connections=CONNECTIONS)  # warm
        subprocess.run(["callgrind_control", "-z"], capture_output=True, check=False, timeout=120)
        result = run_wrk(
            tools.wrk, lua, url, configs.HOST, seconds=seconds, connections=CONNECTIONS
        )
        subprocess.run(
            ["callgrind_control", "-d", "measured"], capture_output=True, check=False, timeout=120
        )
        per: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # each process writes its dump when it gets to it
            dumps = [
                p for p in out.glob("cg.*.*") if "measured" in p.read_text(errors="replace")[:4096]
            ]
            if len(dumps) >= (workers + 1 if workers > 1 else 1):
                per = [
                    int(m.group(1))
                    for p in dumps
                    if (m := _TOTAL.search(p.read_text(errors="replace")))
                ]
                break
            time.sleep(1)
    if not per:
        raise RuntimeError(f"no callgrind dump for {workers} worker(s) in {out}")
    return result.requests, sum(per), per


def _instructions_part(tools: Tools, folder: Path, upstream: int, seconds: float) -> None:
    print("\ninstructions per request (callgrind; every process of the setup)")
    for name in FILES:
        counts = {}
        for workers in (1, 2):
            requests, total, per = _instructions(
                tools, folder / f"cg-{workers}-{name}", upstream, workers, name, seconds
            )
            counts[workers] = total / max(requests, 1)
            parts = ", ".join(f"{n / max(requests, 1):,.0f}" for n in per)
            print(
                f"  {name:>8} workers: {workers}: {requests:,} requests,"
                f" {counts[workers]:,.0f} ({parts})"
            )
        print(f"  {name:>8}: workers: 2 {counts[2] / counts[1] - 1:+.1%} against one process")


def main() -> None:
    rounds = int(os.environ.get("WORKERS_ROUNDS", "3"))
    seconds = float(os.environ.get("WORKERS_SECONDS", "5"))
    parts = set(os.environ.get("WORKERS_PARTS", "cpu,instructions").split(","))
    if rounds <= 0 or seconds <= 0 or not parts <= {"cpu", "instructions"}:
        raise SystemExit(
            "bench-workers: WORKERS_ROUNDS, WORKERS_SECONDS > 0; WORKERS_PARTS cpu,instructions"
        )
    tools = ensure_tools()
    print(f"cores: {plan_cores().note}", flush=True)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="governor-workers-") as tmp:
        folder = Path(tmp)
        origin = start_origin(stack, tools, folder, plan_cores())
        if "cpu" in parts:
            _cpu_part(tools, folder / "cpu", origin.port, rounds, seconds)
        if "instructions" in parts:
            if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
                print("\ninstructions: valgrind is not installed (apt-get install valgrind)")
            else:
                _instructions_part(tools, folder / "instructions", origin.port, 3 * seconds)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
