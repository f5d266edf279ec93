"""The client side: governor's own HTTP/1.1 server, on asyncio protocols.

Why not aiohttp's server: a proxy needs the exact bytes of every request on the
wire, and per request aiohttp's server builds far more than a proxy uses. Here
one :class:`ClientConnection` per socket parses heads with :mod:`governor.http1`,
runs one handler task per request (owned by the connection, cancelled when the
client leaves), streams the request body to it with backpressure, and frames the
response.

Invariants:

* Every received byte is charged to exactly one request: its head (by size) and
  its body (by framing); bytes after a body wait in the buffer for the next
  request. Every byte written is counted as it is handed to the transport.
* A request whose framing cannot be trusted gets a 4xx and the connection closes.
* One request at a time per connection; pipelined requests wait, unparsed.
* :meth:`HTTPServer.shutdown` stops accepting, closes idle connections, lets
  requests in flight finish within the timeout, then closes the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast
from urllib.parse import unquote

from governor.config import Config, LimitsConfig, Timeouts
from governor.events import RequestNote, RequestSink, report
from governor.http1 import (
    CHUNKED,
    CRLF,
    HEAD_END,
    LAST_CHUNK,
    LENGTH,
    BadMessage,
    BodyReader,
    Header,
    Limits,
    RequestHead,
    chunk_prefix,
    encode_block,
    encode_head,
    parse_request_head,
)

log = logging.getLogger("governor.listener")

HIGH_WATER = 2**18  # request body bytes buffered before reads from the client pause
LINGER = 10.0  # seconds to read and drop a request body nobody read, after the response
SERVER = "governor"  # on governor's own answers; proxied responses keep the upstream's

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    421: "Misdirected Request",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    509: "Bandwidth Limit Exceeded",
}


class TunnelSink(Protocol):
    """Where a connection's bytes go once it switched protocols."""

    def client_data(self, data: bytes) -> None: ...

    def client_closed(self) -> None: ...

    def client_writable(self) -> None: ...


