"""nginx beside governor: a generated ``map $host $upstream`` of N entries, one worker on the
proxy core. ``nginx -t`` time, start-up, RSS (master and worker), and three reloads: SIGHUP
until a new worker is there (it then serves the new config), with the request stream's
longest wait during each."""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack
from typing import Any

from tests.bench.procs import Server, rss_bytes, tree
from tests.bench.scale import gen
from tests.bench.scale.common import Lab, MiB, answers, timed_run, timeout_note, wait_for
from tests.bench.scale.stream import RequestStream
from tests.support import free_port

SYSTEM = "nginx"


def _argv(lab: Lab, folder: Any, conf: Any) -> list[str]:
    return [lab.tools.nginx, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]


def _workers(server: Server) -> set[int]:
    assert server.proc is not None
    return set(tree(server.proc.pid)) - {server.proc.pid}


def _reload(lab: Lab, server: Server) -> tuple[float | None, dict[str, Any]]:
    timeout = lab.settings.timeout
    with RequestStream(server.port, gen.host(0), timeout=timeout) as stream:
        time.sleep(0.3)
        old = _workers(server)
        assert server.proc is not None
        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGHUP)
        took: float | None = None
        while time.monotonic() - started < timeout:
            if _workers(server) - old:
                took = time.monotonic() - started
                break
            time.sleep(0.002)
        time.sleep(0.3)
    server.pids()
    return took, stream.summary()


def measure_nginx(lab: Lab, tenants: int) -> None:
    rec, timeout = lab.rec, lab.settings.timeout
    folder, port = lab.tmp / f"nginx-{tenants}", free_port()
    conf = gen.nginx_map(folder, tenants=tenants, listen=port, upstream=lab.origin)
    argv = _argv(lab, folder, conf)
    if lab.cores.proxy:
        argv = ["taskset", "-c", ",".join(map(str, lab.cores.proxy)), *argv]
    done = timed_run([*argv, "-t"], timeout)
    note = "" if done.returncode == 0 else f"exit {done.returncode}: {done.output[-300:]}"
    rec.add(
        tenants,
        SYSTEM,
        "check_s",
        done.seconds,
        note or timeout_note(timeout) * (done.seconds is None),
    )
    if done.returncode != 0:
        return
    with ExitStack() as stack:
        server = Server(
            f"nginx-{tenants}",
            _argv(lab, folder, conf),
            folder / "out.log",
            lab.cores.proxy,
            port=port,
        )
        stack.callback(server.stop)
        server.start()
        took = wait_for([server], [lambda: answers(port, "/1k.bin", gen.host(0))], timeout)
        if took is None:
            rec.add(tenants, SYSTEM, "startup_s", None, timeout_note(timeout))
            return
        rec.add(tenants, SYSTEM, "startup_s", took)
        rec.add(tenants, SYSTEM, "rss_start_mib", rss_bytes(server.pids()) / MiB)
        with RequestStream(port, gen.host(0), timeout=timeout) as quiet:
            time.sleep(2)
        rec.add(tenants, SYSTEM, "quiet_max_ms", quiet.summary()["max_ms"], **quiet.summary())
        reloads = [_reload(lab, server) for _ in range(3)]
        rec.reloads(tenants, SYSTEM, reloads, timeout)
        time.sleep(1)  # the old workers finish and go
        rec.add(tenants, SYSTEM, "rss_reloads_mib", rss_bytes(server.pids()) / MiB)
