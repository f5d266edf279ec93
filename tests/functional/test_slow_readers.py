"""Slow readers: a client that takes no byte for ``timeouts.send`` while governor has
bytes for it is closed (with an RST, as nginx's ``reset_timedout_connection`` does),
and what governor holds for a client that stopped reading is bounded: the upstream
is paused instead.

Every client here sets a small receive buffer and then reads nothing (or 32 bytes
now and then, as slowhttptest's slow-read mode does). How soon they are closed is
measured in the report of tests/bench/slow_readers.py, not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import AsyncIterator

import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_websocket import frame, handshake
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, eventually, request

SHORT = {"timeouts": {"send": "1s"}}
# Governor's own send timeout decides when a slow reader goes; this bounds the wait for it.
UNTIL = 15.0
# What governor may hold for one client that stopped reading: its transport's high-water
# mark (64 KiB, where the upstream pauses) and one read of at least 16 KiB.
HELD_AT_MOST = 80 * 1024
GONE = select.POLLHUP | select.POLLERR | select.POLLRDHUP


@contextlib.asynccontextmanager
async def clients(port: int, n: int, data: bytes) -> AsyncIterator[list[socket.socket]]:
    """``n`` clients with a 2 KiB receive buffer that each send ``data`` and read nothing."""
    loop = asyncio.get_running_loop()
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.setblocking(False)
            socks.append(sock)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, data)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def reset_by_governor(sock: socket.socket) -> bool:
    """Whether governor reset the connection, seen without reading a byte."""
    poller = select.poll()
    poller.register(sock, GONE)
    return bool(poller.poll(0))


def open_connections(gov: Governor) -> int:
    assert gov._server is not None
    return len(gov._server.connections)


async def test_a_client_that_pipelines_five_downloads_and_never_reads_is_closed(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(**SHORT)
    five = request("GET", "/forever", "site.test") * 5  # each endless
    async with clients(gov.port, 1, five) as (sock,):
        await eventually(
            lambda: reset_by_governor(sock), timeout=UNTIL, what="governor reset the client"
        )
        assert open_connections(gov) == 0
    await asyncio.wait_for(seen.stream_cancelled.wait(), 5)  # and let go of the upstream
    # Meanwhile everybody else is served, and after it too.
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/1000", "site.test"))
    assert (await client.response()).body == pattern(1000)
    await client.close()


async def test_slow_read_clients_are_all_closed_and_others_are_served(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(**SHORT, limits={"connections_per_client": 0})
    loop = asyncio.get_running_loop()
    download = request("GET", "/forever", "site.test") * 3  # slowhttptest -k 3
    async with clients(gov.port, 30, download) as socks:
        done = asyncio.Event()

        async def sip() -> None:  # 32 bytes every 200 ms each, as slowhttptest -X -z 32
            while not done.is_set():
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.recv(32)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await done.wait()

        sipping = loop.create_task(sip())
        try:
            for _ in range(20):  # ordinary requests go through meanwhile
                client = await RawClient.connect(gov.port)
                await client.send(request("GET", "/bytes/1000", "site.test"))
                assert (await client.response()).body == pattern(1000)
                await client.close()
            await eventually(
                lambda: open_connections(gov) == 0, timeout=UNTIL, what="every slow reader closed"
            )
        finally:
            done.set()
            await sipping


async def test_a_websocket_client_that_stops_reading_is_closed(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(**SHORT)
    client, head = await handshake(gov)
    assert head.startswith(b"HTTP/1.1 101")
    for _ in range(40):  # 10 MiB to the echo, never read back
        client.writer.write(frame(pattern(2**18), opcode=0x2))
    await eventually(
        lambda: open_connections(gov) == 0, timeout=UNTIL, what="governor closed the tunnel"
    )
    client.writer.transport.abort()


async def test_a_client_waiting_on_a_slow_upstream_is_not_closed(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(timeouts={"send": "200ms"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/delay/800", "site.test"))  # nothing due meanwhile
    resp = await client.response()
    await client.close()
    assert (resp.status, resp.body) == (200, b"slow but sure")


@pytest.mark.parametrize("at_cap", ["finish", "cut"])  # the spliced body; the read loop
async def test_what_governor_holds_for_clients_that_stopped_reading_is_bounded(
    make_governor: GovernorFactory, at_cap: str
) -> None:
    gov = await make_governor(tenant={"at_cap": at_cap}, limits={"connections_per_client": 0})
    async with clients(gov.port, 20, request("GET", "/forever", "site.test")):
        assert gov._server is not None
        conns = list(gov._server.connections)
        # Each fills its kernel buffers, then governor's, then pauses its upstream.
        await eventually(
            lambda: all(c.transport and c.transport.get_write_buffer_size() for c in conns),
            timeout=UNTIL,
            what="every connection paused",
        )
        await asyncio.sleep(0.3)  # what would still arrive if the upstreams were not paused
        held = [c.transport.get_write_buffer_size() for c in conns if c.transport]
        assert gov.pool is not None
        queued = [o.queued for o in gov.pool._all]
    assert max(held) + max(queued) <= HELD_AT_MOST, (held, queued)
