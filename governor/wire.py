"""Counting what crosses the client socket, at the socket.

aiohttp parses requests before a handler sees them, so the raw size of a request
line, its headers and its chunk framing is gone by then. This module hooks the one
place where every received byte passes, ``data_received``, and keeps a running
count per connection. Egress needs no hook: aiohttp's stream writer counts every
byte it hands the transport (``AbstractStreamWriter.output_size``).

Invariant: ``bytes_in`` is the number of bytes the kernel delivered on this
connection; ``claimed_in`` is how many of them have been charged to some request,
so each received byte is charged once. A request with a known length (a
Content-Length body, or none) never claims more than its head and its body, so
the next request's bytes, if they arrive early, are left for it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


class CountingRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, counting the bytes it receives."""

    __slots__ = ("bytes_in", "claimed_in")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bytes_in = 0
        self.claimed_in = 0

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        super().data_received(data)

    def claim_in(self) -> int:
        """Bytes received since the last claim (charged once to the caller's request)."""
        delta = self.bytes_in - self.claimed_in
        self.claimed_in = self.bytes_in
        return delta


class CountingServer(web.Server):
    """The low-level aiohttp server, building :class:`CountingRequestHandler` protocols."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handler_kwargs: dict[str, Any] = dict(kwargs)
        for key in ("request_factory", "handler_cancellation", "loop"):
            self._handler_kwargs.pop(key, None)

    def __call__(self) -> CountingRequestHandler:
        return CountingRequestHandler(self, loop=self._loop, **self._handler_kwargs)


class RequestIngress:
    """The received bytes of one request: its head and its body, and no more.

    Created when the handler starts, before anything awaits, when the bytes
    received so far are this request's head plus the part of its body already
    parsed (``body_fed``). For a chunked body the framing is unknown, so every
    byte received until the request ends is claimed.
    """

    __slots__ = ("_conn", "_expected", "_taken")

    def __init__(
        self,
        conn: CountingRequestHandler,
        *,
        body_fed: int,
        content_length: int | None,
        chunked: bool,
    ) -> None:
        self._conn = conn
        unclaimed = conn.bytes_in - conn.claimed_in
        self._expected = None if chunked else unclaimed - body_fed + (content_length or 0)
        self._taken = 0

    @property
    def taken(self) -> int:
        """Every byte claimed for this request so far."""
        return self._taken

    def claim(self) -> int:
        """This request's bytes received since the last claim."""
        conn = self._conn
        n = conn.bytes_in - conn.claimed_in
        if self._expected is not None:
            n = max(0, min(n, self._expected - self._taken))
        conn.claimed_in += n
        self._taken += n
        return n
