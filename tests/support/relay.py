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
        loop = asyncio.get_running_loop()
        up_reader = asyncio.StreamReader()
        target = _Target(up_reader, piped)
        try:
            transport, _ = await loop.create_connection(lambda: target, *self.target)
        except OSError:
            writer.close()
            piped.done.set()
            self._tasks.discard(task)
            return
        up_writer = asyncio.StreamWriter(transport, target, up_reader, loop)
        try:
            await asyncio.gather(
                self._copy(reader, up_writer, piped, "up", (writer, up_writer)),
                self._copy(up_reader, writer, piped, "down", (writer, up_writer)),
            )
        finally:
            for w in (writer, up_writer):
                w.close()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(10):
                    await target.closed.wait()  # a cut's count is taken there
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


class _Target(asyncio.StreamReaderProtocol):
    """The relay's connection to the target. After a cut, what the target transmitted is
    what the relay's kernel received, read or not (a packet capture shows it): that is
    counted here, as the socket closes (with SO_LINGER 0: the reset), when no more can
    arrive uncounted. (An abort closes the socket a loop turn later, not at once; the
    target, when it runs in this process, may send more in that turn.)"""

    def __init__(self, reader: asyncio.StreamReader, piped: Piped) -> None:
        super().__init__(reader)
        self.piped = piped
        self.sock: Any = None
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport.get_extra_info("socket")
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        piped = self.piped
        if piped.cut and not piped.target_eof:
            received = kernel_received(self.sock)
            if received is not None:
                piped.down = max(piped.down, received)
        super().connection_lost(exc)
        self.closed.set()


def _cut(piped: Piped, client: asyncio.StreamWriter, target: asyncio.StreamWriter) -> None:
    """A reset one way: both ways are reset (as a client's abort is passed on by a proxy).
    What the target transmitted until then is counted as its socket closes (:class:`_Target`)."""
    if piped.cut:
        return
    piped.cut = True
    for w in (target, client):
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
