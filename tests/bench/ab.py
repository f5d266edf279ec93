"""Governor checkouts side by side in one interleaved run, with nginx as the yardstick.

    .venv/bin/python -m tests.bench.ab --base ../other-checkout     # A = that, B = this one
    AB_ROUNDS=7 AB_SECONDS=3 .venv/bin/python -m tests.bench.ab --base ../other-checkout
    .venv/bin/python -m tests.bench.ab --base . --base-env GOVERNOR_PURE=1   # pure vs compiled
    .venv/bin/python -m tests.bench.ab --base . --head-workers 2   # workers: 2, same core
    .venv/bin/python -m tests.bench.ab --base . --head-workers 2 --spread   # as make bench

Each checkout runs its own ``governor serve`` (with the Python of its own ``.venv`` and
``PYTHONPATH`` set to the checkout, so each imports its own code, compiled or not) in front
of one origin nginx, on the proxy core, one at a time under load; wrk and the origin run on
the other core (see :func:`tests.bench.lab.plan_cores`). nginx as a reverse proxy (the
bench's configuration) is measured in the same rounds unless ``--no-nginx``. The order of
the setups rotates every round, so a machine that gets busier or quieter during the run
weighs on all alike. It prints, per file size, the median requests/s and CPU µs per request
(and its user-space part) of each, B / A, and each governor / nginx. Run on purpose, not in
the suite; it needs nginx and wrk (``make bench`` installs them).
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
from tests.bench.load import run_wrk, write_lua
from tests.bench.procs import cpu_times
from tests.bench.tools import Tools, ensure_tools

FILES = ("1k.bin", "64k.bin")


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
    args = parser.parse_args()
    rounds = int(os.environ.get("AB_ROUNDS", "5"))
    seconds = float(os.environ.get("AB_SECONDS", "3"))
    tools = ensure_tools()
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="governor-ab-") as tmp:
        folder = Path(tmp)
        origin = start_origin(stack, tools, folder, plan_cores())
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
        keys = list(setups)
        for r in range(rounds):
            order = keys[r % len(keys) :] + keys[: r % len(keys)]
            for key in order if r % 2 == 0 else order[::-1]:
                setup = setups[key]
                for name in FILES:
                    pids = setup.server.pids()
                    user0, sys0 = cpu_times(pids)
                    result = run_wrk(
                        tools.wrk, lua, setup.url(name), configs.HOST,
                        seconds=seconds, connections=32,
                    )  # fmt: skip
                    user1, sys1 = cpu_times(pids)
                    n = max(result.requests, 1)
                    cpu_us = (user1 + sys1 - user0 - sys0) / n * 1e6
                    user_us = (user1 - user0) / n * 1e6
                    rows.setdefault((key, name), []).append((result.rps, cpu_us, user_us))
                    print(
                        f"round {r + 1} {key} {name}: {result.rps:,.0f} req/s "
                        f"{cpu_us:.0f} µs/req ({user_us:.0f} user)"
                    )
    print(f"\nmedians over {rounds} rounds of {seconds:g} s")
    for key in keys:
        print(f"  {key}: {setups[key].label}")
    for name in FILES:
        med = {
            key: [statistics.median(v[i] for v in rows[(key, name)]) for i in range(3)]
            for key in keys
        }
        cells = " | ".join(
            f"{key} {m[0]:>7,.0f} req/s {m[1]:4.0f} µs ({m[2]:3.0f} user)" for key, m in med.items()
        )
        a, b = med["A"], med["B"]
        line = f"{name:>8}: {cells} | B/A req/s {b[0] / a[0]:.2f}, µs {b[1] / a[1]:.2f}"
        if "nginx" in med:
            ng = med["nginx"]
            line += (
                f" | ÷nginx req/s A {a[0] / ng[0]:.2f} B {b[0] / ng[0]:.2f},"
                f" µs A {a[1] / ng[1]:.2f} B {b[1] / ng[1]:.2f}"
            )
        print(line)


if __name__ == "__main__":
    main()
