"""One HTTP/1.1 connection to a tenant's site (the upstream side), on asyncio protocols.

Bodies pass byte for byte (nothing added but the framing and the forwarding headers
the proxy sets). What governor holds for one client is bounded by :data:`BUDGET`: each
read is sized to the room its client side has left, so a slow client pauses its
upstream instead of filling memory. Every failure met on the upstream's socket becomes
governor's error in one place, :func:`governor.errors.upstream_error`. A byte outside an
exchange never reaches a client: it makes the connection unusable and it is closed at
once. Pooling: :mod:`governor.http1.pool`; the reasoning: ``docs/http1.md``.
"""

from __future__ import annotations

import asyncio
import select
from typing import Final, Protocol, cast

from governor.errors import BadMessage, UpstreamBroken, UpstreamTimeout, upstream_error
from governor.http1.body import CHUNKED, LENGTH, UNTIL_CLOSE, BodyReader
from governor.http1.flow import BodyQueue, Flow
from governor.http1.heads import ResponseHead
from governor.http1.ports import BodySink, OriginSink, Taker
from governor.http1.wire import HEAD_END, parse_response_head, response_has_body

# Response bytes held for one client (its transport's and here) before the upstream is paused:
# connection.WRITE_HIGH. No read is larger: a client that stops reading pins about this much.
BUDGET: Final = 2**16
# A response's first read has room for its head too: a body within BUDGET comes with it.
HEAD_ROOM: Final = 2**13
READ_MAX: Final = BUDGET + HEAD_ROOM  # the pool's read buffer
MIN_READ: Final = 2**14  # the smallest read (the client transport's low-water mark)
HIGH_WATER: Final = BUDGET  # body bytes queued here (not spliced) before reads pause
IDLE_TIMEOUT: Final = 30.0  # seconds a pooled connection may sit idle
SPLIT_FROM: Final = 2**13  # a first read this large has its head copied out apart (buffer_updated)

PoolKey = tuple[str, str, int]
_READABLE: Final = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0)  # data, a FIN


class Pool(Protocol):
    """What a connection needs of its pool (:class:`~governor.http1.pool.OriginPool`)."""

    loop: asyncio.AbstractEventLoop
    read_array: bytearray  # and a view of it: see get_buffer()
    read_buffer: memoryview

    def forget(self, conn: OriginConnection) -> None: ...  # conn closed: no longer the pool's


