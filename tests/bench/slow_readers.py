"""Slow readers against ``governor serve``: memory per held connection, ordinary latency,
and how long governor holds them (``timeouts.send``).

    .venv/bin/python -m tests.bench.slow_readers                    # 300 of our own readers
    .venv/bin/python -m tests.bench.slow_readers --send 10s         # with timeouts.send: 10s
    .venv/bin/python -m tests.bench.slow_readers --slowhttptest     # Debian's slowhttptest -X

Starts an origin nginx serving a 1 GiB sparse file and a 1 KiB one, and ``governor serve``
in front of it (uvloop, as in production), both on free loopback ports in a temporary
folder. Then:

1. 300 ordinary requests one after another (a new connection each, GET of 1 KiB):
   p50 and p99 without slow readers; governor's RSS afterwards is the baseline.
2. N slow readers: each sets a small SO_RCVBUF, asks for the 1 GiB file (``--pipeline``
   requests in one write) and then reads 32 bytes every 5 seconds, as slowhttptest's
   slow-read mode does; or slowhttptest itself (``-X``) with the issue's arguments.
3. Once they are all connected and governor's buffers toward them are full (5 s):
   RSS again; (RSS - baseline) / N is the memory per slow reader.
4. The same 300 ordinary requests while the slow readers are held: p50 and p99.
5. How many slow readers governor still holds (its established sockets, from
   /proc/net/tcp), every second, until none or ``--hold`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from tests.bench import configs
from tests.bench.lab import _answers
from tests.bench.procs import Server, rss_bytes
from tests.support import free_port, write_config

SLOWHTTPTEST = "/usr/bin/slowhttptest"


def start(stack: ExitStack, tmp: Path, send: str | None) -> tuple[Server, Server]:
    www = tmp / "www"
    configs.make_files(www)
    origin = Server("origin", [], tmp / "origin.log")
    origin.port = free_port()
    conf = configs.nginx_upstream(tmp / "origin", origin.port, www)
    origin.argv = ["nginx", "-p", str(tmp / "origin"), "-c", str(conf), "-e", "/dev/null"]
    stack.callback(origin.stop)
    origin.start()
    origin.wait_ready(lambda: _answers(origin.port))
    gov = Server("governor", [], tmp / "governor.log")
    gov.port = free_port()
    timeouts = {"shutdown": "2s", **({"send": send} if send else {})}
    (tmp / "gov").mkdir()
    config = write_config(
        tmp / "gov",
        upstream=f"http://127.0.0.1:{origin.port}",
        cap=f"{configs.HUGE_CAP_KIB} KiB",
        listen=f"127.0.0.1:{gov.port}",
        defaults={"timezone": "UTC"},
        timeouts=timeouts,
        limits={"connections_per_client": 0},  # every client here is 127.0.0.1
        tenant={"hosts": [configs.HOST, "127.0.0.1"]},  # slowhttptest sends Host: 127.0.0.1
    )
    gov.argv = [sys.executable, "-m", "governor", "serve", "-c", str(config)]
    stack.callback(gov.stop)
    gov.start()
    gov.wait_ready(lambda: _answers(gov.port))
    return origin, gov


async def ordinary(port: int, n: int) -> list[float]:
    """``n`` GETs of 1 KiB one after another, each on a new connection: seconds each."""
    times = []
    req = f"GET /1k.bin HTTP/1.1\r\nHost: {configs.HOST}\r\nConnection: close\r\n\r\n".encode()
    for _ in range(n):
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(req)
        data = await reader.read()
        writer.close()
        times.append(time.monotonic() - started)
        if not data.startswith(b"HTTP/1.1 200") or len(data) <= 1024:
            raise RuntimeError(f"an ordinary request failed: {data[:100]!r}")
    return times


def quantiles(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


class SlowReader:
    """One slow-read client: a small receive window, 32 bytes every ``interval`` seconds."""

    def __init__(self, port: int, pipeline: int, interval: float, path: str) -> None:
        self.port, self.pipeline, self.interval, self.path = port, pipeline, interval, path
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        self.sock.setblocking(False)
        self.received = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        req = f"GET {self.path} HTTP/1.1\r\nHost: {configs.HOST}\r\n\r\n".encode()
        try:
            await loop.sock_connect(self.sock, ("127.0.0.1", self.port))
            await loop.sock_sendall(self.sock, req * self.pipeline)
            while not stop.is_set():
                data = await loop.sock_recv(self.sock, 32)
                if not data:
                    break
                self.received += len(data)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await stop.wait()
        except OSError:
            pass  # reset by governor (seen only once the bytes before the RST are read)
        self.sock.close()


async def own_readers(args: argparse.Namespace, gov: Server, base: int) -> None:
    stop = asyncio.Event()
    readers = [SlowReader(gov.port, args.pipeline, 5.0, args.path) for _ in range(args.n)]
    loop = asyncio.get_running_loop()
    tasks = []
    for reader in readers:
        tasks.append(loop.create_task(reader.run(stop)))
        await asyncio.sleep(1 / args.rate)
    await asyncio.sleep(5)
    await report_held(args, gov, base, lambda: established(gov.port))
    stop.set()
    await asyncio.gather(*tasks)


async def slowhttptest(args: argparse.Namespace, gov: Server, base: int) -> None:
    argv = [
        SLOWHTTPTEST, "-X", "-c", str(args.n), "-r", str(args.rate), "-w", "10", "-y", "20",
        "-n", "5", "-z", "32", "-k", str(args.pipeline), "-p", "3", "-l", str(args.hold + 10),
        "-u", f"http://127.0.0.1:{gov.port}/1g.bin",
    ]  # fmt: skip
    print("$", " ".join(argv))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.sleep(args.n / args.rate + 5)
        await report_held(args, gov, base, lambda: established(gov.port))
    finally:
        proc.terminate()
        await proc.wait()


def established(port: int) -> int:
    """Established client connections to ``port`` (governor's side of each)."""
    local = f":{port:04X}"
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                n += fields[1].endswith(local) and fields[3] == "01"
    return n


async def report_held(args: argparse.Namespace, gov: Server, base: int, held: object) -> None:
    assert callable(held)
    rss = rss_bytes(gov.pids())
    print(
        f"held: {held()}; RSS {rss / 2**20:.1f} MiB; per slow reader "
        f"{(rss - base) / args.n / 1024:.0f} KiB"
    )
    print("ordinary with slow readers:   ", quantiles(await ordinary(gov.port, args.requests)))
    started = time.monotonic()
    counts = []
    while time.monotonic() - started < args.hold:
        counts.append(held())
        if not counts[-1]:
            break
        await asyncio.sleep(1)
    print(f"held, each second for {args.hold} s (or until none):", counts)


async def main(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        _, gov = start(stack, tmp, args.send)
        await ordinary(gov.port, 50)  # warm up
        print("ordinary without slow readers:", quantiles(await ordinary(gov.port, args.requests)))
        base = rss_bytes(gov.pids())
        print(f"baseline RSS {base / 2**20:.1f} MiB")
        if args.slowhttptest:
            await slowhttptest(args, gov, base)
        else:
            await own_readers(args, gov, base)
        if args.log:
            print(gov.log_tail(args.log))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="slow readers (300)")
    parser.add_argument("--rate", type=int, default=100, help="new slow readers a second")
    parser.add_argument("--pipeline", type=int, default=3, help="requests each sends (3)")
    parser.add_argument("--requests", type=int, default=300, help="ordinary requests a phase")
    parser.add_argument("--hold", type=int, default=30, help="seconds to watch them held")
    parser.add_argument("--path", default="/1g.bin", help="what our readers ask for")
    parser.add_argument("--send", help="timeouts.send for governor (default: governor's)")
    parser.add_argument("--log", type=int, default=0, help="print governor's last log lines")
    parser.add_argument("--slowhttptest", action="store_true", help="use slowhttptest -X")
    asyncio.run(main(parser.parse_args()))
