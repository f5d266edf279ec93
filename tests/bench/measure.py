"""One measurement of one setup, checked while it is made.

Checks on every setup: wrk saw no non-2xx response and no socket error; every
download and raw response is 200 and complete, of the file's exact size.

Checks on governor, against ``governor usage --json`` read before and after (once
the count has settled, see :func:`tests.bench.lab.settled_count`):

* raw client and curl downloads end cleanly, so governor's count must equal, to the
  byte, what the clients read (status lines, headers and bodies: the raw client counts
  every byte off its sockets; curl's ``size_header + size_download``);
* a wrk run is cut off at its deadline: each of its connections may have a response
  governor wrote (and counted: it was handed to the kernel) that wrk never read. So
  governor's count must lie between the exact bytes wrk read (from the Lua ``done()``
  hook) and that plus one whole response per connection; the excess is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.configs import FILES, HOST
from tests.bench.lab import Cores, Setup, haproxy_meter, settled_count
from tests.bench.load import WrkResult, run_exact, run_streams, run_wrk
from tests.bench.procs import core_busy, cpu_times
from tests.bench.report import Row
from tests.bench.tools import Tools

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class Settings:
    seconds: float
    rounds: int
    quick: bool
    connections: int = 32
    streams: int = 4

    @property
    def big(self) -> str:
        """The file of the stream tests: 1 GiB, or 10 MiB in a quick run."""
        return "10m.bin" if self.quick else "1g.bin"


@dataclass
class Bench:
    settings: Settings
    tools: Tools
    cores: Cores
    lua: Path
    response_bytes: dict[tuple[str, str], int] = field(default_factory=dict)


def _counted(setup: Setup, row: Row) -> int | None:
    """What governor counted since its last settled count; None if not a governor or
    the day rolled over meanwhile."""
    if setup.config is None or setup.count is None:
        return None
    before, after = setup.count, settled_count(setup.config)
    setup.count = after
    if before.period != after.period:
        row.info["note"] = "the period rolled over: count not checked"
        return None
    row.info["governor_counted"] = after.used - before.used
    return after.used - before.used


def _cpu_since(pids: list[int], before: tuple[float, float]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` since ``before``."""
    user, system = cpu_times(pids)
    return user - before[0], system - before[1]


def _load_core_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100 * busy / total if total else 0.0


def _load_core(bench: Bench) -> int | None:
    return min(bench.cores.load) if bench.cores.load else None


def _wrk_problems(result: WrkResult) -> list[str]:
    problems = []
    if result.non_2xx:
        problems.append(f"wrk: {result.non_2xx} non-2xx/3xx responses")
    if result.socket_errors:
        problems.append(f"wrk: {result.socket_errors} socket errors")
    if result.requests == 0:
        problems.append("wrk: no request completed")
    return problems


def _check_wrk_count(row: Row, counted: int, result: WrkResult, one: int, conns: int) -> None:
    excess = counted - result.bytes_read
    row.info["counted_minus_read"] = excess
    if not 0 <= excess <= conns * one:
        row.problems.append(
            f"governor counted {counted:,} B, wrk read {result.bytes_read:,} B: the "
            f"difference {excess:,} B is outside 0..{conns} responses of {one:,} B"
        )


def _proxy_pids(setup: Setup) -> list[int]:
    """The processes whose CPU and memory are the proxy's (none for the origin itself)."""
    pids = setup.server.pids()  # raises if it died (a worker too: the tree shrank)
    return pids if setup.proxy else []