class OriginConnection(asyncio.BufferedProtocol):
    """One connection to an upstream, carrying one exchange at a time.

    A buffered protocol so that governor, not the event loop, sizes each read
    (see :meth:`get_buffer`).
    """

    def __init__(self, pool: Pool, key: PoolKey) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.head: ResponseHead | None = None
        self.received_any = False
        self.stray = False  # the upstream sent bytes outside an exchange
        self._buf = b""
        self._method = "GET"
        self._body: BodyReader | None = None
        self.flow = Flow(self.loop, write_high=None, write_low=None)
        self._queue = BodyQueue(self.flow, high=HIGH_WATER, low=MIN_READ)
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None  # in the pool since (loop time)
        self.taker: Taker | None = None  # the client the current exchange answers
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at: float | None = None  # the response head is due by (loop time)
        self._sink: OriginSink | None = None
        self._splice: BodySink | None = None
        self._spliced: asyncio.Future[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._silence = 0.0
        self._last_data = 0.0
        self._poller: select.poll | None = None  # see readable()

    # asyncio.BufferedProtocol
    def get_buffer(self, sizehint: int) -> memoryview:
        return self.pool.read_buffer[: self._read_size()]

    def buffer_updated(self, nbytes: int) -> None:
        pool, split = self.pool, 0
        if nbytes > SPLIT_FROM and self.head is None and not self._buf:
            # A response's first read: its head and the body bytes after it are copied out
            # apart, so a body is copied once (not with the head, then again without it).
            # A read split anywhere is what two reads would have brought.
            end = pool.read_array.find(HEAD_END, 0, nbytes)
            if end >= 0 and end + 4 < nbytes:
                split = end + 4
                self.data_received(bytes(pool.read_buffer[:split]))
                if self._error is not None or self.closed:
                    return  # refused, or bytes outside an exchange: closing
        self.data_received(bytes(pool.read_buffer[split:nbytes]))

    def _read_size(self) -> int:
        """The room the client side has left within :data:`BUDGET` (a client that holds
        BUDGET has paused this connection's reads already; MIN_READ at the least), and
        :data:`HEAD_ROOM` more while the response head is awaited."""
        taker = self.taker
        held = self._queue.size + (taker.pending() if taker is not None else 0)
        room = max(MIN_READ, BUDGET - held)
        return room if self.head is not None else room + HEAD_ROOM

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.flow.attach(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.idle_since is not None:
            self.close()  # the upstream spoke outside an exchange: never reuse it
            return
        self.received_any = True
        if self._sink is not None:
            self._sink.origin_data(data)
            return
        if self.head is None:
            self._buf += data
            try:
                self._parse_head()
            except BadMessage as exc:
                self._fail(upstream_error(exc, "head"))
            return
        self._feed(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._sink is not None:
            self.flow.lose(UpstreamBroken("the upstream closed the connection"))
            self._sink.origin_closed()
            return
        body = self._body
        complete = body is not None and (body.done or body.close())
        if complete:
            self._eof = True
        if self.head is None or not complete:
            self._fail(upstream_error(exc, "lost"))
        self._end_splice(None)
        self._wake()
        self.flow.lose(UpstreamBroken("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()
        if self._sink is not None:
            self._sink.origin_writable()

    # Parsing.
    def _parse_head(self) -> None:
        while self.head is None:
            head = parse_response_head(self._buf)
            if head is None:
                return
            self._buf = self._buf[head.size :]
            if 100 <= head.status < 200 and head.status != 101:
                continue  # interim responses (100 Continue, 103) are not passed on
            self.head = head
            self._deadline_at = None
            if head.status == 101 or not response_has_body(self._method, head.status):
                self._body = BodyReader(LENGTH, 0)
            elif head.chunked:
                self._body = BodyReader(CHUNKED, error_status=502)
            elif head.content_length is not None:
                self._body = BodyReader(LENGTH, head.content_length)
            else:
                self._body = BodyReader(UNTIL_CLOSE)
            if self._body.done:
                self._eof = True
            rest, self._buf = self._buf, b""
            self._wake()
            if rest:
                self._feed(rest)

    def _feed(self, data: bytes) -> None:
        body = self._body
        if body is None or body.done:
            self._after_end(data)
            return
        try:
            pieces, used = body.feed(data)
        except BadMessage as exc:
            self._fail(upstream_error(exc, "body"))
            return
        splice = self._splice
        if splice is not None:
            self._last_data = self.loop.time()
            try:
                for piece in pieces:
                    if splice.body_data(piece):
                        self.flow.pause_reading()
            except ConnectionError as exc:
                self._end_splice(exc)
                self.close()
                return
            if _complete(body):
                self._eof = True
                self._end_splice(None)
                self._after_end(data[used:])
            return
        for piece in pieces:
            self._queue.put(piece)  # reading pauses above HIGH_WATER
        if _complete(body):
            self._eof = True
            self._after_end(data[used:])
        self._wake()

    def _after_end(self, data: bytes) -> None:
        """Bytes past the end of the response: a tunnel's after a 101, else stray.

        A stray byte (a buggy or desynchronised upstream writing after its response)
        must never be read as the next exchange's response: the connection is closed
        now. The response already received is whole and still goes to its client.
        """
        if not data:
            return
        head = self.head
        if self._sink is None and head is not None and head.status == 101:
            self._buf += data  # the tunnel's first bytes, handed over by switch()
            return
        self.stray = True
        self.close()

    def _fail(self, exc: BaseException) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._error is None:
            self._error = exc
        self._end_splice(UpstreamBroken(str(exc)))
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # The exchange.
    def send(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise UpstreamBroken("the upstream connection is closed")
        self.transport.write(data)

    def send_lines(self, parts: list[bytes]) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise UpstreamBroken("the upstream connection is closed")
        self.transport.writelines(parts)

    async def drain(self) -> None:
        if not self.closed:
            await self.flow.drain()

    def begin(self, method: str, deadline: float | None) -> None:
        """Start an exchange on this connection (taken from the pool or new).

        ``deadline``: seconds from now for the response head to arrive; None when
        a request body follows (:meth:`start_deadline` once it is sent).
        """
        self._method = method
        self.head = None
        self._body = None
        self._eof = False
        self._error = None
        self.received_any = False
        self._deadline_at = None
        if deadline is not None:
            self.start_deadline(deadline)

    def start_deadline(self, seconds: float) -> None:
        """The request is sent: the upstream now has ``seconds`` to answer.

        One timer per connection, armed lazily: it looks at the current exchange's
        deadline when it fires, so a fast exchange costs no timer of its own.
        """
        if self.head is not None or self._deadline_at is not None or self.closed:
            return
        when = self._deadline_at = self.loop.time() + seconds
        timer = self._deadline
        if timer is not None and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._deadline = self.loop.call_at(when, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._deadline = None
        when = self._deadline_at
        if when is None or self.head is not None or self.closed:
            return
        if self.loop.time() < when:
            self._deadline = self.loop.call_at(when, self._head_timed_out)
            return
        self._fail(UpstreamTimeout("the upstream sent no response headers in time"))

    async def response_head(self) -> ResponseHead:
        """Wait for the response head (interim 1xx responses skipped, 101 returned)."""
        while (waiter := self.head_waiter()) is not None:
            await waiter
        assert self.head is not None
        return self.head

    def head_waiter(self) -> asyncio.Future[None] | None:
        """None once the response head is in, else a future done when something changed
        (the exchange awaits it itself: a coroutine fewer on each wake-up); or its error."""
        if self.head is not None:
            return None
        if self._error is not None:
            raise self._error
        if self._waiter is None or self._waiter.done():
            self._waiter = self.loop.create_future()
        return self._waiter

    def read_nowait(self) -> list[bytes]:
        """The body's pieces already received, without waiting (``[]`` when none)."""
        return self._queue.take_all()

    @property
    def queued(self) -> int:
        """Body bytes received and held here, not yet taken."""
        return self._queue.size

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._queue

    def splice(self, sink: BodySink, silence: float) -> asyncio.Future[None]:
        """Hand the rest of the response body to ``sink`` as it arrives, without a task.

        Each piece goes to ``sink.body_data`` straight from the protocol callback;
        when it returns True (the client's socket is full) reads from the upstream
        pause until :meth:`resume_reading`. The future resolves at the body's end,
        or fails with UpstreamBroken (the upstream broke off, or sent nothing for
        ``silence`` seconds) or the sink's ConnectionError.
        """
        done: asyncio.Future[None] = self.loop.create_future()
        self._spliced, self._splice, self._silence = done, sink, silence
        self._last_data = self.loop.time()
        try:
            while self._queue:
                sink.body_data(self._queue.get())
        except ConnectionError as exc:
            self._end_splice(exc)
            self.close()
            return done
        if self._eof:
            self._end_splice(None)
        elif self._error is not None:
            self._end_splice(UpstreamBroken(str(self._error)))
        else:
            self._watchdog = self.loop.call_later(silence, self._check_silence)
            self.flow.resume_reading()
        return done

    def _check_silence(self) -> None:
        self._watchdog = None
        if self._spliced is None:
            return
        quiet = self.loop.time() - self._last_data
        if self.flow.reading_paused:  # waiting on the client, not on the upstream
            quiet = 0.0
            self._last_data = self.loop.time()
        if quiet >= self._silence:
            self._fail(UpstreamBroken(f"the upstream sent nothing for {self._silence:g} s"))
            return
        self._watchdog = self.loop.call_later(self._silence - quiet, self._check_silence)

    def _end_splice(self, exc: BaseException | None) -> None:
        done = self._spliced
        if done is None:
            return
        self._spliced = None
        self._splice = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not done.done():
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)
                done.exception()  # retrieved: the exchange may have gone (client left)

    @property
    def reusable(self) -> bool:
        """Whether the response was read to its exact end and nothing else came."""
        head, body = self.head, self._body
        return (
            not self.closed
            and not self.stray
            and head is not None
            and head.keep_alive
            and head.status != 101
            and body is not None
            and body.done
            and self._eof
            and not self._queue
            and not self._buf
            and self._error is None
        )

    def readable(self) -> bool:
        """Whether the socket holds bytes (or an EOF) not delivered yet: one poll, no read.

        The event loop delivers what arrives on an idle connection a loop iteration
        later; this closes that window before the connection carries a request.
        """
        poller = self._poller
        if poller is None:  # one per connection: its socket (and descriptor) never changes
            transport = self.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None:
                return False
            poller = self._poller = select.poll()
            poller.register(sock.fileno(), _READABLE)
        return bool(poller.poll(0))  # POLLHUP and POLLERR are reported whatever the mask

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self.idle_since
        if since is None or self.closed:
            return  # in use: the pool arms the timer again when it gets it back
        left = since + IDLE_TIMEOUT - self.loop.time()
        if left <= 0:
            self.close()
        else:
            self._idle_timer = self.loop.call_later(left, self._idle_check)

    def park(self) -> None:
        """The exchange is over and the pool keeps this connection: idle from now on."""
        # A body whose last piece met a full client socket left reading paused: a pooled
        # connection must read, or the next exchange would never see its response.
        self.resume_reading()
        self.head = None
        self._body = None
        self.taker = None
        self.idle_since = self.loop.time()
        if self._idle_timer is None:  # armed lazily: it looks again when it fires
            self._idle_timer = self.loop.call_later(IDLE_TIMEOUT, self._idle_check)

    def close(self) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()

    def body_left(self) -> int:  # body bytes still to come, none of them read yet (zerocopy)
        return self._body.left if self._body is not None and not self._queue else 0

    def moved_by_kernel(self, n: int) -> None:  # n more body bytes went by: read on
        if self._body is not None:
            self._body.skip(n)
            self._eof = self._body.done
            self.resume_reading()

    # Tunnels.
    def switch(self, sink: OriginSink) -> bytes:
        """Hand every further byte to ``sink``; returns those already received."""
        self._sink = sink
        rest, self._buf = self._buf, b""
        self.flow.resume_reading()
        return rest

    def pause_reading(self) -> None:
        if not self.closed:
            self.flow.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self.flow.resume_reading()

    def write_paused(self) -> bool:
        return self.flow.writing_paused


def _complete(body: BodyReader) -> bool:  # a call: mypy would take feed()'s effect for none
    return body.done
