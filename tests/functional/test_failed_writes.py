"""Only what the client's socket accepted is charged.

A client leaves mid-download. What governor still held for it (its transport's
buffer, the write that failed with EPIPE or a reset) never left governor and is not
charged; what the kernel accepted stays charged, read by the client or not. To
compare with an exact figure, each test freezes governor (its event loop, or its
process with SIGSTOP), reads every byte governor's socket accepted, and only then
resets the connection: what the client read is then exactly what the kernel took.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import struct
import termios
from pathlib import Path

import pytest

from governor.http1.connection import ClientConnection
from governor.http1.sending import socket_sent
from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import ServeFactory
from tests.functional.test_lifecycle import stored
from tests.functional.test_metering import used
from tests.functional.upstream_app import Seen
from tests.support import eventually, request, write_config

DOWNLOAD = request("GET", "/forever", "site.test")  # 6.5 GB at most: never finished here


def small_client() -> socket.socket:
    """A client socket with a small receive buffer, as a slow phone or a script has."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def start_download(port: int, at_least: int) -> tuple[socket.socket, int]:
    """Ask for the endless download and read ``at_least`` bytes of it; then stop reading."""
    loop = asyncio.get_running_loop()
    sock = small_client()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, DOWNLOAD)
    got = 0
    while got < at_least:
        data = await loop.sock_recv(sock, 65536)
        assert data, "governor closed the download"
        got += len(data)
    return sock, got


def read_waiting(sock: socket.socket) -> int:
    """Every byte waiting in the socket, without yielding to the event loop."""
    n = 0
    while True:
        try:
            data = sock.recv(2**20)
        except BlockingIOError:
            return n
        if not data:
            return n
        n += len(data)


def drain(sock: socket.socket, governor_queue: object) -> int:
    """Read until governor's socket holds nothing more for us: all it accepted is read.

    ``governor_queue()`` is the bytes governor's socket holds unacknowledged; with
    governor frozen nothing new enters it, and each read here lets the kernel move
    the rest across. Bounded: a queue that never empties fails the test.
    """
    assert callable(governor_queue)
    n = 0
    for _ in range(10_000):
        n += read_waiting(sock)
        if governor_queue() == 0:
            return n + read_waiting(sock)
    raise AssertionError("governor's socket never emptied")


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): governor's next write fails."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def outq(fd: int) -> int:
    """Bytes a socket holds unacknowledged (SIOCOUTQ, the same request as TIOCOUTQ)."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])


def only_connection(gov: Governor) -> ClientConnection:
    server = gov._server
    assert server is not None
    (conn,) = server.connections
    return conn


@pytest.mark.parametrize("at_cap", ["finish", "cut"])  # the spliced body; the read loop
async def test_a_client_leaving_mid_download_is_charged_what_its_socket_accepted(
    make_governor: GovernorFactory, seen: Seen, at_cap: str
) -> None:
    gov = await make_governor(tenant={"at_cap": at_cap})
    sock, got = await start_download(gov.port, 1_000_000)
    transport = only_connection(gov).transport
    assert transport is not None
    await eventually(  # the client stopped: governor's socket fills, then its own (no event)
        lambda: transport.get_write_buffer_size() > 0, timeout=10, what="governor's buffer used"
    )
    fd = transport.get_extra_info("socket").fileno()
    # No await from here on: governor's loop is frozen, it writes nothing more.
    got += drain(sock, lambda: outq(fd))
    held = transport.get_write_buffer_size()
    reset(sock)
    await asyncio.wait_for(seen.stream_cancelled.wait(), timeout=5)
    assert held > 0  # governor did hold bytes the socket never took: they are not charged
    assert used(gov) == got


def tx_queue(local_port: int, peer_port: int) -> int | None:
    """A socket's unacknowledged bytes from /proc/net/tcp (governor's, seen from outside)."""
    local, peer = f"0100007F:{local_port:04X}", f"0100007F:{peer_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == peer:
            return int(fields[4].split(":")[0], 16)
    return None


async def test_the_same_under_governor_serve_on_uvloop(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    served = await serve(write_config(tmp_path, upstream=upstream_url))
    sock, got = await start_download(served.port, 1_000_000)
    mine = sock.getsockname()[1]
    queue = [-1]
    async with asyncio.timeout(10):  # governor's socket stops filling: governor pauses
        while True:
            await asyncio.sleep(0.05)  # another process: nothing to wait on
            now = tx_queue(served.port, mine)
            if now and now == queue[-1]:
                break
            queue.append(now or 0)
    os.kill(served.proc.pid, signal.SIGSTOP)  # frozen: it can write nothing more
    try:
        got += drain(sock, lambda: tx_queue(served.port, mine))
        reset(sock)
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)
    await asyncio.wait_for(seen.stream_cancelled.wait(), timeout=5)
    served.proc.send_signal(signal.SIGTERM)
    assert await served.proc.wait() == 0
    assert await stored(tmp_path / "governor.yaml") == got


def test_the_kernel_figure_is_what_send_accepted_before_and_after_a_reset() -> None:
    """``socket_sent`` (what charges a lost connection) against the sum of what send()
    returned: equal while the peer reads nothing, after it read some, and after its RST."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.connect(listener.getsockname())
    sock, _ = listener.accept()
    listener.close()
    sock.setblocking(False)
    accepted = 0
    with contextlib.suppress(BlockingIOError):
        for _ in range(100_000):  # until the kernel takes no more
            accepted += sock.send(b"x" * 65536)
    try:
        assert accepted > 0
        assert socket_sent(sock) == accepted
        peer.recv(10_000)
        assert socket_sent(sock) == accepted
        reset(peer)
        with contextlib.suppress(OSError):  # ECONNRESET or EPIPE: nothing more is accepted
            for _ in range(10):
                accepted += sock.send(b"y" * 65536)
        assert socket_sent(sock) == accepted
    finally:
        sock.close()