class Request:
    """One request on a connection: its head, its body stream, and its response."""

    __slots__ = (
        "_eof",
        "_pieces",
        "_queued",
        "_waiter",
        "body",
        "body_size",
        "bytes_out",
        "chunked_out",
        "claimed_in",
        "conn",
        "ended",
        "head",
        "head_at",
        "keep_alive",
        "note",
        "path",
        "received",
        "started",
        "status",
    )

    def __init__(self, conn: ClientConnection, head: RequestHead, note: RequestNote) -> None:
        self.conn = conn
        self.head = head
        self.note = note
        self.started = time.monotonic()
        target = head.target
        if target.startswith(("http://", "https://")):  # absolute-form: keep the path
            slash = target.find("/", target.find("//") + 2)
            target = target[slash:] if slash >= 0 else "/"
            head.target = target
        self.path = unquote(target.partition("?")[0], "utf-8", "replace")
        self.received = head.size  # bytes of this request received so far
        self.claimed_in = 0
        self.body: BodyReader | None = None
        if head.chunked:
            self.body = BodyReader(CHUNKED)
        elif head.content_length:
            self.body = BodyReader(LENGTH, head.content_length)
        self._pieces: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._eof = self.body is None
        self._waiter: asyncio.Future[None] | None = None
        self.body_size = 0  # body bytes received, framing aside
        self.head_at = conn.loop.time()
        self.keep_alive = head.keep_alive
        self.status = 0  # of the response, once started
        self.bytes_out = 0
        self.chunked_out = False
        self.ended = False  # the response was completed cleanly

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def headers(self) -> list[Header]:
        return self.head.headers

    @property
    def peer(self) -> str | None:
        return self.conn.peer

    @property
    def started_response(self) -> bool:
        return self.status != 0

    def claim_in(self) -> int:
        """This request's bytes received since the last claim."""
        n = self.received - self.claimed_in
        self.claimed_in = self.received
        return n

    # The request body.
    @property
    def body_done(self) -> bool:
        """Whether the whole body was received (True for a request without one)."""
        return self.body is None or self.body.done

    def _feed(self, data: bytes) -> int:
        """Body bytes from the connection; returns how many of them this body used."""
        body = self.body
        assert body is not None
        pieces, used = body.feed(data)
        self.received += used
        for piece in pieces:
            self._pieces.append(piece)
            self._queued += len(piece)
            self.body_size += len(piece)
        body_max = self.conn.server.body_max
        if body_max and self.body_size > body_max:
            raise BadMessage(413, f"the request body is larger than {body_max} bytes")
        if body.done:
            self._eof = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return used

    def _fail(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The next piece of the request body; ``b""`` at its end.

        Raises ConnectionResetError when the client leaves before the end.
        """
        while True:
            if self._pieces:
                piece = self._pieces.popleft()
                self._queued -= len(piece)
                if self._queued < HIGH_WATER:
                    self.conn._resume_body()
                return piece
            if self._eof:
                return b""
            if self.conn.closed:
                raise ConnectionResetError("the client closed the connection mid-body")
            if self.conn.body_error is not None:
                raise ConnectionResetError(f"the request body: {self.conn.body_error.reason}")
            self._waiter = self.conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def buffered(self) -> bool:
        return self._queued > HIGH_WATER

    # The response.
    def start_response(
        self,
        status: int,
        reason: str | None,
        block: bytes,
        *,
        length: int | None,
        body: bool = True,
        first: bytes = b"",
    ) -> None:
        """Send the response head (with ``first`` body bytes in the same write).

        ``block`` holds the header fields, each line preceded by CRLF, without
        framing: with ``body`` the framing is governor's (Content-Length when
        ``length`` is known, else chunked for HTTP/1.1 clients and close-delimited
        for HTTP/1.0). Without ``body`` (HEAD, 1xx, 204, 304) the block passes as
        given, a Content-Length in it included. A 101's block is the handshake's.
        """
        conn = self.conn
        self.status = status
        line = f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Unknown')}"
        if status == 101:
            data = line.encode("latin-1") + block + HEAD_END
            conn.write(data)
            self.bytes_out += len(data)
            return
        framing = b""
        if body:
            if length is not None:
                framing = b"\r\nContent-Length: %d" % length
            elif self.head.version >= (1, 1):
                framing = b"\r\nTransfer-Encoding: chunked"
                self.chunked_out = True
            else:
                self.keep_alive = False
        if conn.closing or (not self.body_done and not self.keep_alive):
            self.keep_alive = False
        if not self.keep_alive:
            framing += b"\r\nConnection: close"
        elif self.head.version < (1, 1):
            framing += b"\r\nConnection: keep-alive"
        data = b"".join((line.encode("latin-1"), block, framing, HEAD_END))
        if first:
            if self.chunked_out:
                prefix = chunk_prefix(len(first))
                conn.writelines((data, prefix, first, CRLF))
                self.bytes_out += len(data) + len(prefix) + len(first) + 2
                return
            data += first
        conn.write(data)
        self.bytes_out += len(data)

    def write(self, data: bytes) -> int:
        """Send body bytes; returns the bytes handed to the socket (framing included)."""
        if not data:
            return 0
        if self.chunked_out:
            prefix = chunk_prefix(len(data))
            self.conn.writelines((prefix, data, CRLF))
            n = len(prefix) + len(data) + 2
        else:
            self.conn.write(data)
            n = len(data)
        self.bytes_out += n
        return n

    def end(self) -> int:
        """Complete the response; returns the bytes that took."""
        n = 0
        if self.chunked_out:
            self.conn.write(LAST_CHUNK)
            n = len(LAST_CHUNK)
            self.bytes_out += n
        self.ended = True
        return n

    def respond(
        self, status: int, headers: Sequence[Header], body: bytes, *, send_body: bool = True
    ) -> None:
        """A whole small response of governor's own, in one write.

        Without ``send_body`` (a HEAD) a Content-Length in ``headers`` is kept.
        """
        if send_body:
            fields = [(n, v) for n, v in headers if n.lower() != "content-length"]
            self.start_response(status, None, encode_block(fields), length=len(body), first=body)
        else:
            self.start_response(status, None, encode_block(headers), length=None, body=False)
        self.end()

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full."""
        await self.conn.drain()


