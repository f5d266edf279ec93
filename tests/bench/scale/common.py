"""What the scale benchmark's steps share: the lab (tools, cores, origin, Redis), the
recorder of rows, and bounded waits (every wait has a timeout and a timeout is a result)."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tests.bench.lab import Cores
from tests.bench.procs import Server
from tests.bench.tools import Tools
from tests.redis_servers import RedisServer

MiB = 2**20


@dataclass(frozen=True)
class Settings:
    tenants: list[int]
    timeout: float  # the bound of every wait (check, start-up, reload, scrape)
    wrk_seconds: float
    wrk_rounds: int
    idle_seconds: float
    fleet_seconds: float
    fleet_instances: int = 4
    active: int = 1000  # tenants the spread traffic and the fleet's traffic go to
    connections: int = 32


@dataclass
class Result:
    """One figure: ``value`` None when it could not be measured (``note`` says why)."""

    tenants: int
    system: str  # governor | nginx | fleet
    metric: str
    value: float | None
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Rows as JSON lines, and a line on the terminal for each."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.rows: list[Result] = []

    def add(
        self,
        tenants: int,
        system: str,
        metric: str,
        value: float | None,
        note: str = "",
        **info: Any,
    ) -> None:
        row = Result(tenants, system, metric, value, note, info)
        self.rows.append(row)
        self.out.write(json.dumps({"type": "row", **asdict(row)}) + "\n")
        self.out.flush()
        shown = "-" if value is None else f"{value:,.3f}"
        extra = f"  {note}" if note else ""
        print(f"  {tenants:>7,} {system:<8} {metric:<22} {shown:>12}{extra}", flush=True)

    def reloads(
        self,
        tenants: int,
        system: str,
        reloads: list[tuple[float | None, dict[str, Any]]],
        timeout: float,
    ) -> None:
        """The rows of a few reloads: the longest, and the stream's worst waits during them.

        Each reload is (its seconds, or None after a timeout; the stream's summary).
        """
        times = [t for t, _ in reloads if t is not None]
        note = "" if len(times) == len(reloads) else timeout_note(timeout)
        self.add(tenants, system, "reload_s", max(times) if times else None, note, all=times)
        summaries = [s for _, s in reloads]
        worst = max(s["max_ms"] for s in summaries)
        self.add(tenants, system, "reload_max_ms", worst, runs=summaries)
        self.add(tenants, system, "reload_p99_ms", max(s["p99_ms"] for s in summaries))


@dataclass
class Lab:
    settings: Settings
    tools: Tools
    cores: Cores
    tmp: Path
    origin: int  # the upstream's port
    redis: RedisServer
    rec: Recorder
    totals_lua: Path  # wrk's done() hook: exact totals


@dataclass(frozen=True)
class Timed:
    seconds: float | None  # None: timed out
    returncode: int | None
    output: str


def timed_run(argv: list[str], timeout: float) -> Timed:
    """Run ``argv`` to its end, or until ``timeout``."""
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Timed(None, None, "")
    return Timed(time.monotonic() - started, done.returncode, done.stdout + done.stderr)


@dataclass(frozen=True)
class Fetched:
    status: int
    size: int
    seconds: float
    body: bytes


def get(port: int, path: str, *, timeout: float, host: str = "127.0.0.1") -> Fetched:
    """One GET on a fresh connection; raises OSError / HTTPException (a timeout too)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        body = resp.read()
        return Fetched(resp.status, len(body), time.perf_counter() - started, body)
    finally:
        conn.close()


def answers(port: int, path: str, host: str = "127.0.0.1") -> bool:
    try:
        return get(port, path, timeout=5, host=host).status == 200
    except (OSError, http.client.HTTPException):
        return False


def wait_for(servers: list[Server], ready: list[Any], timeout: float) -> float | None:
    """Poll until every ``ready[i]()`` holds; seconds taken, or None at ``timeout``.
    Raises if a server died."""
    started = time.monotonic()
    pending = list(zip(servers, ready, strict=True))
    while pending:
        if time.monotonic() - started > timeout:
            return None
        for server, _ in pending:
            server.pids()  # raises if it died
        pending = [(s, r) for s, r in pending if not r()]
        if pending:
            time.sleep(0.05)
    return time.monotonic() - started


def log_count(server: Server, text: str) -> int:
    try:
        return server.log.read_text(errors="replace").count(text)
    except OSError:
        return 0


def timeout_note(seconds: float) -> str:
    return f"timeout (> {seconds:g} s)"
