"""The kernel's relay takes turns with the rest of the event loop.

Over real loopback connections: an origin thread writes a body as fast as the kernel
takes it, a client thread reads it as fast as it comes, so neither side ever holds the
relay up. One wake-up must still move at most :data:`STEP_MAX` bytes (nginx's
``sendfile_max_chunk``): a callback queued meanwhile runs between wake-ups, however
fast both sides are. And the body arrives whole, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading

import pytest

from governor.http1.zerocopy import STEP_MAX, KernelRelay, available

pytestmark = pytest.mark.skipif(not available(), reason="no splice(2) here")

BODY = 48 * 2**20
CHUNK = 2**18


def _connected_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


def _block(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest() * (CHUNK // 32)


def _write_body(sock: socket.socket) -> None:
    with sock:
        for i in range(BODY // CHUNK):
            sock.sendall(_block(i))


def _read_body(sock: socket.socket, into: list[bytes]) -> None:
    digest, got = hashlib.sha256(), 0
    with sock:
        while got < BODY and (data := sock.recv(1 << 20)):
            digest.update(data)
            got += len(data)
    into.append(digest.digest())


async def test_one_wake_up_moves_at_most_step_max_and_the_body_arrives_whole() -> None:
    origin_out, relay_up = _connected_pair()
    relay_down, client_in = _connected_pair()
    for sock in (relay_up, relay_down):
        sock.setblocking(False)
    read: list[bytes] = []
    writer = threading.Thread(target=_write_body, args=(origin_out,))
    reader = threading.Thread(target=_read_body, args=(client_in, read))
    loop = asyncio.get_running_loop()
    moved = 0
    gaps: list[int] = []  # bytes moved between two turns of the ticker
    last = 0

    def count(n: int) -> None:
        nonlocal moved
        moved += n

    def tick() -> None:
        nonlocal last
        gaps.append(moved - last)
        last = moved
        handle[0] = loop.call_soon(tick)

    handle = [loop.call_soon(tick)]
    relay = KernelRelay(
        loop,
        relay_up.fileno(),
        relay_down.fileno(),
        BODY,
        moved=count,
        stalled=lambda: None,
        silence=30.0,
        send_timeout=30.0,
    )
    writer.start()
    reader.start()
    try:
        await asyncio.wait_for(relay.run(), 60)
    finally:
        handle[0].cancel()
        relay.close()
        relay_up.close()
        relay_down.close()
        writer.join(30)
        reader.join(30)
    expected = hashlib.sha256(b"".join(_block(i) for i in range(BODY // CHUNK))).digest()
    assert moved == BODY
    assert read == [expected]
    # A wake-up stops once it moved STEP_MAX; its last move may take up to a pipeful more.
    assert max(gaps) <= STEP_MAX + (1 << 20), f"{max(gaps):,} bytes moved in one turn"
    assert len(gaps) >= BODY // (STEP_MAX + (1 << 20))