Handler = Callable[[Request], Awaitable[None]]


class ClientConnection(asyncio.Protocol):
    """One client connection: heads, bodies, responses, keep-alive and its timers."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.closed = False
        self.closing = False  # close after this request (shutdown, a refusal, the client's EOF)
        self.body_error: BadMessage | None = None  # the request body was refused midway
        self._counted = False  # in the server's per-client count
        self._body_timer: asyncio.TimerHandle | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._buf = b""
        self._request: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wait_since: float | None = None  # waiting for a head since (loop time)
        self._head_since: float | None = None  # a head's first byte arrived at
        self._read_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._sink: TunnelSink | None = None
        self.on_writable: Callable[[], None] | None = None  # once a full socket drains

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        refusal = self.server.admit(self.peer)
        if refusal is not None:
            self.closing = True
            self._refuse(503, refusal)
            return
        self._counted = True
        self.server.connections.add(self)
        self._idle()

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._sink is not None:
            self._sink.client_data(data)
            return
        request = self._request
        if request is not None and request.body is not None and not request.body.done:
            try:
                used = request._feed(data)
            except BadMessage as exc:
                self._refuse_body(request, exc)
                return
            if request.buffered():
                self._pause_reading()
            data = data[used:]
            if not data:
                return
        self._buf += data
        if request is None:
            self._next_request()
        elif len(self._buf) > self.server.limits.head:
            self._pause_reading()  # pipelined requests wait until this one is answered

    def eof_received(self) -> bool | None:
        request = self._request
        if self._sink is not None or (request is not None and request.body_done):
            self.closing = True  # nothing more will come: close once this one is answered
            return True  # half-close: the request in flight still gets its response
        return None  # close: no request, or one whose body can never be completed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._counted:
            self._counted = False
            self.server.release(self.peer)
        self._cancel_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._sink is not None:
            self._sink.client_closed()
        request = self._request
        if request is not None:
            request._fail()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))
        task = self._task
        if task is not None and not task.done() and self._sink is None:
            task.cancel()
        self.server.connection_closed()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._sink is not None:
            self._sink.client_writable()
        if self.on_writable is not None:
            self.on_writable()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Writing.
    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        self.transport.write(data)
        self.bytes_out += len(data)

    def writelines(self, parts: Sequence[bytes]) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        self.transport.writelines(parts)
        self.bytes_out += sum(len(p) for p in parts)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the client connection is closed")
        if not self._write_paused:
            return
        self._drain_waiter = self.loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def abort(self) -> None:
        """End the connection without a clean end of body, so the client sees truncation."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    # Tunnels.
    def switch(self, sink: TunnelSink) -> bytes:
        """Hand every further byte to ``sink``; returns those already received."""
        self._sink = sink
        rest, self._buf = self._buf, b""
        self._resume_reading()
        return rest

    def pause_reading(self) -> None:
        self._pause_reading()

    def write_paused(self) -> bool:
        return self._write_paused

    def resume_reading(self) -> None:
        self._resume_reading()

    # Requests.
    def _next_request(self) -> None:
        """Parse the next head from the buffer and start its handler, if it is complete."""
        if self.closed or (self.closing and not self._buf):
            return
        if not self._buf:
            self._idle()
            return
        try:
            head = self.server.parse(self._buf)
        except BadMessage as exc:
            self._refuse(exc.status, exc.reason)
            return
        if head is None:
            self._idle()
            return
        self._busy()
        body_max = self.server.body_max
        if body_max and head.content_length is not None and head.content_length > body_max:
            self._refuse(413, f"the request body is larger than {body_max} bytes")
            return
        self._buf = self._buf[head.size :]
        note = RequestNote(sinks=self.server.sinks, client=self.peer or "")
        request = Request(self, head, note)
        self._request = request
        if request.body is not None and self.server.body_min_rate:
            self._body_timer = self.loop.call_at(
                request.head_at + self.server.header_timeout, self._check_body_rate
            )
        if request.body is not None and self._buf:
            data, self._buf = self._buf, b""
            try:
                used = request._feed(data)
            except BadMessage as exc:  # refused before anything is forwarded
                self._request = None
                self._refuse(exc.status, exc.reason)
                return
            self._buf = data[used:]
        self._task = self.loop.create_task(self._serve(request))

    async def _serve(self, request: Request) -> None:
        try:
            await self.server.handler(request)
            if self._sink is not None:
                return
            if not request.ended:
                self.abort()
            elif not request.body_done and not self.closed:
                await self._linger(request)
        except asyncio.CancelledError:
            if not self.closed:
                raise
        except ConnectionError:
            self.abort()
        except Exception:
            log.exception("an unexpected error answering %s %s", request.method, request.path)
            if not request.started_response and not self.closed:
                with contextlib.suppress(ConnectionError):
                    request.respond(500, _plain(), b"500 Internal Server Error\n")
            self.abort()
        finally:
            self._finished(request)

    async def _linger(self, request: Request) -> None:
        """Read and drop the rest of a body nobody read, so the connection stays in step.

        Its bytes are charged like the rest of the request's (via ``note.charge_in``);
        a client still sending after :data:`LINGER` seconds is disconnected.
        """
        try:
            async with asyncio.timeout(LINGER):
                while await request.read():
                    request.note.charge_in(request.claim_in())
        except TimeoutError:
            self.abort()
        except ConnectionError:
            pass
        request.note.charge_in(request.claim_in())

    def _finished(self, request: Request) -> None:
        self._task = None
        self._request = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        request.note.charge_in(request.claim_in())
        report(request.note, request)
        if self.closed or self._sink is not None:
            return
        if not request.keep_alive or self.closing or not request.body_done:
            if self.transport is not None:
                self.transport.close()
            return
        self._resume_reading()
        self._next_request()

    def _refuse_body(self, request: Request, exc: BadMessage) -> None:
        """Stop reading a request body governor refuses (malformed, too large, too slow).

        The handler's next read fails; it answers ``exc.status`` if no response has
        started. The connection closes after the request either way.
        """
        self.body_error = exc
        self.closing = True
        request._fail()
        self._pause_reading()

    def _check_body_rate(self) -> None:
        """Whether the request body keeps ``body_min_rate`` after the header grace period."""
        self._body_timer = None
        request = self._request
        server = self.server
        rate = server.body_min_rate
        if request is None or request.body is None or request.body_done or self.closed:
            return
        now = self.loop.time()
        if self._read_paused:  # governor is not reading: the client is not to blame
            request.head_at += 1.0
            self._body_timer = self.loop.call_at(now + 1.0, self._check_body_rate)
            return
        got = request.body.raw
        due = (now - request.head_at - server.header_timeout) * rate
        if got < due:
            self._refuse_body(request, BadMessage(408, "the request body arrived too slowly"))
            return
        next_at = request.head_at + server.header_timeout + got / rate
        self._body_timer = self.loop.call_at(max(next_at, now + 0.1), self._check_body_rate)

    def _refuse(self, status: int, reason: str) -> None:
        """Answer a request that cannot be read, then close."""
        self.closing = True
        self.server.refused(status, reason, self.peer)
        body = f"{status} {REASONS.get(status, 'Bad Request')}: {reason}\n".encode()
        head = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        head += [("Server", SERVER), ("Content-Length", str(len(body))), ("Connection", "close")]
        data = encode_head(f"HTTP/1.1 {status} {REASONS.get(status, 'Bad Request')}", head)
        try:
            self.write(data + body)
        except ConnectionError:
            return
        assert self.transport is not None
        self.transport.close()

    # Timers and flow control. One timer per connection, armed lazily: requests on a
    # busy keep-alive connection move deadlines, not timers.
    def _idle(self) -> None:
        """Waiting for a head: close idle connections, and slow heads with a 408."""
        now = self.loop.time()
        if self._wait_since is None:
            self._wait_since = now
        if self._buf and self._head_since is None:
            self._head_since = now  # the head's first byte: its own deadline starts
        when = self._deadline()
        timer = self._timer
        if when is None or (timer is not None and timer.when() <= when):
            return  # the armed timer fires first and looks again
        if timer is not None:
            timer.cancel()
        self._timer = self.loop.call_at(when, self._expire)

    def _deadline(self) -> float | None:
        if self._head_since is not None:
            return self._head_since + self.server.header_timeout
        if self._wait_since is not None:
            return self._wait_since + self.server.keepalive
        return None

    def _busy(self) -> None:
        """A head arrived: no deadline until the connection waits again."""
        self._wait_since = None
        self._head_since = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        when = self._deadline()
        if when is None or self.closed or self._request is not None:
            return
        if self.loop.time() < when:
            self._timer = self.loop.call_at(when, self._expire)
        elif self._head_since is not None:
            self._refuse(408, "the request head did not arrive in time")
        elif self.transport is not None:
            self.transport.close()

    def close_if_idle(self) -> bool:
        """Close the connection if no request is in flight (for shutdown)."""
        self.closing = True
        if self._request is None and self._sink is None and self.transport is not None:
            self.transport.close()
            return True
        return False

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    def _resume_body(self) -> None:
        if self._read_paused and self.body_error is None:
            self._resume_reading()


