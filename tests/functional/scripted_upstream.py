"""An upstream that answers with exact bytes of the test's choosing, on raw sockets.

Each route is the bytes written as the answer and, optionally, bytes written
after it on the same connection (at once or ``delay`` seconds later): what a buggy
or desynchronised application does. The upstream records which connection each
request came on and sets an event when governor closes a connection, so a test
waits on what happened rather than for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self


@dataclass
class Route:
    answer: bytes
    after: bytes = b""  # written after the answer, on the same connection
    delay: float | None = None  # None: in the same write as the answer
    close_after: bool = False  # close the connection (FIN) after ``delay`` instead


@dataclass(eq=False)
class Connection:
    number: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # governor closed it


class ScriptedUpstream:
    """A loopback HTTP/1.1 server whose answers are bytes, route by route."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.connections: list[Connection] = []
        self.requests: list[tuple[int, str]] = []  # (connection number, request line)
        self.wrote_after = asyncio.Event()  # the late bytes went out
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(len(self.connections))
        self.connections.append(conn)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                self.requests.append((conn.number, line))
                route = self.routes[line.split(" ")[1]]
                if route.delay is None:
                    writer.write(route.answer + route.after)
                    continue
                writer.write(route.answer)
                await asyncio.sleep(route.delay)  # the scenario: a write some time later
                if route.close_after:
                    writer.close()
                else:
                    writer.write(route.after)
                self.wrote_after.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            conn.closed.set()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)
