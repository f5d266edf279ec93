"""One request on a client connection: its head, its body as a stream, its response.

The request owns its raw byte counts, and only this module changes them: bytes
received (head, body framing included, a tunnel's), bytes handed to the socket, and
what the socket accepted (:meth:`Request.sent`). :meth:`Request.claim` is the one
way to take what is new since the last claim, both directions; :meth:`Request.charge`
gives that to the request's meter (:mod:`governor.core.meter`), the only thing that
charges a tenant. So each byte is claimed once, whoever asks and however often.
The request writes through its connection (:mod:`governor.http1.connection`), which
owns the socket, its timers and its flow control.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from governor.core.meter import Meter
from governor.errors import BadMessage, BodyRefused
from governor.http1.body import CHUNKED, LENGTH, BodyReader
from governor.http1.flow import BodyQueue
from governor.http1.heads import Header, RequestHead
from governor.http1.ports import ClientPort
from governor.http1.state import body_due
from governor.http1.target import path_of
from governor.http1.wire import (
    CRLF,
    HEAD_END,
    LAST_CHUNK,
    OK_LINE,
    chunk_prefix,
    encode_block,
    encode_head,
)
from governor.observe.events import RequestNote, report

# A response's head and first body bytes up to this size are joined into one buffer
# (copying a few KiB costs less than setting up a scatter write); a larger body goes as
# the pieces it came in, not copied again in user space.
JOIN_UP_TO: Final = 16 * 1024

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
CLAIM_STEP: Final = 2**18  # response bytes a running claim leaves to a later one (no syscall)
HIGH_WATER: Final = 2**18  # request body bytes buffered before reads from the client pause
LOW_WATER: Final = 2**16  # ... and resume (see docs/http1.md)
SERVER: Final = "governor"  # on governor's own answers; proxied responses keep the upstream's

REASONS: Final = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    308: "Permanent Redirect",
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


class Request:
    """One request on a connection: its head, its body stream, and its response."""

    __slots__ = (
        "_claimed_in",
        "_claimed_out",
        "_eof",
        "_queue",
        "_rate_timer",
        "_tls",
        "body",
        "body_size",
        "chunked_out",
        "conn",
        "ended",
        "handed",
        "head",
        "head_at",
        "hsts",
        "keep_alive",
        "meter",
        "note",
        "out_start",
        "overhead",
        "path",
        "received",
        "started",
        "status",
    )

    def __init__(self, conn: ClientPort, head: RequestHead, note: RequestNote) -> None:
        self.conn = conn
        self.head = head
        self.note = note
        self.started = time.monotonic()
        # For logs: the target is in origin-form already (http1 rewrites absolute-form).
        self.path = path_of(head.target)
        self.received = head.size  # bytes of this request received so far
        self.overhead = 0  # TLS: bytes of records' framing claimed with it (see claim)
        self._tls = conn.scheme == "https"
        self._claimed_in = 0
        self._claimed_out = 0
        # Whom this request's bytes are charged to: set by the handler once it serves the
        # request for a tenant; None for what is nobody's (a notice, an unknown host).
        self.meter: Meter | None = None
        self.body: BodyReader | None = None
        if head.chunked:
            self.body = BodyReader(CHUNKED)
        elif head.content_length:
            self.body = BodyReader(LENGTH, head.content_length)
        self._queue: BodyQueue | None = None
        if self.body is not None:
            self._queue = BodyQueue(conn.flow, high=HIGH_WATER, low=LOW_WATER)
        self._eof = self.body is None
        self.body_size = 0  # body bytes received, framing aside
        self.head_at = conn.loop.time()
        self._rate_timer: asyncio.TimerHandle | None = None  # see watch_body_rate
        self.keep_alive = head.keep_alive
        self.status = 0  # of the response, once started
        self.out_start = conn.handed  # the connection's output before this response
        # Response bytes handed to the transport (framing included; on TLS, the records).
        self.handed = 0
        self.chunked_out = False
        self.ended = False  # the response was completed cleanly
        self.hsts = b""  # a Strict-Transport-Security field for every response (HTTPS only)

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

    def sent(self) -> int:
        """Bytes of this response the client's socket accepted so far."""
        n = self.conn.sent() - self.out_start
        return 0 if n < 0 else min(n, self.handed)

    def transmitted(self) -> int:
        """Bytes of this response the kernel transmitted so far."""
        n = self.conn.transmitted() - self.out_start
        return 0 if n < 0 else min(n, self.handed)

    def claim(self, *, final: bool = False) -> tuple[int, int]:
        """Bytes received, and response bytes that crossed the wire, since the last claim.

        Sent bytes are what the kernel transmitted while the response runs, so a reset
        (which drops what it held unsent) never leaves a byte charged that did not cross;
        the ``final`` claim of a response that ended well takes what the socket accepted
        (the kernel sends the rest). Asking the kernel is a system call: a running claim
        leaves less than :data:`CLAIM_STEP` new bytes to a later one (a small response's
        bytes all go with its final claim). On TLS, what is received includes the records'
        framing (the connection's :meth:`~governor.http1.ports.ClientPort.overhead`),
        and what is sent is in ciphertext bytes already.
        """
        if self._tls:
            extra = self.conn.overhead()
            self.overhead += extra
        else:
            extra = 0
        got = self.received - self._claimed_in + extra
        self._claimed_in = self.received
        claimed = self._claimed_out
        if self.handed == claimed:
            return got, 0  # the common case: nothing handed since, nothing to ask the socket
        if final:
            sent = self.sent()
        elif self.handed - claimed < CLAIM_STEP:
            return got, 0  # left to a later claim, the final one at the latest
        else:
            sent = self.transmitted()
        if sent <= claimed:
            return got, 0
        out = sent - self._claimed_out
        self._claimed_out = sent
        return got, out

    def charge(self, *, final: bool = False) -> None:
        """Charge what is new since the last claim to the request's meter, if it has one."""
        meter = self.meter
        if meter is None:
            return
        if self.received == self._claimed_in and not self._tls:
            out = self.handed - self._claimed_out  # as claim() reads it: nothing to claim yet
            if out == 0 or (out < CLAIM_STEP and not final):
                return  # most calls (one a step of the exchange)
        received, sent = self.claim(final=final)
        meter.charge(received, sent)

    def in_flight(self) -> int:
        """Response bytes handed to the socket and not claimed yet (not accepted, or not
        asked): what a cap check adds to the tenant's total so as not to overshoot."""
        return self.handed - self._claimed_out

    def received_raw(self, nbytes: int) -> None:
        """Count bytes from the client outside any body framing (a tunnel's)."""
        self.received += nbytes

    def write_raw(self, data: bytes) -> None:
        """Hand bytes to the client as they are (a tunnel's), counted as the response's."""
        conn = self.conn
        before = conn.handed
        conn.write(data)
        self.handed += conn.handed - before

    def send_continue(self) -> None:
        """An interim ``100 Continue``: the client may send the body it holds back."""
        self.write_raw(CONTINUE)

    # The request body.
    @property
    def body_done(self) -> bool:
        """Whether the whole body was received (True for a request without one)."""
        return self.body is None or self.body.done

    def _feed(self, data: bytes) -> int:
        """Body bytes from the connection; returns how many of them this body used."""
        body, queue = self.body, self._queue
        assert body is not None
        assert queue is not None
        pieces, used = body.feed(data)
        self.received += used
        for piece in pieces:
            queue.put(piece)  # reading from the client pauses above HIGH_WATER
            self.body_size += len(piece)
        body_max = self.conn.server.body_max
        if body_max and self.body_size > body_max:
            raise BadMessage(413, f"the request body is larger than {body_max} bytes")
        if body.done:
            self._eof = True
        queue.wake()
        return used

    def _fail(self) -> None:
        if self._queue is not None:
            self._queue.wake()

    def refuse_body(self, exc: BadMessage) -> None:
        """Stop reading a request body governor refuses (malformed, too large, too slow).

        The handler's next read raises :class:`BodyRefused`; it answers ``exc.status``
        if no response has started. The connection closes after the request either way.
        """
        conn = self.conn
        conn.body_error = exc
        conn.closing = True
        self._fail()
        conn.flow.stop_reading()  # never resumed: the connection closes after this request

    def watch_body_rate(self) -> None:
        """Refuse the body (408) once it arrives slower than ``timeouts.body_min_rate``,
        after the header timeout's grace; :meth:`stop_body_watch` when the request ends."""
        server, loop = self.conn.server, self.conn.loop
        if self.body is not None and server.body_min_rate:
            when = self.head_at + server.header_timeout
            self._rate_timer = loop.call_at(when, self._check_body_rate)

    def stop_body_watch(self) -> None:
        if self._rate_timer is not None:
            self._rate_timer.cancel()
            self._rate_timer = None

    def _check_body_rate(self) -> None:
        self._rate_timer = None
        conn = self.conn
        server, loop, body = conn.server, conn.loop, self.body
        if body is None or body.done or conn.closed:
            return
        now = loop.time()
        if conn.flow.reading_paused:  # governor is not reading: the client is not to blame
            self.head_at += 1.0
            self._rate_timer = loop.call_at(now + 1.0, self._check_body_rate)
            return
        when = body_due(now, self.head_at + server.header_timeout, server.body_min_rate, body.raw)
        if when is None:
            self.refuse_body(BadMessage(408, "the request body arrived too slowly"))
            return
        self._rate_timer = loop.call_at(when, self._check_body_rate)

    def refused(self) -> BodyRefused | None:
        """Why governor stopped reading this request's body (400, 408, 413), if it did."""
        error = self.conn.body_error
        return None if error is None else BodyRefused(error.status, error.reason)

    async def read(self) -> bytes:
        """The next piece of the request body; ``b""`` at its end.

        Raises :class:`BodyRefused` when governor stopped reading the body (its answer
        is the refusal's status), ConnectionResetError when the client left before the end.
        """
        queue = self._queue
        while True:
            if queue:  # reading from the client resumes at LOW_WATER
                return queue.get()
            if self._eof or queue is None:
                return b""
            refused = self.refused()
            if refused is not None:  # first: a client that left after it is still answered so
                raise refused
            if self.conn.closed:
                raise ConnectionResetError("the client closed the connection mid-body")
            await queue.wait()

    async def linger(self, seconds: float) -> bool:
        """Read and drop the rest of a body nobody read, so the connection stays in step;
        False when the client still sends after ``seconds`` (then it is disconnected).

        Its bytes are charged like the rest of the request's (to its meter, if it has one).
        """
        try:
            async with asyncio.timeout(seconds):
                while await self.read():
                    self.charge()
        except TimeoutError:
            return False
        except (ConnectionError, BodyRefused):
            pass  # the connection closes after this request either way
        finally:
            self.charge()
        return True

    # The response.
    def start_response(
        self,
        status: int,
        reason: str | None,
        block: bytes,
        *,
        length: int | None,
        body: bool = True,
        first: Sequence[bytes] = (),
    ) -> None:
        """Send the response head (with ``first``, body pieces, in the same write).

        ``block`` holds the header fields, each line preceded by CRLF, without
        framing: with ``body`` the framing is governor's (Content-Length when
        ``length`` is known, else chunked for HTTP/1.1 clients and close-delimited
        for HTTP/1.0). Without ``body`` (HEAD, 1xx, 204, 304) the block passes as
        given, a Content-Length in it included. A 101's block is the handshake's.
        """
        conn = self.conn
        self.status = status
        if status == 200 and (reason == "OK" or not reason):
            line = OK_LINE  # most responses' (one formatting and encoding fewer)
        else:
            line = f"HTTP/1.1 {status} {reason or REASONS.get(status, 'Unknown')}".encode("latin-1")
        before = conn.handed  # wire bytes: on TLS, the records' framing is the response's too
        if status == 101:
            conn.write(line + block + HEAD_END)
            self.handed += conn.handed - before
            return
        framing = self.hsts if self.hsts and b"strict-transport" not in block.lower() else b""
        if body:
            if length is not None:
                framing += b"\r\nContent-Length: %d" % length
            elif self.head.version >= (1, 1):
                framing += b"\r\nTransfer-Encoding: chunked"
                self.chunked_out = True
            else:
                self.keep_alive = False
        if conn.closing or (not self.body_done and not self.keep_alive):
            self.keep_alive = False
        if not self.keep_alive:
            framing += b"\r\nConnection: close"
        elif self.head.version < (1, 1):
            framing += b"\r\nConnection: keep-alive"
        data = b"".join((line, block, framing, HEAD_END))
        one = len(first) == 1
        size = len(first[0]) if one else sum(map(len, first))
        if not size:
            conn.write(data)
        elif self.chunked_out:
            conn.writelines([data, chunk_prefix(size), *first, CRLF])
        elif one and size <= JOIN_UP_TO:
            conn.write(data + first[0])  # the usual small response: one piece
        elif size <= JOIN_UP_TO:
            conn.write(b"".join([data, *first]))
        else:
            conn.writelines([data, *first])
        self.handed += conn.handed - before

    def write(self, data: bytes) -> int:
        """Send body bytes; returns the bytes handed to the socket (framing included)."""
        if not data:
            return 0
        conn = self.conn
        before = conn.handed
        if self.chunked_out:
            conn.writelines((chunk_prefix(len(data)), data, CRLF))
        else:
            conn.write(data)
        n = conn.handed - before
        self.handed += n
        return n

    def end(self) -> int:
        """Complete the response; returns the bytes that took."""
        n = 0
        if self.chunked_out:
            conn = self.conn
            before = conn.handed
            conn.write(LAST_CHUNK)
            n = conn.handed - before
            self.handed += n
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
            self.start_response(status, None, encode_block(fields), length=len(body), first=(body,))
        else:
            self.start_response(status, None, encode_block(headers), length=None, body=False)
        self.end()

    def respond_text(self, status: int, text: str) -> None:
        """One of governor's own plain-text answers (a HEAD gets its head only)."""
        body = (text + "\n").encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Cache-Control", "no-store"),
            ("Server", SERVER),
        ]
        if self.method == "HEAD":
            headers.append(("Content-Length", str(len(body))))
        self.respond(status, headers, body, send_body=self.method != "HEAD")

    async def drain(self) -> None:
        """Wait while the client's socket buffer is full."""
        await self.conn.drain()

    async def settle(self) -> None:
        """Wait until the client's socket accepted the whole response, or is gone."""
        await self.conn.settle()

    def report(self) -> None:
        """Tell the sinks how this request went, once the connection is done with it.

        A response never started is logged as 499 when the client left first (as
        nginx does), else 500.
        """
        if not self.note.sinks:
            return
        report(
            self.note,
            method=self.method,
            path=self.path,
            status=self.status or (499 if self.conn.closed else 500),
            bytes_out=self.sent(),
            bytes_in=self.received + self.overhead,
            duration=time.monotonic() - self.started,
        )


Handler = Callable[[Request], Awaitable[None]]


def refusal(status: int, reason: str) -> bytes:
    """governor's whole answer to a request it cannot read (the connection closes after it)."""
    text = REASONS.get(status, "Bad Request")
    body = f"{status} {text}: {reason}\n".encode()
    head = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
    head += [("Server", SERVER), ("Content-Length", str(len(body))), ("Connection", "close")]
    return encode_head(f"HTTP/1.1 {status} {text}", head) + body
