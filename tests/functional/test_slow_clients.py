"""Slow clients: slowloris heads and trickled uploads must not hold up anybody else,
and must themselves be closed by their deadlines (``timeouts.request_header``,
``timeouts.body_min_rate``).

Hundreds of real loopback connections each; the trickling is a bounded loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, eventually, free_port, request

LORIS_HEAD = b"GET /bytes/10 HTTP/1.1\r\nHost: site.test\r\nX-Loris: "
UPLOAD_HEAD = b"POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: 1000000\r\n\r\n"


@dataclass(eq=False)
class Slow:
    """One slow connection: what it sent, what came back, and when governor closed it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float
    piece: bytes
    received: bytes = b""
    closed_at: float | None = None

    async def watch(self) -> None:
        """Read until governor closes the connection (cancelled by the test otherwise)."""
        data = bytearray()
        with contextlib.suppress(ConnectionError):
            while chunk := await self.reader.read(65536):
                data += chunk
        self.received = bytes(data)
        self.closed_at = time.monotonic()

    def trickle(self) -> None:
        if self.closed_at is None and not self.writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self.writer.write(self.piece)


@contextlib.asynccontextmanager
async def slow_clients(
    port: int, n: int, head: bytes, piece: bytes, interval: float
) -> AsyncIterator[list[Slow]]:
    """``n`` connections that sent ``head`` and then write ``piece`` every ``interval``."""
    slow: list[Slow] = []
    watchers: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def trickle() -> None:
        for _ in range(10_000):  # bounded: the test stops it long before
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
            if stop.is_set():
                return
            for s in slow:
                s.trickle()

    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        s = Slow(reader, writer, time.monotonic(), piece)
        slow.append(s)
        watchers.append(loop.create_task(s.watch()))
    trickler = loop.create_task(trickle())
    try:
        yield slow
    finally:
        stop.set()
        await trickler
        for s in slow:
            s.writer.transport.abort()
        for task in watchers:
            task.cancel()
        await asyncio.wait(watchers)


def fast_stop(**options: Any) -> dict[str, Any]:
    """Config options with an admin listener and a short shutdown, plus ``options``."""
    timeouts = {"shutdown": "1s", **options.pop("timeouts", {})}
    return {"admin_listen": f"127.0.0.1:{free_port()}", "timeouts": timeouts, **options}


async def active_connections(gov: Governor) -> int:
    """``governor_active_connections`` from the admin listener's /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gov.admin_port}/metrics") as resp,
    ):
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("governor_active_connections ")]
    return int(float(line.split()[1]))


async def ordinary(gov: Governor, n: int) -> list[float]:
    """``n`` ordinary requests one after another; each must succeed. Their durations."""
    times = []
    for _ in range(n):
        started = time.monotonic()
        client = await RawClient.connect(gov.port)
        await client.send(request("GET", "/bytes/1000", "site.test"))
        resp = await client.response()
        await client.close()
        times.append(time.monotonic() - started)
        assert (resp.status, resp.body) == (200, pattern(1000))
    return times


async def test_slowloris_and_slow_uploads_do_not_hold_up_ordinary_requests(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(**fast_stop())
    async with (
        slow_clients(gov.port, 200, LORIS_HEAD, b"a", 0.2) as loris,
        slow_clients(gov.port, 20, UPLOAD_HEAD, b"u" * 100, 0.2) as uploads,
    ):
        times = await ordinary(gov, 50)
        assert all(s.closed_at is None for s in loris + uploads)  # all still held open
        assert await active_connections(gov) == 220
    assert statistics.median(times) < 0.05, times
    assert max(times) < 0.5, times
    assert seen.uploads == []  # no trickled upload was complete


async def test_clients_that_leave_mid_head_or_mid_upload_free_their_connections(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(**fast_stop())
    async with (
        slow_clients(gov.port, 20, LORIS_HEAD, b"a", 0.2),
        slow_clients(gov.port, 20, UPLOAD_HEAD, b"u" * 100, 0.2),
    ):
        await ordinary(gov, 1)
        assert await active_connections(gov) == 40
    # Every client closed its socket (FIN): governor must let go of all of them.
    deadline = time.monotonic() + 2
    left = await active_connections(gov)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polled over HTTP: there is no event to wait on
        left = await active_connections(gov)
    assert left == 0, f"{left} connections still open 2 s after their clients left"


async def test_slowloris_is_closed_by_the_header_deadline(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(**fast_stop(timeouts={"request_header": "1s"}))
    async with slow_clients(gov.port, 200, LORIS_HEAD, b"a", 0.2) as loris:
        times = await ordinary(gov, 10)  # meanwhile, ordinary requests are served
        await eventually(  # the watchers set it
            lambda: all(s.closed_at is not None for s in loris), what="every slow head closed"
        )
    after = [s.closed_at - s.opened for s in loris if s.closed_at is not None]
    assert len(after) == 200
    assert min(after) >= 0.9, min(after)
    assert max(after) < 2.0, max(after)  # 1 s, not 60 s
    assert all(s.received.startswith(b"HTTP/1.1 408 ") for s in loris)
    assert max(times) < 0.5
    assert seen.paths == ["/bytes/1000"] * 10  # no slowloris head reached the upstream


async def test_a_body_below_the_minimum_rate_is_closed(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    # The body's deadline: 1 s of grace, then 1 s more per 10 KiB; these send 1 KiB/s.
    gov = await make_governor(
        **fast_stop(timeouts={"request_header": "1s", "body_min_rate": "10 KiB"})
    )
    async with slow_clients(gov.port, 20, UPLOAD_HEAD, b"u" * 100, 0.1) as uploads:
        client = await RawClient.connect(gov.port)  # a fast upload of the same size passes
        await client.send(request("POST", "/upload", "site.test", body=b"f" * 1_000_000))
        fast = await client.response()
        await client.close()
        await eventually(  # the watchers set it
            lambda: all(s.closed_at is not None for s in uploads),
            timeout=6,
            what="every slow upload closed",
        )
    after = [s.closed_at - s.opened for s in uploads if s.closed_at is not None]
    assert len(after) == 20
    assert max(after) < 3.0, max(after)
    assert fast.status == 200
    assert seen.uploads == [1_000_000]  # only the fast one completed upstream
