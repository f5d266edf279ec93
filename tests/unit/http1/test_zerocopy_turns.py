"""The kernel's relay takes turns with the rest of the event loop, and keeps the client's
socket's queue of unsent bytes short.

Over real loopback connections: an origin thread writes a body as fast as the kernel
takes it, a client thread reads it as fast as it comes, so neither side ever holds the
relay up. One wake-up must still move at most :data:`STEP_MAX` bytes (nginx's
``sendfile_max_chunk``): a callback queued meanwhile runs between wake-ups, however
fast both sides are. And the body arrives whole, in order. And a side is tried only
while it is ready: a failed call (EAGAIN) costs an exception, and retrying each side
until it failed once made most calls fail. And a client that stops reading finds at
most :data:`UNSENT` bytes and one move queued unsent in its socket, not a socket buffer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field

import pytest

from governor.http1.sending import socket_unsent
from governor.http1.zerocopy import STEP_MAX, UNSENT, KernelRelay, available

pytestmark = pytest.mark.skipif(not available(), reason="no splice(2) here")

BODY = 48 * 3 * 2**18
CHUNK = 3 * 2**14  # not a pipeful: a burst's last move is short


def _connected_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    return a, b


def _block(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest() * (CHUNK // 32)


def _write_body(sock: socket.socket, pause: float) -> None:
    with sock:
        for i in range(BODY // CHUNK):
            sock.sendall(_block(i))
            if pause:
                time.sleep(pause)  # an origin that sends in bursts (the pause is the point)


def _write_until_closed(sock: socket.socket) -> None:
    """The body, until the relay's end of the connection is closed."""
    with suppress(ConnectionError):
        _write_body(sock, 0.0)


def _read_body(sock: socket.socket, into: list[bytes]) -> None:
    digest, got = hashlib.sha256(), 0
    with sock:
        while got < BODY and (data := sock.recv(1 << 20)):
            digest.update(data)
            got += len(data)
    into.append(digest.digest())


@dataclass
class Transfer:
    moved: int = 0
    gaps: list[int] = field(default_factory=list)  # bytes moved between two ticker turns
    read: list[bytes] = field(default_factory=list)  # the digest of what the client read


async def _transfer(pause: float = 0.0) -> Transfer:
    """BODY from an origin thread to a client thread through a KernelRelay, with a
    ticker queued on the event loop meanwhile."""
    origin_out, relay_up = _connected_pair()
    relay_down, client_in = _connected_pair()
    for sock in (relay_up, relay_down):
        sock.setblocking(False)
    out = Transfer()
    writer = threading.Thread(target=_write_body, args=(origin_out, pause))
    reader = threading.Thread(target=_read_body, args=(client_in, out.read))
    loop = asyncio.get_running_loop()
    last = 0

    def count(n: int) -> None:
        out.moved += n

    def tick() -> None:
        nonlocal last
        out.gaps.append(out.moved - last)
        last = out.moved
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
    return out


def _expected() -> bytes:
    return hashlib.sha256(b"".join(_block(i) for i in range(BODY // CHUNK))).digest()


async def test_one_wake_up_moves_at_most_step_max_and_the_body_arrives_whole() -> None:
    out = await _transfer()
    assert out.moved == BODY
    assert out.read == [_expected()]
    # A wake-up stops once it moved STEP_MAX; its last move may take up to a pipeful more.
    assert max(out.gaps) <= STEP_MAX + (1 << 20), f"{max(out.gaps):,} bytes moved in one turn"
    assert len(out.gaps) >= BODY // (STEP_MAX + (1 << 20))


async def test_a_side_is_tried_only_while_it_is_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"moved": 0, "failed": 0}
    splice = os.splice

    def counted(*args: int, **kwargs: int) -> int:
        try:
            n = splice(*args, **kwargs)
        except BlockingIOError:
            calls["failed"] += 1
            raise
        calls["moved"] += 1
        return n

    monkeypatch.setattr(os, "splice", counted)
    out = await _transfer(pause=0.0002)
    assert out.read == [_expected()]
    # A stale readiness event may still cost a failed call now and then; trying each side
    # until it failed cost a failed call per burst at least.
    assert calls["failed"] <= calls["moved"] // 10, calls


async def test_a_client_that_stops_reading_has_little_queued_unsent() -> None:
    """The relay's client socket holds UNSENT unsent bytes, plus one move (a pipeful) at
    most, when the relay gives up on a client that stopped reading: the system's default
    would queue megabytes (tcp_wmem's maximum), sent on later as the window opens."""
    origin_out, relay_up = _connected_pair()
    with socket.create_server(("127.0.0.1", 0)) as server:
        client_in = socket.socket()
        client_in.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 14)  # a small window
        client_in.connect(server.getsockname())
        relay_down, _ = server.accept()
    for sock in (relay_up, relay_down):
        sock.setblocking(False)
    loop = asyncio.get_running_loop()
    gave_up: asyncio.Future[int] = loop.create_future()
    relay = KernelRelay(
        loop,
        relay_up.fileno(),
        relay_down.fileno(),
        BODY,
        moved=lambda n: None,
        stalled=lambda: gave_up.set_result(socket_unsent(relay_down)),
        silence=30.0,
        send_timeout=0.4,
    )
    writer = threading.Thread(target=_write_until_closed, args=(origin_out,))
    writer.start()
    try:
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(relay.run(), 60)
        unsent = await gave_up
    finally:
        relay.close()
        for sock in (relay_up, relay_down, client_in):
            sock.close()
        writer.join(30)
    assert 0 < unsent <= UNSENT + (1 << 16), f"{unsent:,} bytes queued unsent"
