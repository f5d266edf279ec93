"""Governor checkouts side by side in one interleaved run, with nginx as the yardstick.

    .venv/bin/python -m tests.bench.ab --base ../other-checkout     # A = that, B = this one
    AB_ROUNDS=7 AB_SECONDS=3 .venv/bin/python -m tests.bench.ab --base ../other-checkout
    .venv/bin/python -m tests.bench.ab --base . --base-env GOVERNOR_PURE=1   # pure vs compiled
    .venv/bin/python -m tests.bench.ab --base . --head-workers 2   # workers: 2, same core
    .venv/bin/python -m tests.bench.ab --base . --head-workers 2 --spread   # as make bench
    .venv/bin/python -m tests.bench.ab --base ../other --files 1g.bin      # one curl stream

Each checkout runs its own ``governor serve`` (with the Python of its own ``.venv`` and
``PYTHONPATH`` set to the checkout, so each imports its own code, compiled or not) in front
of one origin nginx, on the proxy core, one at a time under load; wrk (or curl) and the
origin run on the other core (see :func:`tests.bench.lab.plan_cores`), as in make bench.
nginx as a reverse proxy (the bench's configuration) is measured in the same rounds
unless ``--no-nginx``. The order of the setups rotates every round, so a machine that
gets busier or quieter during the run weighs on all alike. It prints, per file size, the
median requests/s and CPU µs per request (and its user-space part) of each, B / A, and
each governor / nginx; for the big files (``--files 10m.bin,1g.bin``), one curl download
per round instead: MiB/s and CPU seconds per GiB. Run on purpose, not in the suite; it
needs nginx and wrk (``make bench`` installs them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.bench import configs
from tests.bench.lab import Setup, _nginx, _server, _start, plan_cores, start_origin
from tests.bench.load import run_streams, run_wrk, write_lua
from tests.bench.procs import cpu_times
from tests.bench.tools import Tools, ensure_tools

FILES = "1k.bin,64k.bin"
STREAMED = ("10m.bin", "1g.bin")  # one curl download each, not wrk


def _units(name: str) -> tuple[str, str]:
    """What :func:`_measure` gives for ``name``: a rate, and CPU per request or per GiB."""
    return ("MiB/s", "s/GiB") if name in STREAMED else ("req/s", "µs")


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"ab: --*-env takes NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def start_governor(
    stack: ExitStack,
    key: str,
    checkout: Path,
    folder: Path,
    up: int,
    env: dict[str, str],
    workers: int,
    spread: bool,
) -> Setup:
    """``checkout``'s own governor (its venv, its code), started and answering."""
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"ab: {python} does not exist: run `make install` in {checkout}")
    cores = plan_cores()
    # Both sides on the proxy core, whatever ``workers``: several workers on one core show
    # what splitting the connections costs. With ``--spread``, workers get the cores make
    # bench gives them (on two cores, the second is the load's).
    pinned = cores.workers if spread and workers > 1 else cores.proxy
    server = _server(key, [], folder / "out.log", pinned)
    top: dict[str, Any] = {"workers": workers} if workers > 1 else {}
    conf = configs.governor(folder, server.port, up, **top)
    server.listeners = workers
    # -P and PYTHONPATH: the checkout's own package (compiled or not), never the one in the
    # current folder, nor the one an editable install of the venv points at.
    server.argv = [str(python), "-P", "-m", "governor", "serve", "-c", str(conf)]
    server.env = {"PYTHONPATH": str(checkout), **env}
    label = f"{key}: {checkout} {env or ''}{f' workers: {workers}' if workers > 1 else ''}"
    return Setup(key, label, _start(stack, server), config=conf)


def _nginx_proxy(stack: ExitStack, tools: Tools, folder: Path, up: int) -> Setup:
    server = _server("nginx", [], folder / "out.log", plan_cores().proxy)
    conf = configs.nginx_proxy(folder, server.port, up)
    server.argv = _nginx(tools, folder, conf)
    return Setup("nginx", "nginx", _start(stack, server))


