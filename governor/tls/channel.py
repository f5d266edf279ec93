"""TLS on one accepted socket, counted as it crosses the wire.

A :class:`TLSChannel` sits between the socket's transport (ciphertext) and the
client connection (:class:`~governor.http1.connection.ClientConnection`, plaintext):
it is the socket's protocol and the connection's transport. It runs OpenSSL over
memory BIOs (:meth:`ssl.SSLContext.wrap_bio`) rather than asyncio's own TLS, because
asyncio's hides the bytes that cross the socket, and those are what a tenant pays.

Counting (the invariant): every byte of the connection, both ways, is in exactly one
of these, so what is charged equals what a packet capture shows:

* the handshake (:attr:`handshake_in`, :attr:`handshake_out`): charged by the
  listener to the tenant the SNI name belongs to, at the handshake's end;
* bytes sent after it (:attr:`handed`, ciphertext handed to the socket, so the
  connection's own send accounting is in wire bytes and a request's response is
  charged with its records' framing);
* bytes received after it: the plaintext the connection reads (charged per request
  as ever) plus :meth:`overhead`, the records' framing and any alert, which the
  connection's current request claims. Only complete records count, so a record
  split across reads is never charged before its plaintext exists.

Hardening: the handshake has a deadline (``timeouts.tls_handshake``); bytes that are
not a TLS handshake record get the connection closed (a plain-HTTP request gets
nginx's "400 The plain HTTP request was sent to HTTPS port" first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, Final, Protocol, cast

from governor.core.meter import Meter

log: Final = logging.getLogger("governor.tls")

LINGER: Final = 2.0  # seconds a closed connection waits for the client's close_notify and EOF
# Plaintext asked of OpenSSL at once: one read returns one record's, at most 16 KiB. Asking
# more gains nothing and can cost: the ssl module allocates the size asked, which above
# glibc's mmap threshold maps memory each read (python -m tests.bench.tls_reads).
READ_SIZE: Final = 2**14
HANDSHAKE: Final = 0x16  # the content type of a TLS handshake record (a ClientHello's)


class Engine(Protocol):
    """The calls a request makes on OpenSSL: those of :class:`ssl.SSLObject`, which
    passes each one on to the ``_ssl`` object it wraps (see :func:`engine`)."""

    def read(self, size: int, /) -> bytes: ...

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...

    def pending(self) -> int: ...


def engine(sslobj: ssl.SSLObject) -> Engine:
    """The ``_ssl`` object under ``sslobj``, called directly on the request path:
    :class:`ssl.SSLObject`'s ``read``, ``write`` and ``pending`` are Python functions
    that only pass the call on, one interpreted frame each. ``sslobj`` itself where a
    Python keeps it elsewhere (it has the same methods)."""
    inner: Engine = getattr(sslobj, "_sslobj", sslobj)
    return inner


class Upper(Protocol):
    """What the channel needs of the protocol above it (the client connection)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def handshaken(self, channel: TLSChannel) -> None:
        """The handshake is done: from now on, bytes are the connection's requests'."""
        ...


class Handshakes(Protocol):
    """What the channel needs of its listener: contexts, a deadline, the charge."""

    @property
    def handshake_timeout(self) -> float:
        """Seconds from the accept to the handshake's end."""
        ...

    def tls_context(self) -> ssl.SSLContext:
        """The listener's context now (its SNI callback picks a tenant's certificate)."""
        ...

    def handshake_done(self, channel: TLSChannel) -> None:
        """Charge the handshake to the tenant its SNI name belongs to, if any."""
        ...

    def handshake_failed(self, channel: TLSChannel, reason: str) -> None: ...

    @property
    def plain_http_answer(self) -> bytes:
        """What a plain-HTTP request on the TLS port gets, before the connection closes."""
        ...