def measure_wrk(bench: Bench, setup: Setup, name: str, rnd: int) -> Row:
    row = Row(rnd, setup.key, f"wrk-{name.removesuffix('.bin')}")
    pids, core = _proxy_pids(setup), _load_core(bench)
    meter = haproxy_meter(setup.haproxy_socket) if setup.haproxy_socket else 0
    cpu0, load = cpu_times(pids), core_busy(core) if core is not None else (0, 0)
    result = run_wrk(
        bench.tools.wrk,
        bench.lua,
        setup.url(name),
        HOST,
        seconds=bench.settings.seconds,
        connections=bench.settings.connections,
    )
    user, system = _cpu_since(pids, cpu0)
    _proxy_pids(setup)
    row.metrics = {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}
    if setup.proxy:
        requests = max(result.requests, 1)
        row.metrics["cpu_us"] = 1e6 * (user + system) / requests
        row.metrics["cpu_user_us"] = 1e6 * user / requests
        row.metrics["cpu_pct"] = 100 * (user + system) / result.seconds
    if core is not None:
        row.metrics["load_pct"] = _load_core_pct(load, core_busy(core))
    row.info = {"requests": result.requests, "bytes_read": result.bytes_read}
    row.info["seconds"] = result.seconds
    if setup.haproxy_socket:
        row.info["haproxy_metered"] = haproxy_meter(setup.haproxy_socket) - meter
    row.problems = _wrk_problems(result)
    counted = _counted(setup, row)
    if counted is not None:
        one = bench.response_bytes[(setup.key, name)]
        _check_wrk_count(row, counted, result, one, bench.settings.connections)
    return row


def measure_exact(bench: Bench, setup: Setup, rnd: int) -> Row:
    """100 requests each for 1 KiB and 64 KiB on 4 keep-alive connections, byte-exact."""
    row = Row(rnd, setup.key, "exact")
    received = 0
    for name in ("1k.bin", "64k.bin"):
        result = run_exact(setup.port, f"/{name}", HOST, FILES[name])
        bench.response_bytes[(setup.key, name)] = result.response_bytes
        row.info[f"response_bytes_{name}"] = result.response_bytes
        row.problems += result.problems
        received += result.received
    row.info["received"] = received
    counted = _counted(setup, row)
    if counted is not None and counted != received:
        row.problems.append(f"governor counted {counted:,} B, the raw client read {received:,} B")
    return row


def measure_stream(bench: Bench, setup: Setup, streams: int, rnd: int) -> Row:
    row = Row(rnd, setup.key, f"stream-{streams}")
    name, pids = bench.settings.big, _proxy_pids(setup)
    cpu0 = cpu_times(pids)
    result = run_streams(bench.tools.curl, setup.url(name), HOST, streams=streams, pids=pids)
    user, system = _cpu_since(pids, cpu0)
    _proxy_pids(setup)
    row.metrics = {"mib_s": result.mib_per_s}
    if setup.proxy:
        row.metrics["cpu_s_gib"] = (user + system) / (result.received / GiB)
        row.metrics["cpu_user_s_gib"] = user / (result.received / GiB)
        row.metrics["rss_peak_mib"] = result.rss_peak / MiB
        row.metrics["rss_steady_mib"] = result.rss_steady / MiB
    row.info = {"received": result.received, "rss_samples": result.samples}
    row.info["downloads"] = [d.__dict__ for d in result.downloads]
    for d in result.downloads:
        if d.status != 200 or d.body_bytes != FILES[name]:
            row.problems.append(f"curl: status {d.status}, {d.body_bytes:,} of {FILES[name]:,} B")
    counted = _counted(setup, row)
    if counted is not None and counted != result.received:
        row.problems.append(f"governor counted {counted:,} B, curl read {result.received:,} B")
    return row


def warm_up(bench: Bench, setup: Setup) -> Row:
    """Round 0: an exact pass (which learns each response's size) and a short wrk run;
    for the origin, first a read of the big file into the page cache."""
    if not setup.proxy:
        run_streams(bench.tools.curl, setup.url(bench.settings.big), HOST, streams=1, pids=[])
    row = measure_exact(bench, setup, 0)
    run_wrk(bench.tools.wrk, bench.lua, setup.url("1k.bin"), HOST, seconds=1, connections=8)
    if setup.config is not None:
        setup.count = settled_count(setup.config)
    return row


Measure = Callable[[Bench, Setup, int], Row]


def tests(settings: Settings) -> list[tuple[str, Measure]]:
    """Every measurement of one round, in order."""
    return [
        ("1 KiB wrk", lambda b, s, r: measure_wrk(b, s, "1k.bin", r)),
        ("64 KiB wrk", lambda b, s, r: measure_wrk(b, s, "64k.bin", r)),
        ("exact counts", measure_exact),
        (f"{settings.big} x1", lambda b, s, r: measure_stream(b, s, 1, r)),
        (
            f"{settings.big} x{settings.streams}",
            lambda b, s, r: measure_stream(b, s, settings.streams, r),
        ),
    ]
