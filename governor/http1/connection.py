"""One client connection: governor's own HTTP/1.1 server side, on asyncio protocols.

One :class:`ClientConnection` per socket parses heads (:mod:`governor.http1.wire`), answers its
requests in one task of its own (cancelled when the client leaves), streams the
request body to it with backpressure (:mod:`governor.http1.flow`), and moves through the states of
:mod:`governor.http1.state`. Why governor has its own server: ``docs/http1.md``.

Invariants:

* Every received byte is charged to exactly one request: its head (by size) and
  its body (by framing); bytes after a body wait in the buffer for the next
  request. Bytes written are charged as the client's socket accepts them
  (:meth:`ClientConnection.sent`): what the transport still held when the
  connection was lost never left governor and is never charged; what the kernel
  accepted but the client never read stays charged.
* A response is done when the socket accepted all of it (:meth:`ClientConnection.settle`).
  A client whose socket accepts no byte for ``timeouts.send`` while governor has
  bytes for it is closed (nginx's ``send_timeout``), and what governor holds for a
  slow client is bounded: producers pause at :data:`WRITE_HIGH` buffered bytes.
* A request whose framing cannot be trusted gets a 4xx and the connection closes.
* One request at a time per connection; pipelined requests wait, unparsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from governor.errors import BadMessage
from governor.http1.flow import Flow
from governor.http1.ports import TunnelSink
from governor.http1.request import Request, refusal
from governor.http1.sending import SendWatch, accepted, reset, socket_unsent
from governor.http1.serving import Listener, Place
from governor.http1.state import (
    BUSY,
    CLOSED,
    FLUSHING,
    HEAD,
    IDLE,
    NEW,
    TUNNEL,
    WAITING,
    State,
    check,
    deadline,
)
from governor.http1.wire import parse_request_head
from governor.observe.events import RequestNote
from governor.tls.channel import TLSChannel

log: Final = logging.getLogger("governor.listener")

WRITE_HIGH: Final = 2**16  # response bytes a client's transport holds before its producer pauses
WRITE_LOW: Final = 2**14  # ... and resumes
LINGER: Final = 10.0  # seconds to read and drop a request body nobody read, after the response


class ClientConnection(asyncio.Protocol):
    """One client connection: heads, bodies, responses, keep-alive and its timers."""

    def __init__(self, server: Listener, place: Place) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.listener = place.address
        self.scheme = place.scheme
        self._label = place.label  # scheme://address, for the access log and metrics
        self._tls: TLSChannel | None = None  # TLS: the channel under it, counting its bytes
        self._socket: Any = None
        self.state = NEW
        self._since = self.loop.time()  # when the state was entered (loop time)
        # Close after this request (shutdown, a refusal, the client's EOF).
        self.closing = server.draining
        self.body_error: BadMessage | None = None  # the request body was refused midway
        self._counted = False  # in the server's per-client count
        self.handed = 0  # bytes handed to the transport
        self._sent_at_loss: int | None = None  # what the socket had accepted, once lost
        self._reset = False  # it was reset (governor's, of a client accepting nothing; broken())
        self._watch = SendWatch(self)
        self._buf = b""
        self._request: Request | None = None
        # The connection's worker (see _work), waiting on ``_ready`` while idle.
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.flow = Flow(self.loop, write_high=WRITE_HIGH, write_low=WRITE_LOW)
        self._sink: TunnelSink | None = None
        self.on_writable: Callable[[], None] | None = None  # once a full socket drains

    @property
    def closed(self) -> bool:
        """The connection is lost."""
        return self.state is CLOSED

    def _enter(self, state: State) -> None:
        """The one place the state changes."""
        check(self.state, state)
        self.state = state
        if state in WAITING:
            self._since = self.loop.time()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._socket = transport.get_extra_info("socket")
        self._tls = transport if isinstance(transport, TLSChannel) else None
        self.flow.attach(self.transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        refusal = self.server.admit(self.peer)
        if refusal is not None:
            self.closing = True
            self._refuse(503, refusal, None)
            return
        self._counted = True
        self.server.connections.add(self)
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.client_data(data)
            return
        request = self._request
        if request is not None and request.body is not None and not request.body.done:
            try:
                used = request._feed(data)
            except BadMessage as exc:
                request.refuse_body(exc)
                return
            data = data[used:]
            if not data:
                return
        self._buf += data
        if request is None:
            self._next_request()
        elif len(self._buf) > self.server.limits.head:
            self.pause_reading()  # pipelined requests wait until this one is answered

    def eof_received(self) -> bool | None:
        request = self._request
        if self._sink is not None or (request is not None and request.body_done):
            self.closing = True  # nothing more will come: close once this one is answered
            return True  # half-close: the request in flight still gets its response
        return None  # close: no request, or one whose body can never be completed

    def handshaken(self, channel: TLSChannel) -> None:
        self.handed = channel.handed  # the handshake: charged by the listener, apart

    def overhead(self) -> int:
        """Bytes received beyond the plaintext (TLS records) not claimed yet; 0 on plain HTTP."""
        tls = self._tls
        return 0 if tls is None else tls.overhead()

    def connection_lost(self, exc: Exception | None) -> None:
        # The socket is still open here. A reset (either side's) dropped what it held unsent.
        if self._tls is not None:
            self.handed = self._tls.handed  # its close_notify, an alert: written by TLS itself
        reset = isinstance(exc, ConnectionError) or self._reset
        self._sent_at_loss = self._accepted_at_loss(reset=reset)
        self._enter(CLOSED)
        self._watch.cancel()
        self.server.connections.discard(self)
        if self._counted:
            self._counted = False
            self.server.release(self.peer)
        self._cancel_timer()
        if self._sink is not None:
            self._sink.client_closed()
        request = self._request
        if request is not None:
            request.stop_body_watch()
            request._fail()
        self.flow.lose(ConnectionResetError("the client closed the connection"))
        task = self._task
        if task is not None and not task.done() and self._sink is None:
            task.cancel()
        if request is None and self._tls is not None:
            self._tls.leftovers(self.sent())  # else once the request made its last claim
        self.server.connection_closed()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self._sink is not None:
            self._sink.client_writable()
        if self.on_writable is not None:
            self.on_writable()

    # Writing.
    def write(self, data: bytes) -> None:
        self.writelines((data,))

    def writelines(self, parts: Sequence[bytes]) -> None:
        transport = self.transport
        if self.state is CLOSED or transport is None or transport.is_closing():
            raise ConnectionResetError("the client connection is closed")
        n = 0
        for part in parts:
            n += len(part)
        if len(parts) == 1:
            transport.write(parts[0])
        else:
            transport.writelines(parts)
        tls = self._tls
        self.handed = self.handed + n if tls is None else tls.handed
        if self._watch.timer is None and transport.get_write_buffer_size():
            self._watch.arm()

    def sent(self) -> int:
        """Bytes the socket accepted so far: handed to the transport, less what it holds
        (which is exactly what the socket has not taken while it is open). Once it is
        closing it may have dropped that buffer (EPIPE, a reset): the kernel is asked."""
        if self._sent_at_loss is not None:
            return self._sent_at_loss
        transport = self.transport
        if transport is None:
            return 0
        if not transport.is_closing():
            return self.handed - transport.get_write_buffer_size()
        return self._accepted_at_loss(reset=self._reset)

    def transmitted(self) -> int:
        """:meth:`sent`, less what the kernel holds unsent (which a reset would drop)."""
        n = self.sent()
        if n and self._sent_at_loss is None:
            n -= socket_unsent(self._socket)
        return n

    def pending(self) -> int:
        """Bytes handed to the transport that the socket has not accepted yet."""
        transport = self.transport
        return 0 if self.closed or transport is None else transport.get_write_buffer_size()

    def _accepted_at_loss(self, *, reset: bool = False) -> int:
        transport = self.transport
        return 0 if transport is None else accepted(transport, self.handed, reset=reset)

    async def settle(self) -> None:
        """Wait until the socket accepted every byte handed to it, or the connection is gone.

        Bounded by ``timeouts.send``: a client that accepts nothing that long is closed.
        """
        transport = self.transport
        if transport is None or self.closed or not transport.get_write_buffer_size():
            return
        if self._watch.timer is None:
            self._watch.arm()
        with contextlib.suppress(ConnectionError):
            await self.flow.settle()

    def stalled(self) -> None:
        """The socket accepted no byte for ``timeouts.send`` while governor had some for it."""
        timeout = self.server.send_timeout
        message = "resetting a connection from %s: it accepted no byte in %g s"
        log.info(message, self.peer or "?", timeout)
        self.closing = True
        self._reset = True
        if self.transport is not None:
            reset(self.transport)

    def send_timeout(self) -> float:
        return self.server.send_timeout

    def broken(self) -> None:  # a move to its socket failed (a reset): unsent bytes are lost
        self._reset = True

    def _shut(self) -> None:
        """Close once what was handed to the transport is sent (within ``timeouts.send``)."""
        transport = self.transport
        if transport is None or self.state is CLOSED:
            return
        if self.state is not FLUSHING:
            self._enter(FLUSHING)
        transport.close()
        if self._watch.timer is None and transport.get_write_buffer_size():
            self._watch.arm()

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the client connection is closed")
        await self.flow.drain()

    def abort(self) -> None:
        """End the connection without a clean end of body, so the client sees truncation."""
        self.closing = True
        self._shut()

    # Tunnels.
    def switch(self, sink: TunnelSink) -> bytes:
        """Hand every further byte to ``sink``; returns those already received."""
        self._enter(TUNNEL)
        self._sink = sink
        rest, self._buf = self._buf, b""
        self.resume_reading()
        return rest

    def pause_reading(self) -> None:
        if not self.closed:
            self.flow.pause_reading()

    def write_paused(self) -> bool:
        return self.flow.writing_paused

    def resume_reading(self) -> None:
        if not self.closed:
            self.flow.resume_reading()

    # Requests.
    def _next_request(self) -> None:
        """Parse the next head from the buffer and start its handler, if it is complete."""
        if self.closed or (self.closing and not self._buf):
            return
        if not self._buf:
            self._idle()
            return
        try:
            head = parse_request_head(self._buf, self.server.limits)
        except BadMessage as exc:
            self._refuse(exc.status, exc.reason, self._buf)
            return
        if head is None:
            self._idle()
            return
        self._enter(BUSY)  # no deadline until the connection waits again
        body_max = self.server.body_max
        if body_max and head.content_length is not None and head.content_length > body_max:
            self._refuse(413, f"the request body is larger than {body_max} bytes", self._buf)
            return
        raw = self._buf
        self._buf = raw[head.size :]
        note = RequestNote(sinks=self.server.sinks, client=self.peer or "", listener=self._label)
        request = Request(self, head, note)
        self._request = request
        if request.body is not None and self._buf:
            data, self._buf = self._buf, b""
            try:
                used = request._feed(data)
            except BadMessage as exc:  # refused before anything is forwarded
                self._request = None
                self._refuse(exc.status, exc.reason, raw)
                return
            self._buf = data[used:]
        request.watch_body_rate()
        if self._ready is not None:
            self._ready.set_result(None)  # the idle worker takes it
        elif self._task is None or self._task.done():
            self._task = self.loop.create_task(self._work())
        # else the worker is finishing the request before (a pipelined one): it takes it next

    async def _work(self) -> None:
        """Answer the connection's requests in turn, then end: one task for the connection,
        not one per request (a task's creation and end cost 7.7k instructions a request)."""
        while True:
            request = self._request
            if request is None:
                if not await self._wait():
                    return
                continue
            try:
                await self.server.handler(request)
                if self._sink is not None:
                    return
                if not request.ended:
                    self.abort()
                elif not (request.body_done or self.closed or await request.linger(LINGER)):
                    self.abort()  # still sending after LINGER seconds
                if self.pending():
                    await self.settle()  # a response is done once the socket accepted all of it
            except asyncio.CancelledError:
                if not self.closed:
                    raise
            except ConnectionError:
                self.abort()
            except Exception:
                log.exception("an unexpected error answering %s %s", request.method, request.path)
                if not request.started_response and not self.closed:
                    with contextlib.suppress(ConnectionError):
                        request.respond_text(500, "500 Internal Server Error")
                self.abort()
            finally:
                self._finished(request)

    async def _wait(self) -> bool:
        """Wait for the next request; False when none can follow (closed, closing, a tunnel)."""
        if self.state not in WAITING:
            return False
        ready = self._ready = self.loop.create_future()
        try:
            await ready
        except asyncio.CancelledError:
            if not self.closed:
                raise
            if self._request is not None:  # taken, not begun: still charged and reported
                self._finished(self._request)
            return False
        finally:
            self._ready = None
        return True

    def _finished(self, request: Request) -> None:
        self._request = None
        request.stop_body_watch()
        request.charge(final=True)  # what arrived, or was accepted, since the last claim
        request.report()
        if self._tls is not None:
            self._tls.finished(request.meter, request.out_start + request.sent(), lost=self.closed)
        if self.closed or self._sink is not None:
            return
        if not request.keep_alive or self.closing or not request.body_done:
            self._shut()
            return
        self._enter(IDLE)
        self.resume_reading()
        self._next_request()

    def _refuse(self, status: int, reason: str, raw: bytes | None) -> None:
        """Answer a request that cannot be read, then close.

        ``raw`` is every byte of the request received (None when no request was
        read: a connection refused on arrival); the listener charges and reports it.
        """
        self.closing = True
        data = refusal(status, reason)
        sent = 0
        try:
            before = self.handed
            self.write(data)
            sent = self.handed - before or len(data)  # wire bytes (before a handshake: queued)
        except ConnectionError:
            pass
        if self._tls is not None:
            self._tls.out_mark = self.handed  # charged with the refusal, not as leftovers
        self.server.refused(status, reason, self.peer, raw, sent)
        if not sent:
            return
        self._shut()

    # Timers and flow control. One timer per connection, armed lazily: requests on a
    # busy keep-alive connection move deadlines, not timers.
    def _idle(self) -> None:
        """Waiting for a head: close idle connections, and slow heads with a 408."""
        if self.state not in WAITING:
            return
        if self._buf and self.state is not HEAD:
            self._enter(HEAD)  # the head's first byte: its own deadline starts
        when = self._deadline()
        timer = self._timer
        if when is None or (timer is not None and timer.when() <= when):
            return  # the armed timer fires first and looks again
        if timer is not None:
            timer.cancel()
        self._timer = self.loop.call_at(when, self._expire)

    def _deadline(self) -> float | None:
        server = self.server
        return deadline(
            self.state,
            self._since,
            keepalive=server.keepalive,
            header_timeout=server.header_timeout,
            stopping=server.stopping,
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        when = self._deadline()  # None unless waiting for a head
        if when is None:
            return
        if self.loop.time() < when:
            self._timer = self.loop.call_at(when, self._expire)
        elif self.state is HEAD:
            self._refuse(408, "the request head did not arrive in time", self._buf)
        else:
            self._shut()

    def stop_when_idle(self) -> None:
        """The server stops: close after the request in flight, or when idle by its deadline
        (now if it served a request; ``FIRST_REQUEST_GRACE`` if not; a head: its own)."""
        self.closing = True
        if self._request is None and self._sink is None and not self.closed:
            self._idle()
