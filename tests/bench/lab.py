"""Starting the setups under test: the origin, nginx, HAProxy and three governors."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.bench import configs
from tests.bench.configs import FLUSH_INTERVAL, HOST, TENANT
from tests.bench.procs import Server
from tests.bench.tools import Tools
from tests.redis_servers import RedisServer
from tests.support import free_port


@dataclass(frozen=True)
class Cores:
    """Which cores the proxy under test, the load (wrk, curl, origin, Redis) and
    governor's ``workers: 2`` run on."""

    proxy: frozenset[int] | None
    load: frozenset[int] | None
    workers: frozenset[int] | None
    note: str


def plan_cores() -> Cores:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Cores(None, None, None, "one core: nothing pinned, proxy and load share it")
    proxy, load = cpus[0], cpus[1]
    workers = frozenset({proxy, cpus[2]}) if len(cpus) > 2 else frozenset({proxy, load})
    shared = " (it shares the load core)" if load in workers else ""
    note = (
        f"proxy under test on core {proxy}; wrk, curl, the origin nginx and Redis on core "
        f"{load}; governor workers: 2 on cores {sorted(workers)}{shared}"
    )
    return Cores(frozenset({proxy}), frozenset({load}), workers, note)


@dataclass(frozen=True)
class Count:
    """A governor's count for the tenant, as its store has it."""

    period: str
    used: int


def governor_count(config: Path) -> Count:
    """``governor usage --json``: the tenant's count, read from the store."""
    argv = [sys.executable, "-m", "governor", "usage", "-c", str(config), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"governor usage failed: {done.stderr}")
    row = next(r for r in json.loads(done.stdout) if r["tenant"] == TENANT)
    return Count(str(row["period"]), int(row["used_bytes"]))


def settled_count(config: Path, tries: int = 40) -> Count:
    """The count once it stops moving: equal in two reads, each after every worker has
    flushed at least once more (so requests still finishing are in)."""
    last: Count | None = None
    for _ in range(tries):
        time.sleep(2 * FLUSH_INTERVAL)
        now = governor_count(config)
        if now == last:
            return now
        last = now
    raise RuntimeError(f"governor's count did not settle ({config})")


def haproxy_meter(sock: Path) -> int:
    """The bytes HAProxy's stick table has counted for every Host (bytes_out_cnt)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(b"show table bench\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return sum(int(n) for n in re.findall(rb"bytes_out_cnt=(\d+)", data))


@dataclass
class Setup:
    """One proxy under test."""

    key: str
    label: str
    server: Server
    config: Path | None = None  # governor's: its count is checked against the clients
    haproxy_socket: Path | None = None
    proxy: bool = True  # False: the origin itself, for the load generators' ceiling
    count: Count | None = None  # the last settled count

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/1k.bin", headers={"Host": HOST})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _start(stack: ExitStack, server: Server) -> Server:
    stack.callback(server.stop)
    server.start()
    server.wait_ready(lambda: _answers(server.port))
    return server


def _nginx(tools: Tools, folder: Path, conf: Path) -> list[str]:
    return [tools.nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]


def start_origin(stack: ExitStack, tools: Tools, tmp: Path, cores: Cores) -> Setup:
    """The upstream every proxy forwards to: nginx serving the files with sendfile,
    on the load core. Measured directly it shows what wrk and curl reach without a proxy."""
    www, folder, port = tmp / "www", tmp / "origin", free_port()
    configs.make_files(www)
    conf = configs.nginx_upstream(folder, port, www)
    server = Server("origin", _nginx(tools, folder, conf), folder / "out.log", cores.load)
    server.port = port
    _start(stack, server)
    return Setup("direct", "no proxy (origin)", server, proxy=False)


def _server(name: str, argv: list[str], log: Path, cpus: frozenset[int] | None) -> Server:
    server = Server(name, argv, log, cpus)
    server.port = free_port()
    return server


def _nginx_setup(stack: ExitStack, tools: Tools, tmp: Path, cores: Cores, up: int) -> Setup:
    folder = tmp / "nginx"
    server = _server("nginx", [], folder / "out.log", cores.proxy)
    conf = configs.nginx_proxy(folder, server.port, up)
    server.argv = _nginx(tools, folder, conf)
    return Setup("nginx", "nginx", _start(stack, server))


def _haproxy_setup(stack: ExitStack, tools: Tools, tmp: Path, cores: Cores, up: int) -> Setup:
    folder = tmp / "haproxy"
    server = _server("haproxy", [], folder / "out.log", cores.proxy)
    conf = configs.haproxy(folder, server.port, up)
    server.argv = [tools.haproxy, "-f", str(conf), "-db"]
    _start(stack, server)
    return Setup("haproxy", "HAProxy", server, haproxy_socket=folder / "admin.sock")


def _governor_setup(
    stack: ExitStack,
    key: str,
    label: str,
    folder: Path,
    cpus: frozenset[int] | None,
    up: int,
    **top: object,
) -> Setup:
    server = _server(key, [], folder / "out.log", cpus)
    conf = configs.governor(folder, server.port, up, **top)
    server.argv = [sys.executable, "-m", "governor", "serve", "-c", str(conf)]
    server.listeners = int(str(top.get("workers", 1)))
    setup = Setup(key, label, _start(stack, server), config=conf)
    setup.count = settled_count(conf)
    return setup


def start_setups(stack: ExitStack, tools: Tools, tmp: Path, cores: Cores) -> list[Setup]:
    """Every setup, started and answering, each stopped when ``stack`` closes."""
    origin = start_origin(stack, tools, tmp, cores)
    up = origin.port
    redis = stack.enter_context(RedisServer(tmp / "redis"))
    return [
        origin,
        _nginx_setup(stack, tools, tmp, cores, up),
        _haproxy_setup(stack, tools, tmp, cores, up),
        _governor_setup(
            stack, "gov-sqlite", "governor (SQLite)", tmp / "gov-sqlite", cores.proxy, up
        ),
        _governor_setup(
            stack,
            "gov-redis",
            "governor (Redis)",
            tmp / "gov-redis",
            cores.proxy,
            up,
            store=redis.url,
        ),
        _governor_setup(
            stack,
            "gov-w2",
            "governor (workers: 2)",
            tmp / "gov-w2",
            cores.workers,
            up,
            workers=2,
        ),
    ]
