"""``make soak``: a bounded run of governor under mixed load with faults injected.

    .venv/bin/python -m tests.soak                 # 120 s
    SOAK_SECONDS=300 SOAK_CLIENTS=16 .venv/bin/python -m tests.soak

On loopback, in a temporary folder: the functional tests' upstream (aiohttp) behind
a fault proxy, a real ``redis-server`` behind another (SQLite when Redis is not
installed), and ``governor serve`` in front. Clients send a mix of downloads
(Content-Length and chunked), uploads and keep-alive runs, while slowloris
connections sit open, and every few seconds a fault is injected: latency on the
upstream, an upstream stall (504s), resets mid-body (truncated responses),
refusal (502s), a Redis stall. ``slowhttptest`` (Debian package) is run for a
while too when it is installed.

At the end governor is stopped with SIGTERM and the store's count is compared
with the bytes the clients received (governor's own 502/504 included: they are
charged too). It prints: requests served, errors by kind, counts lost (must be 0),
peak RSS, and open file descriptors at the start and the end. Exit status 1 if
bytes were lost, governor failed to stop cleanly, or a request failed unexpectedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.faults import FaultProxy
from tests.functional.upstream_app import make_upstream
from tests.redis_servers import RedisServer, have_redis
from tests.redis_servers import _die_with_parent as die_with_parent
from tests.support import RawClient, free_port, request, write_config

SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "12"))
LORIS = int(os.environ.get("SOAK_SLOWLORIS", "200"))
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Tally:
    """What the clients saw."""

    served: int = 0  # responses from the site (complete or cut by a fault)
    charged: int = 0  # bytes received in those: what governor must have counted
    kinds: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(current RSS KiB, peak RSS KiB, open fds) of process ``pid``, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = {k: v.split() for k, _, v in (line.partition(":") for line in status.splitlines())}
    return int(values["VmRSS"][0]), int(values["VmHWM"][0]), len(os.listdir(f"/proc/{pid}/fd"))


async def client_loop(port: int, stop: asyncio.Event, tally: Tally, rng: random.Random) -> None:
    for _ in range(10_000_000):  # bounded; ``stop`` ends it
        if stop.is_set():
            return
        try:
            client = await RawClient.connect(port)
        except OSError as exc:
            tally.unexpected.append(f"connect: {exc!r}")
            await asyncio.sleep(0.1)
            continue
        try:
            for _ in range(rng.randint(1, 8)):  # a keep-alive run
                kind = rng.choice(["bytes", "bytes", "chunked", "upload"])
                if kind == "bytes":
                    data = request(
                        "GET", f"/bytes/{rng.choice([100, 5000, 70000, 300000])}", "site.test"
                    )
                elif kind == "chunked":
                    data = request("GET", f"/chunked/{rng.choice([1000, 50000])}", "site.test")
                else:
                    data = request(
                        "POST", "/upload", "site.test", body=b"u" * rng.randint(1, 100000)
                    )
                before = client.received
                await client.send(data)
                resp = await client.response()
                if not resp.complete:
                    await client.read_to_eof()
                got = client.received - before
                tally.charged += got  # governor's own 502/504 are charged too
                if resp.status in (502, 504):
                    tally.kinds[str(resp.status)] += 1
                    break
                tally.served += 1
                if resp.status != 200:
                    tally.unexpected.append(f"status {resp.status}")
                if not resp.complete:
                    tally.kinds["truncated"] += 1
                    break
                if resp.header("Connection") == "close":
                    break
        except (ConnectionError, AssertionError) as exc:
            tally.kinds["connection cut"] += 1
            # Bytes of a response cut before its head was whole are still counted
            # by governor if it wrote them; they are few, and show up as "lost < 0".
            if client.received:
                tally.unexpected.append(f"cut mid-head after {client.received} bytes: {exc!r}")
        finally:
            await client.close()


async def slowloris(port: int, n: int, stop: asyncio.Event) -> int:
    """Hold ``n`` connections with unfinished heads; returns how many governor closed."""
    writers = []
    for _ in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: site.test\r\n")
        writers.append(writer)
    for _ in range(100_000):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await stop.wait()
        if stop.is_set():
            break
        for w in writers:
            if not w.is_closing():
                with contextlib.suppress(ConnectionError):
                    w.write(b"X-a: b\r\n")
    closed = sum(1 for w in writers if w.transport.is_closing())
    for w in writers:
        w.transport.abort()
    return closed


async def faults_loop(
    upstream: FaultProxy, store: FaultProxy | None, stop: asyncio.Event, log: list[str]
) -> None:
    """Every few seconds, one fault for a few seconds, then back to a plain pipe."""
    rng = random.Random(7)
    faults = ["latency", "stall", "reset", "refuse", "redis-stall", "none"]
    for i in range(100_000):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(4):
                await stop.wait()
        if stop.is_set():
            return
        fault = faults[i % len(faults)] if i < len(faults) else rng.choice(faults)
        log.append(fault)
        if fault == "latency":
            upstream.latency = 0.05
        elif fault == "stall":
            upstream.stall()
        elif fault == "reset":
            upstream.reset_after(rng.randint(1000, 200_000))
        elif fault == "refuse":
            upstream.reset_all()
            await upstream.refuse()
        elif fault == "redis-stall" and store is not None:
            store.stall()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await stop.wait()
        upstream.clear()
        await upstream.accept()
        if fault == "stall":
            upstream.reset_all()  # the held requests would arrive late: drop them
        if store is not None:
            store.resume()


async def run_slowhttptest(port: int, seconds: int) -> str:
    """Debian's slowhttptest in slow-headers mode, if installed."""
    tool = shutil.which("slowhttptest")
    if tool is None:
        return "not installed (apt-get install slowhttptest to add it)"
    proc = await asyncio.create_subprocess_exec(
        tool, "-H", "-c", "300", "-r", "100", "-i", "10", "-l", str(seconds),
        "-u", f"http://127.0.0.1:{port}/", "-x", "24", "-p", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    lines = [x for x in out.decode(errors="replace").splitlines() if "service available" in x]
    return lines[-1].strip() if lines else f"exit {proc.returncode}"


async def stored_usage(config: Path) -> int:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "governor", "usage", "-c", str(config), "--json",
        stdout=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    out, _ = await proc.communicate()
    rows = json.loads(out)
    return sum(int(r["used_bytes"]) for r in rows)


async def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="governor-soak-"))
    runner = web.AppRunner(make_upstream(), access_log=None)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    redis: RedisServer | None = None
    store_faults: FaultProxy | None = None
    stack = contextlib.AsyncExitStack()
    try:
        up_faults = await stack.enter_async_context(FaultProxy("127.0.0.1", upstream_port))
        options: dict[str, Any] = {}
        if have_redis():
            redis = stack.enter_context(RedisServer(folder / "redis"))
            store_faults = await stack.enter_async_context(FaultProxy("127.0.0.1", redis.port))
            options = {"store": f"redis://{store_faults.address}/0", "store_timeout": "300ms"}
        config = write_config(
            folder,
            upstream=f"http://{up_faults.address}",
            cap="1 TiB",  # the soak is about faults, not the cap: it must never block
            flush_interval="200ms",
            timeouts={"upstream_response": "2s", "shutdown": "10s"},
            **options,
        )
        port = int(config.read_text().split("listen: 127.0.0.1:")[1].split()[0])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "governor", "serve", "-c", str(config),
            stderr=asyncio.subprocess.PIPE, cwd=REPO, preexec_fn=die_with_parent,
        )  # fmt: skip
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while b"governor listening" not in await proc.stderr.readline():
                pass
        drain = asyncio.get_running_loop().create_task(proc.stderr.read())  # keep it flowing
        _, _, fds_start = proc_figures(proc.pid)
        print(f"soak: {SECONDS:.0f} s, {CLIENTS} clients, {LORIS} slowloris, store "
              f"{'redis' if redis else 'sqlite'}, governor pid {proc.pid}", flush=True)  # fmt: skip
        stop = asyncio.Event()
        tally = Tally()
        fault_log: list[str] = []
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        tasks = [
            loop.create_task(client_loop(port, stop, tally, random.Random(i)))
            for i in range(CLIENTS)
        ]
        loris = loop.create_task(slowloris(port, LORIS, stop))
        faults = loop.create_task(faults_loop(up_faults, store_faults, stop, fault_log))
        slow_http = loop.create_task(run_slowhttptest(port, min(30, int(SECONDS / 2))))
        peak_rss = 0
        while time.monotonic() - started < SECONDS:
            await asyncio.sleep(1)  # sampling once a second
            _, hwm, _ = proc_figures(proc.pid)
            peak_rss = max(peak_rss, hwm)
        stop.set()
        await asyncio.gather(*tasks, faults)
        loris_closed = await loris
        slow_http_result = await slow_http
        up_faults.clear()
        await up_faults.accept()
        if store_faults is not None:
            store_faults.resume()
        await asyncio.sleep(2)  # connections closing reach governor
        rss_end, hwm, fds_end = proc_figures(proc.pid)
        peak_rss = max(peak_rss, hwm)
        elapsed = time.monotonic() - started
        proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
        log_tail = (await drain).decode(errors="replace")
        counted = await stored_usage(config)
        lost = tally.charged - counted
        print(f"requests served:   {tally.served} ({tally.served / elapsed:.0f}/s)")
        print(f"errors:            {dict(tally.kinds) or 'none'} (expected: the injected faults)")
        print(f"unexpected:        {len(tally.unexpected)} {tally.unexpected[:5]}")
        print(f"faults injected:   {dict(Counter(fault_log))}")
        print(f"bytes received:    {tally.charged}; in the store: {counted}")
        print(f"counts lost:       {lost}")
        print(f"peak RSS:          {peak_rss / 1024:.1f} MiB (at the end {rss_end / 1024:.1f} MiB)")
        print(f"open fds:          {fds_start} at the start, {fds_end} at the end")
        print(f"slowloris closed:  {loris_closed} of {LORIS} by governor during the run")
        print(f"slowhttptest:      {slow_http_result}")
        print(f"SIGTERM:           exit {code}")
        if code != 0:
            print(log_tail[-2000:])
        return 0 if lost == 0 and code == 0 and not tally.unexpected else 1
    finally:
        await stack.aclose()
        await runner.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