def _plain() -> list[Header]:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Server", SERVER),
    ]


class HTTPServer:
    """The listener: accepts connections, owns them, and drains them on shutdown."""

    def __init__(
        self,
        handler: Handler,
        *,
        sinks: Sequence[RequestSink],
        limits: LimitsConfig,
        timeouts: Timeouts,
    ) -> None:
        self.handler = handler
        self.sinks = sinks
        self.connections: set[ClientConnection] = set()
        self.per_client: dict[str | None, int] = {}
        self.loop = asyncio.get_event_loop()
        self._server: asyncio.Server | None = None
        self._drained: asyncio.Event | None = None
        self.configure(limits, timeouts)

    def reconfigure(self, config: Config) -> None:
        """A reload: ``limits`` and the client-side ``timeouts`` (see :meth:`configure`)."""
        self.configure(config.limits, config.timeouts)

    def configure(self, limits: LimitsConfig, timeouts: Timeouts) -> None:
        """Take (new) limits and timeouts; connections use them from their next request."""
        self.limits = Limits(
            request_line=limits.request_line,
            field=limits.header_field,
            head=limits.header_total,
            fields=limits.header_count,
        )
        self.body_max = limits.body_max
        self.max_connections = limits.connections
        self.max_per_client = limits.connections_per_client
        self.keepalive = timeouts.keepalive
        self.header_timeout = timeouts.request_header
        self.body_min_rate = timeouts.body_min_rate
        self.websocket_idle = timeouts.websocket_idle

    def admit(self, peer: str | None) -> str | None:
        """Count a new connection from ``peer``; the reason it is refused, if it is."""
        if self.max_connections and len(self.connections) >= self.max_connections:
            return f"governor holds {self.max_connections} connections already"
        held = self.per_client.get(peer, 0)
        if self.max_per_client and held >= self.max_per_client:
            return f"this address holds {self.max_per_client} connections already"
        self.per_client[peer] = held + 1
        return None

    def release(self, peer: str | None) -> None:
        held = self.per_client.get(peer, 0) - 1
        if held > 0:
            self.per_client[peer] = held
        else:
            self.per_client.pop(peer, None)

    def parse(self, buf: bytes) -> RequestHead | None:
        return parse_request_head(buf, self.limits)

    def refused(self, status: int, reason: str, peer: str | None) -> None:
        log.info("refused a request from %s: %d %s", peer or "?", status, reason)

    async def start(self, sock: Any) -> None:
        """Accept connections on the listening socket ``sock``."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self), sock=sock, backlog=1024
        )

    def connection_closed(self) -> None:
        if self._drained is not None and not self.connections:
            self._drained.set()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; let requests in flight finish within ``grace``; close the rest."""
        if self._server is None:
            return
        self._server.close()
        self._drained = asyncio.Event()
        for conn in list(self.connections):
            conn.close_if_idle()
        if self.connections:
            try:
                async with asyncio.timeout(grace):
                    await self._drained.wait()
            except TimeoutError:
                log.warning("shutdown: closing %d connections still busy", len(self.connections))
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
            task = conn._task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])
        self._server = None
