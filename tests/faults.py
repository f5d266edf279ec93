"""A fault-injecting TCP proxy of our own, on loopback, for tests and the soak run.

Put it between governor and an upstream, or between governor and Redis, and make
the link misbehave while a test watches what governor does::

    async with FaultProxy("127.0.0.1", upstream_port) as faults:
        ...  # point governor at faults.port
        faults.latency = 0.2          # each piece is held 200 ms before it is forwarded
        faults.stall()                # nothing more is forwarded, either way, until resume()
        faults.reset_after(30_000)    # each new connection: reset after 30000 bytes downstream
        faults.refuse()               # stop listening: connects are refused until accept()
        faults.reset_all()            # reset every open connection now
        faults.clear()                # back to a plain pipe

"Downstream" is from the target to whoever connected (the response side);
"upstream" is the other way. Faults apply to bytes not yet forwarded, so a mode
can change mid-stream. A reset is a real TCP RST (``SO_LINGER`` 0), not a FIN;
a stall keeps the connections open and silent, as a hung process does.

Every connection's two pumps are tasks owned by the proxy and cancelled by
:meth:`FaultProxy.stop`; nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy", "Link"]

READ_SIZE = 65536


@dataclass(eq=False)
class Link:
    """One proxied connection: the client side, the target side, and what crossed."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter
    upstream_bytes: int = 0  # client -> target, forwarded
    downstream_bytes: int = 0  # target -> client, forwarded
    reset_at: int | None = None  # reset once this many bytes went downstream
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False

    def alive(self) -> bool:
        """Whether the link is still open (a method: it changes across awaits)."""
        return not self.closed

    def reset(self) -> None:
        """Abort both sides with an RST."""
        if self.closed:
            return
        self.closed = True
        for writer in (self.client, self.target):
            _rst(writer)


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:port`` to ``target_host:target_port`` with faults on demand.

    ``port`` is chosen at :meth:`start` (or given, to come back on the same port
    after :meth:`refuse`). The mode attributes may be changed at any time.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.latency = 0.0  # seconds each piece waits before it is forwarded
        self.links: list[Link] = []
        self.accepted = 0  # connections accepted, ever
        self._reset_after: int | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Life cycle.
    async def start(self) -> Self:
        """Listen (on ``port``, or a free one that becomes ``port``)."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening, reset every connection and end every task."""
        await self._close_server()
        self.reset_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"

    # Faults.
    def stall(self) -> None:
        """Forward nothing more, in either direction, until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again (what was held goes first)."""
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def reset_after(self, n: int | None) -> None:
        """Reset each connection made from now on once ``n`` bytes went downstream.

        ``None`` turns it off. Connections already open keep their own setting.
        """
        self._reset_after = n

    def reset_all(self) -> None:
        """Reset every open connection now."""
        for link in self.links:
            link.reset()

    async def refuse(self) -> None:
        """Stop listening: new connections are refused (open ones carry on)."""
        await self._close_server()

    async def accept(self) -> None:
        """Listen again on the same port after :meth:`refuse`."""
        if self._server is None:
            await self.start()

    def clear(self) -> None:
        """No latency, no stall, no resets for new connections."""
        self.latency = 0.0
        self._reset_after = None
        self.resume()

    @property
    def open_links(self) -> int:
        return sum(1 for link in self.links if not link.closed)

    # The pipe.
    async def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            t_reader, t_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _rst(writer)  # the target refused: so do we
            return
        link = Link(client=writer, target=t_writer, reset_at=self._reset_after)
        self.links.append(link)
        link.tasks = [
            self._spawn(self._pump(link, reader, t_writer, downstream=False)),
            self._spawn(self._pump(link, t_reader, writer, downstream=True)),
        ]

    async def _pump(
        self,
        link: Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        downstream: bool,
    ) -> None:
        try:
            while link.alive():
                data = await reader.read(READ_SIZE)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()  # pass the half-close on
                    return
                await self._flowing.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)  # the injected latency: the point
                    await self._flowing.wait()
                if not link.alive():
                    return
                if downstream and link.reset_at is not None:
                    room = link.reset_at - link.downstream_bytes
                    if len(data) >= room:
                        writer.write(data[:room])
                        link.downstream_bytes += room
                        await writer.drain()
                        link.reset()
                        return
                writer.write(data)
                if downstream:
                    link.downstream_bytes += len(data)
                else:
                    link.upstream_bytes += len(data)
                await writer.drain()
        except (ConnectionError, OSError):
            link.reset()
        finally:
            others_done = all(t.done() or t is asyncio.current_task() for t in link.tasks)
            if link.tasks and others_done and not link.closed:
                link.closed = True  # both directions ended: close both sides
                link.client.close()
                link.target.close()
