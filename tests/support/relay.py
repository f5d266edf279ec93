"""A TCP relay that counts every byte crossing it, both ways: the packet capture of a test.

Clients (curl, Python's ssl, Chromium) connect to the relay; it connects on to the target
and copies bytes both ways untouched, counting them. A TLS client's records, handshake
and close_notify included, cross it as they cross a real network, so what the relay
counted is what the tenant must be charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Piped:
    """One relayed connection: bytes client -> target (``up``) and back (``down``)."""

    up: int = 0
    down: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    target_eof: bool = False  # the target closed its side (a FIN, not a reset)
    cut: bool = False  # reset: one side reset, both were


class Relay:
    """Listens on a loopback port; every connection is piped to ``target_port``."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.connections: list[Piped] = []
        self.port = 0  # where clients connect, once started
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def up(self) -> int:
        return sum(c.up for c in self.connections)

    @property
    def down(self) -> int:
        return sum(c.down for c in self.connections)

    async def settled(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until every relayed connection has ended both ways."""
        async with asyncio.timeout(timeout):
            for conn in list(self.connections):
                await conn.done.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        piped = Piped()
        self.connections.append(piped)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            piped.done.set()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(
                self._copy(reader, up_writer, piped, "up", (writer, up_writer)),
                self._copy(up_reader, writer, piped, "down", (writer, up_writer)),
            )
        finally:
            for w in (writer, up_writer):
                w.close()
            piped.done.set()
            self._tasks.discard(task)

    async def _copy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        piped: Piped,
        direction: str,
        both: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await reader.read(65536):
                setattr(piped, direction, getattr(piped, direction) + len(data))
                writer.write(data)
                await writer.drain()
            if direction == "down":
                piped.target_eof = True
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            _cut(piped, *both)


def _cut(piped: Piped, client: asyncio.StreamWriter, target: asyncio.StreamWriter) -> None:
    """A reset one way: both ways are reset (as a client's abort is passed on by a proxy).

    What the target transmitted is then what the relay's kernel received, read or not (a
    packet capture shows it), so that is counted before the socket goes.
    """
    if piped.cut:
        return
    piped.cut = True
    if not piped.target_eof:
        received = kernel_received(target.get_extra_info("socket"))
        if received is not None:
            piped.down = max(piped.down, received)
    for w in (client, target):
        sock = w.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()


def kernel_received(sock: Any) -> int | None:
    """Data bytes a TCP socket's kernel received (tcpi_bytes_received, Linux 4.1 and later);
    a FIN counts one more, so only ask a connection that received none."""
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 216)
    except OSError:
        return None
    return int(struct.unpack_from("=Q", info, 128)[0]) if len(info) >= 136 else None
