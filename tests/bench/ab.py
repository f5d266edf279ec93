"""Two governor checkouts, A and B, in one interleaved run: is B's hot path slower?

    .venv/bin/python -m tests.bench.ab --base ../other-checkout     # A = that, B = this one
    AB_ROUNDS=7 AB_SECONDS=3 .venv/bin/python -m tests.bench.ab --base ../other-checkout

Each checkout runs its own ``governor serve`` (with the Python of its own ``.venv``, so
each imports its own code) in front of one origin nginx, both on the proxy core, one at a
time under load; wrk and the origin run on the other core (see
:func:`tests.bench.lab.plan_cores`). Rounds alternate A, B, B, A, ... so a machine that
gets busier or quieter during the run weighs on both alike. It prints, per file size, the
median requests/s and CPU µs per request of each, and B / A. Run on purpose, not in the
suite; it needs nginx and wrk (``make bench`` installs them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.bench import configs
from tests.bench.lab import Setup, _server, _start, plan_cores, start_origin
from tests.bench.load import run_wrk, write_lua
from tests.bench.procs import cpu_times
from tests.bench.tools import ensure_tools

FILES = ("1k.bin", "64k.bin")


def _governor(stack: ExitStack, key: str, checkout: Path, folder: Path, up: int) -> Setup:
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"ab: {python} does not exist: run `make install` in {checkout}")
    cores = plan_cores()
    server = _server(key, [], folder / "out.log", cores.proxy)
    conf = configs.governor(folder, server.port, up)
    # -P: the checkout's own package, never the one in the current folder.
    server.argv = [str(python), "-P", "-m", "governor", "serve", "-c", str(conf)]
    return Setup(key, f"{key}: {checkout}", _start(stack, server), config=conf)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab")
    parser.add_argument("--base", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--head", type=Path, default=Path.cwd(), help="checkout B (this one)")
    args = parser.parse_args()
    rounds = int(os.environ.get("AB_ROUNDS", "5"))
    seconds = float(os.environ.get("AB_SECONDS", "3"))
    tools = ensure_tools()
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="governor-ab-") as tmp:
        folder = Path(tmp)
        origin = start_origin(stack, tools, folder, plan_cores())
        lua = write_lua(folder)
        setups = {
            "A": _governor(stack, "A", args.base.resolve(), folder / "a", origin.port),
            "B": _governor(stack, "B", args.head.resolve(), folder / "b", origin.port),
        }
        for r in range(rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for key in order:
                setup = setups[key]
                for name in FILES:
                    pids = setup.server.pids()
                    user0, sys0 = cpu_times(pids)
                    result = run_wrk(
                        tools.wrk, lua, setup.url(name), configs.HOST,
                        seconds=seconds, connections=32,
                    )  # fmt: skip
                    user1, sys1 = cpu_times(pids)
                    cpu_us = (user1 + sys1 - user0 - sys0) / max(result.requests, 1) * 1e6
                    rows.setdefault((key, name), []).append((result.rps, cpu_us))
                    print(
                        f"round {r + 1} {key} {name}: {result.rps:,.0f} req/s {cpu_us:.0f} µs/req"
                    )
    print(f"\nmedians over {rounds} rounds of {seconds:g} s (A = {args.base}, B = {args.head})")
    for name in FILES:
        a_rps = statistics.median(v[0] for v in rows[("A", name)])
        b_rps = statistics.median(v[0] for v in rows[("B", name)])
        a_cpu = statistics.median(v[1] for v in rows[("A", name)])
        b_cpu = statistics.median(v[1] for v in rows[("B", name)])
        print(
            f"{name:>8}: A {a_rps:>8,.0f} req/s {a_cpu:5.0f} µs/req | "
            f"B {b_rps:>8,.0f} req/s {b_cpu:5.0f} µs/req | "
            f"B/A req/s {b_rps / a_rps:.2f}, µs/req {b_cpu / a_cpu:.2f}"
        )


if __name__ == "__main__":
    main()