class TLSChannel(asyncio.Transport, asyncio.Protocol):
    """TLS between a socket's transport and the client connection above it."""

    def __init__(self, upper: Upper, listener: Handshakes) -> None:
        super().__init__()
        self.upper = upper
        self.listener = listener
        self.raw: asyncio.Transport | None = None
        self.server_name: str | None = None  # the SNI name, set by the SNI callback
        # Whom the connection's last bytes go to: the handshake's tenant (the listener's
        # choice), then each request's; and the output charged up to (see leftovers).
        self.meter: Meter | None = None
        self.out_mark = 0
        self.ready = False  # the handshake is done
        self.handed = 0  # ciphertext handed to the socket's transport, handshake included
        self.handshake_in = 0
        self.handshake_out = 0
        self.plain_in = 0  # plaintext passed up
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = None
        self._engine: Engine | None = None  # engine(self._ssl), for reads and writes
        self._records = Records()  # every byte received, and those in complete records
        self._claimed = 0  # overhead claimed so far
        self._early: list[bytes] = []  # written before the handshake's end
        self._closing = False
        self._eof = False  # the client closed its direction (close_notify or FIN)
        self._timer: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None  # closed: the client's last bytes

    # --- the socket's side (asyncio.Protocol) ---------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self.raw = raw
        context = self.listener.tls_context()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._ssl._channel = self  # type: ignore[attr-defined]  # for the SNI callback
        self._engine = engine(self._ssl)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.listener.handshake_timeout, self._too_slow)
        self.upper.connection_made(self)

    def data_received(self, data: bytes) -> None:
        records = self._records
        if self._lingering is not None:  # closed by governor: its close_notify, counted
            records.feed(data)
            return
        if records.total == 0 and data and data[0] != HANDSHAKE:
            self._not_tls(data)
            return
        records.feed(data)
        self._incoming.write(data)
        if not self.ready:
            self._handshake()
            if not self.ready:
                return
        self._read()

    def eof_received(self) -> bool | None:
        if self._lingering is not None:
            return None  # the client is done too: close
        if not self.ready:
            self._fail("the client closed the connection during the handshake")
            return None
        if self._eof:
            return True  # the close_notify's EOF was passed up already
        # A FIN without close_notify. OpenSSL is not told: it would call it a truncation
        # and refuse to write the response a half-closed request is still owed.
        self._eof = True
        return self.upper.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lingering is not None:
            self._lingering.cancel()
        self.upper.connection_lost(exc)

    def pause_writing(self) -> None:
        self.upper.pause_writing()

    def resume_writing(self) -> None:
        self.upper.resume_writing()

    # --- the handshake ------------------------------------------------------------

    def _handshake(self) -> None:
        sslobj = self._ssl
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._flush()  # OpenSSL's alert, if it wrote one
            self._fail(f"the TLS handshake failed: {getattr(exc, 'reason', None) or exc}")
            return
        self._flush()  # its last flight (and TLS 1.3's session tickets)
        self.ready = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.handshake_in = self._records.total - self._incoming.pending
        self.handshake_out = self.out_mark = self.handed
        self._claimed = self.handshake_in  # the handshake is charged apart
        self.listener.handshake_done(self)
        self.upper.handshaken(self)
        early, self._early = self._early, []
        if early:
            self.write(b"".join(early))
        if self._closing:
            self._closing = False
            self.close()

    def _too_slow(self) -> None:
        self._timer = None
        if not self.ready:
            self._fail(f"no TLS handshake within {self.listener.handshake_timeout:g} s")

    def _fail(self, reason: str) -> None:
        self.listener.handshake_failed(self, reason)
        if self.raw is not None:
            self.raw.abort()

    def _not_tls(self, data: bytes) -> None:
        """The first bytes are no TLS record: answer a plain-HTTP request, close either way."""
        raw = self.raw
        assert raw is not None
        self._records.total += len(data)
        first = data.split(b" ", 1)[0]
        if first.isalpha() and first.isupper() and len(first) <= 16:
            answer = self.listener.plain_http_answer
            raw.write(answer)
            self.handed += len(answer)
            self.listener.handshake_failed(self, "a plain HTTP request on the TLS port")
            raw.close()
            return
        self._fail("the client sent no TLS handshake")

    # --- counting -------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Every byte received so far."""
        return self._records.total

    def overhead(self) -> int:
        """Bytes received after the handshake beyond the plaintext, not claimed yet."""
        n = self._records.complete - self._claimed - self.plain_in
        if n <= 0:
            return 0
        self._claimed += n
        return n

    def finished(self, meter: Meter | None, sent: int, *, lost: bool) -> None:
        """A request made its last claim, with ``meter`` (None: nobody's, a notice's), up to
        the connection's ``sent`` bytes; ``lost``: the connection is gone."""
        if meter is None:
            self.overhead()  # nor are its records' framing anybody's
        self.out_mark = sent
        self.meter = meter
        if lost:
            self.leftovers(sent)

    def leftovers(self, sent: int) -> None:
        """The bytes no request claimed (close_notify both ways, an alert), once the
        connection is gone: the last request's tenant's, else the handshake's."""
        if not self.ready:
            return
        received = self.overhead()
        out = sent - self.out_mark
        self.out_mark = max(sent, self.out_mark)
        if self.meter is not None:
            self.meter.charge(received, out)

    # --- reading ---------------------------------------------------------------------

    def _read(self) -> None:
        sslobj = self._engine
        assert sslobj is not None
        chunks: list[bytes] = []
        incoming = self._incoming
        closed = False
        while True:
            try:
                chunk = sslobj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                closed = True  # a close_notify, or a FIN without one: an EOF either way
                break
            except ssl.SSLError as exc:
                log.info("closing a TLS connection: %s", getattr(exc, "reason", None) or exc)
                self._flush()
                if self.raw is not None:
                    self.raw.abort()
                return
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
            if not incoming.pending and not sslobj.pending():
                break
        if self._outgoing.pending:  # a reply OpenSSL owes (a key update, an alert)
            self._flush()
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.plain_in += len(data)
            self.upper.data_received(data)
        if closed and not self._eof:
            self._eof = True
            if not self.upper.eof_received():
                self.close()

    # --- the connection's side (asyncio.Transport) ------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        sslobj = self._engine
        if not self.ready or sslobj is None:
            self._early.append(bytes(data))
            return
        sslobj.write(data)
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))  # one record, not one per piece

    def _flush(self) -> None:
        out = self._outgoing.read()
        if out and self.raw is not None and not self.raw.is_closing():
            self.handed += len(out)
            self.raw.write(out)

    def close(self) -> None:
        """Send close_notify after what is queued, then close the socket (see _linger)."""
        raw = self.raw
        if raw is None or raw.is_closing() or self._lingering is not None:
            return
        if not self.ready:
            self._closing = True
            return
        sslobj = self._ssl
        assert sslobj is not None
        # SSLWantReadError: the close_notify is written; the peer's comes later, if at all.
        with contextlib.suppress(ssl.SSLError):
            sslobj.unwrap()
        self._flush()
        self._linger(raw)

    def _linger(self, raw: asyncio.Transport) -> None:
        """Half-close, and read what the client still sends (its close_notify) until its
        EOF or :data:`LINGER` seconds: counted, not read (nginx's lingering close). Closing
        at once would answer its close_notify with a reset, and those bytes, which crossed
        the wire, would go uncounted."""
        if self._eof or not raw.can_write_eof():
            raw.close()
            return
        raw.write_eof()
        loop = asyncio.get_running_loop()
        self._lingering = loop.call_later(LINGER, raw.close)

    def abort(self) -> None:
        if self.raw is not None:
            self.raw.abort()

    def is_closing(self) -> bool:
        raw = self.raw
        return raw is None or raw.is_closing() or self._closing or self._lingering is not None

    def get_write_buffer_size(self) -> int:
        return 0 if self.raw is None else self.raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.raw is not None:
            self.raw.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        if self.raw is not None:
            self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.raw is not None:
            self.raw.resume_reading()

    def is_reading(self) -> bool:
        return self.raw is not None and self.raw.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "server_name":
            return self.server_name
        return default if self.raw is None else self.raw.get_extra_info(name, default)

    def alpn(self) -> str | None:
        return None if self._ssl is None else self._ssl.selected_alpn_protocol()


class Records:
    """Counts received bytes, and of them those in complete TLS records (5-byte header,
    then as many bytes as it says): a record's plaintext exists only once it is whole."""

    __slots__ = ("_header", "_left", "complete", "total")

    def __init__(self) -> None:
        self.total = 0  # every byte fed
        self.complete = 0  # ... up to the end of the last complete record
        self._left = 0  # bytes of the record being received still to come
        self._header = b""  # the start of a record header split across reads

    def feed(self, data: bytes) -> None:
        start = self.total
        n = len(data)
        self.total += n
        pos = 0
        left = self._left
        while pos < n:
            if left:
                take = min(left, n - pos)
                left -= take
                pos += take
                if not left:
                    self.complete = start + pos
                continue
            header = self._header + data[pos : pos + 5 - len(self._header)]
            pos += len(header) - len(self._header)
            if len(header) < 5:
                self._header = header
                break
            self._header = b""
            left = int.from_bytes(header[3:5], "big")
            if not left:
                self.complete = start + pos
        self._left = left