def _measure(
    tools: Tools, lua: Path, setup: Setup, name: str, seconds: float
) -> tuple[float, float, float]:
    """One run against ``setup``: requests/s and CPU µs per request (all, user) with wrk;
    for a big file, one curl download's MiB/s and CPU seconds per GiB (all, user)."""
    pids = setup.server.pids()
    user0, sys0 = cpu_times(pids)
    if name in STREAMED:
        result = run_streams(tools.curl, setup.url(name), configs.HOST, streams=1, pids=pids)
        user1, sys1 = cpu_times(pids)
        gib = result.received / 2**30
        return result.mib_per_s, (user1 + sys1 - user0 - sys0) / gib, (user1 - user0) / gib
    wrk = run_wrk(tools.wrk, lua, setup.url(name), configs.HOST, seconds=seconds, connections=32)
    user1, sys1 = cpu_times(pids)
    n = max(wrk.requests, 1)
    return wrk.rps, (user1 + sys1 - user0 - sys0) / n * 1e6, (user1 - user0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab")
    parser.add_argument("--base", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--head", type=Path, default=Path.cwd(), help="checkout B (this one)")
    parser.add_argument("--base-env", action="append", default=[], help="NAME=VALUE for A")
    parser.add_argument("--head-env", action="append", default=[], help="NAME=VALUE for B")
    parser.add_argument("--base-workers", type=int, default=1, help="workers: for A")
    parser.add_argument("--head-workers", type=int, default=1, help="workers: for B")
    parser.add_argument(
        "--spread", action="store_true", help="workers on make bench's cores, not the proxy's"
    )
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument("--files", default=FILES, help=f"which files, comma-separated ({FILES})")
    args = parser.parse_args()
    files = args.files.split(",")
    rounds = int(os.environ.get("AB_ROUNDS", "5"))
    seconds = float(os.environ.get("AB_SECONDS", "3"))
    tools = ensure_tools()
    cores = plan_cores()
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="governor-ab-") as tmp:
        folder = Path(tmp)
        origin = start_origin(stack, tools, folder, cores)
        lua = write_lua(folder)
        up = origin.port
        setups = {
            "A": start_governor(
                stack,
                "A",
                args.base.resolve(),
                folder / "a",
                up,
                _env(args.base_env),
                args.base_workers,
                args.spread,
            ),
            "B": start_governor(
                stack,
                "B",
                args.head.resolve(),
                folder / "b",
                up,
                _env(args.head_env),
                args.head_workers,
                args.spread,
            ),
        }
        if not args.no_nginx:
            setups["nginx"] = _nginx_proxy(stack, tools, folder / "nginx", up)
        if cores.load is not None:  # after the setups: plan_cores reads this process's cores
            os.sched_setaffinity(0, cores.load)  # wrk and curl run on the load core
        keys = list(setups)
        for r in range(rounds):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            for key in order if r % 2 == 0 else order[::-1]:
                setup = setups[key]
                for name in files:
                    rate, cpu, user = _measure(tools, lua, setup, name, seconds)
                    rows.setdefault((key, name), []).append((rate, cpu, user))
                    unit = _units(name)
                    print(
                        f"round {r + 1} {key} {name}: {rate:,.0f} {unit[0]} "
                        f"{cpu:.2f} {unit[1]} ({user:.2f} user)"
                    )
    print(f"\nmedians over {rounds} rounds of {seconds:g} s")
    for key in keys:
        print(f"  {key}: {setups[key].label}")
    for name in files:
        med = {
            key: [statistics.median(v[i] for v in rows[(key, name)]) for i in range(3)]
            for key in keys
        }
        unit = _units(name)
        cells = " | ".join(
            f"{key} {m[0]:>7,.0f} {unit[0]} {m[1]:5.2f} {unit[1]} ({m[2]:4.2f} user)"
            for key, m in med.items()
        )
        a, b = med["A"], med["B"]
        line = f"{name:>8}: {cells} | B/A {unit[0]} {b[0] / a[0]:.2f}, {unit[1]} {b[1] / a[1]:.2f}"
        if "nginx" in med:
            ng = med["nginx"]
            line += (
                f" | ÷nginx {unit[0]} A {a[0] / ng[0]:.2f} B {b[0] / ng[0]:.2f},"
                f" {unit[1]} A {a[1] / ng[1]:.2f} B {b[1] / ng[1]:.2f}"
            )
        print(line)


if __name__ == "__main__":
    main()
