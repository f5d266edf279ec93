"""Starting the setups under test: the origin, nginx, HAProxy and three governors.

Each listens twice: plain HTTP on ``port``, and TLS on ``tls_port`` with the run's one
certificate (:func:`tests.bench.configs.make_certificate`); behind every proxy the
origin is reached over plain HTTP.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.bench import configs
from tests.bench.configs import FLUSH_INTERVAL, HOST, TENANT, TLSFiles
from tests.bench.procs import Server, listeners
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
    tls_port: int = 0  # where it terminates TLS

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def tls_url(self, name: str, host: str = "127.0.0.1") -> str:
        """``https://host:tls_port/name``; with ``HOST``, the client must resolve it itself."""
        return f"https://{host}:{self.tls_port}/{name}"


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """A client context that trusts the run's CA (and checks the name: HOST, 127.0.0.1)."""
    return ssl.create_default_context(cafile=str(files.ca))


def _answers(port: int, tls: ssl.SSLContext | None = None) -> bool:
    conn = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=tls)
        if tls is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    )
    try:
        conn.request("GET", "/1k.bin", headers={"Host": HOST})
        return conn.getresponse().status == 200
    except OSError:  # ssl.SSLError too
        return False
    finally:
        conn.close()


def _start(
    stack: ExitStack, server: Server, tls_port: int = 0, files: TLSFiles | None = None
) -> Server:
    """Start ``server``: ready once it answers plain HTTP on its port and, with ``files``,
    every one of its listening sockets up on ``tls_port`` too, HTTPS there."""
    stack.callback(server.stop)
    server.start()
    if files is None:
        server.wait_ready(lambda: _answers(server.port))
        return server
    context = client_context(files)
    server.wait_ready(
        lambda: (
            _answers(server.port)
            and listeners(tls_port) >= server.listeners
            and _answers(tls_port, context)
        )
    )
    return server


def _nginx(tools: Tools, folder: Path, conf: Path) -> list[str]:
    return [tools.nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]


def start_origin(
    stack: ExitStack, tools: Tools, tmp: Path, cores: Cores, files: TLSFiles | None = None
) -> Setup:
    """The upstream every proxy forwards to: nginx serving the files with sendfile,
    on the load core. Measured directly it shows what wrk, curl and openssl s_time
    reach without a proxy (with ``files``, over TLS too, on a port of its own)."""
    www, folder, port = tmp / "www", tmp / "origin", free_port()
    tls_port = free_port() if files is not None else 0
    configs.make_files(www)
    conf = configs.nginx_upstream(folder, port, www, tls_port=tls_port, files=files)
    server = Server("origin", _nginx(tools, folder, conf), folder / "out.log", cores.load)
    server.port = port
    _start(stack, server, tls_port, files)
    return Setup("direct", "no proxy (origin)", server, proxy=False, tls_port=tls_port)


def _server(name: str, argv: list[str], log: Path, cpus: frozenset[int] | None) -> Server:
    server = Server(name, argv, log, cpus)
    server.port = free_port()
    return server


@dataclass(frozen=True)
class _Shared:
    """What every proxy's setup shares: the tools, the cores, the origin's port, the
    certificate, and the stack that stops them all."""

    stack: ExitStack
    tools: Tools
    cores: Cores
    upstream: int
    files: TLSFiles


def _nginx_setup(shared: _Shared, tmp: Path) -> Setup:
    folder, tls_port = tmp / "nginx", free_port()
    server = _server("nginx", [], folder / "out.log", shared.cores.proxy)
    conf = configs.nginx_proxy(
        folder, server.port, shared.upstream, tls_port=tls_port, files=shared.files
    )
    server.argv = _nginx(shared.tools, folder, conf)
    _start(shared.stack, server, tls_port, shared.files)
    return Setup("nginx", "nginx", server, tls_port=tls_port)


def _haproxy_setup(shared: _Shared, tmp: Path) -> Setup:
    folder, tls_port = tmp / "haproxy", free_port()
    server = _server("haproxy", [], folder / "out.log", shared.cores.proxy)
    conf = configs.haproxy(
        folder, server.port, shared.upstream, tls_port=tls_port, files=shared.files
    )
    server.argv = [shared.tools.haproxy, "-f", str(conf), "-db"]
    _start(shared.stack, server, tls_port, shared.files)
    socket_path = folder / "admin.sock"
    return Setup("haproxy", "HAProxy", server, haproxy_socket=socket_path, tls_port=tls_port)


def _governor_setup(
    shared: _Shared,
    key: str,
    label: str,
    folder: Path,
    cpus: frozenset[int] | None,
    **top: object,
) -> Setup:
    server, tls_port = _server(key, [], folder / "out.log", cpus), free_port()
    conf = configs.governor(
        folder, server.port, shared.upstream, tls_port=tls_port, files=shared.files, **top
    )
    server.argv = [sys.executable, "-m", "governor", "serve", "-c", str(conf)]
    server.listeners = int(str(top.get("workers", 1)))
    _start(shared.stack, server, tls_port, shared.files)
    setup = Setup(key, label, server, config=conf, tls_port=tls_port)
    setup.count = settled_count(conf)
    return setup


def start_setups(
    stack: ExitStack, tools: Tools, tmp: Path, cores: Cores, files: TLSFiles
) -> list[Setup]:
    """Every setup, started and answering, each stopped when ``stack`` closes."""
    origin = start_origin(stack, tools, tmp, cores, files)
    shared = _Shared(stack, tools, cores, origin.port, files)
    redis = stack.enter_context(RedisServer(tmp / "redis"))
    return [
        origin,
        _nginx_setup(shared, tmp),
        _haproxy_setup(shared, tmp),
        _governor_setup(shared, "gov-sqlite", "governor (SQLite)", tmp / "gov-sqlite", cores.proxy),
        _governor_setup(
            shared, "gov-redis", "governor (Redis)", tmp / "gov-redis", cores.proxy, store=redis.url
        ),
        _governor_setup(
            shared, "gov-w2", "governor (workers: 2)", tmp / "gov-w2", cores.workers, workers=2
        ),
    ]
