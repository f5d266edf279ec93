"""The configurable limits (``limits:``) and the WebSocket idle timeout, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.functional.conftest import GovernorFactory
from tests.functional.test_smuggling import exchange
from tests.functional.test_websocket import frame, handshake, read_frame
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, eventually, request

QUICK = {"shutdown": "1s"}  # a failing test must not hold its teardown for 30 s


async def test_head_limits_follow_the_config(make_governor: GovernorFactory, seen: Seen) -> None:
    gov = await make_governor(
        limits={"request_line": "200", "header_field": "100", "header_count": 5}, timeouts=QUICK
    )
    long_line = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: site.test\r\n\r\n"
    assert (await exchange(gov, long_line))[0] == [414]
    long_field = b"GET / HTTP/1.1\r\nHost: site.test\r\nX-A: " + b"a" * 100 + b"\r\n\r\n"
    assert (await exchange(gov, long_field))[0] == [431]
    many = b"GET / HTTP/1.1\r\nHost: site.test\r\n" + b"X: 1\r\n" * 5 + b"\r\n"
    assert (await exchange(gov, many))[0] == [431]
    fits = b"GET /bytes/3 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n" + b"X: 1\r\n" * 3
    assert (await exchange(gov, fits + b"\r\n"))[0] == [200]
    assert seen.hits == 1


async def test_a_body_over_body_max_gets_413_while_streaming(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(limits={"body_max": "100 KiB"}, timeouts=QUICK)
    # Declared too large: refused before anything is forwarded.
    declared = request("POST", "/upload", "site.test", body=b"x" * 200_000)
    statuses, _, closed = await exchange(gov, declared)
    assert (statuses, closed) == ([413], True)
    assert seen.hits == 0
    # Chunked, so the size shows only while it streams: cut at the limit, never completed.
    client = await RawClient.connect(gov.port)
    await client.send(
        b"POST /upload HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError):
        for _ in range(20):
            await client.send(b"4000\r\n" + b"y" * 0x4000 + b"\r\n")  # 320 KiB in all
    resp = await client.response()
    await client.close()
    assert resp.status == 413
    assert seen.uploads == []
    # At the limit exactly is fine.
    fine = request("POST", "/upload", "site.test", "Connection: close", body=pattern(102_400))
    statuses, raw, _ = await exchange(gov, fine)
    assert statuses == [200]
    assert b'"received": 102400' in raw


async def test_connections_per_client_refuses_new_ones_and_keeps_the_old(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(limits={"connections_per_client": 5}, timeouts=QUICK)
    held = [await RawClient.connect(gov.port) for _ in range(5)]
    for client in held:  # each is open and served
        await client.send(request("GET", "/bytes/10", "site.test"))
        assert (await client.response()).status == 200
    extra = await RawClient.connect(gov.port)  # the kernel accepts; governor refuses
    with contextlib.suppress(ConnectionError):
        await extra.send(request("GET", "/bytes/10", "site.test"))
    async with asyncio.timeout(5):
        refused = await extra.reader.read(65536)
    assert not refused.startswith(b"HTTP/1.1 200"), refused[:100]
    await extra.close()
    for client in held:  # the ones already open keep working
        await client.send(request("GET", "/bytes/10", "site.test"))
        assert (await client.response()).status == 200
        await client.close()


async def test_connections_in_total_are_capped(make_governor: GovernorFactory) -> None:
    gov = await make_governor(
        limits={"connections": 3, "connections_per_client": 0}, timeouts=QUICK
    )
    held = [await RawClient.connect(gov.port) for _ in range(3)]
    for client in held:
        await client.send(request("GET", "/bytes/10", "site.test"))
        assert (await client.response()).status == 200
    extra = await RawClient.connect(gov.port)
    with contextlib.suppress(ConnectionError):
        await extra.send(request("GET", "/bytes/10", "site.test"))
    async with asyncio.timeout(5):
        refused = await extra.reader.read(65536)
    assert not refused.startswith(b"HTTP/1.1 200"), refused[:100]
    await extra.close()
    await held[0].close()  # a slot frees up: a new connection is served again

    async def served_again() -> bool:  # once the close has reached governor
        again = await RawClient.connect(gov.port)
        with contextlib.suppress(ConnectionError):
            await again.send(request("GET", "/bytes/10", "site.test", "Connection: close"))
        data = await again.reader.read(65536)
        await again.close()
        return data.startswith(b"HTTP/1.1 200")

    await eventually(served_again, what="a new connection served after a slot freed")
    for client in held[1:]:
        await client.close()


async def test_an_idle_websocket_is_closed(make_governor: GovernorFactory) -> None:
    gov = await make_governor(timeouts={**QUICK, "websocket_idle": "1s"})
    client, head = await handshake(gov)
    assert head.startswith(b"HTTP/1.1 101")
    for i in range(3):  # traffic keeps it open past the idle timeout
        if i:
            await asyncio.sleep(0.5)  # the point: half the idle timeout between frames
        await client.send(frame(b"ping %d" % i))
        assert await read_frame(client) == (0x1, b"echo:ping %d" % i)
    started = time.monotonic()  # the last byte either way: idle from here
    async with asyncio.timeout(5):
        rest = await client.read_to_eof()  # then silence: governor closes it
    assert 0.9 <= time.monotonic() - started < 2.5
    assert rest < 64  # at most a close frame
    await client.close()
