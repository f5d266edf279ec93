"""What a client's socket accepted, and the watchdog that drops a client accepting nothing.

Bytes written are charged as the client's socket accepts them, so the kernel is
asked (:func:`socket_sent`, TCP_INFO) what a lost connection took. A client
whose socket accepts no byte for ``timeouts.send`` while governor holds bytes
for it is dropped with an RST (:class:`SendWatch`, :func:`reset`), as nginx's
``send_timeout`` and ``reset_timedout_connection`` do.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import socket
import struct
from typing import Any, Final, Protocol


class Sender(Protocol):
    """The connection a :class:`SendWatch` watches."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    handed: int  # bytes handed to the transport so far

    @property
    def closed(self) -> bool: ...

    def send_timeout(self) -> float:
        """Seconds the socket may accept nothing while bytes wait for it."""
        ...

    def stalled(self) -> None:
        """It accepted nothing for that long: drop it."""
        ...


class SendWatch:
    """One lazily armed timer while the transport holds bytes.

    It looks every quarter of the timeout, so it drops a client between one and
    one and a quarter timeouts after its socket last accepted a byte; a fast
    response that leaves nothing in the transport costs no timer at all.
    """

    __slots__ = ("_conn", "_mark", "_since", "timer")

    def __init__(self, conn: Sender) -> None:
        self._conn = conn
        self.timer: asyncio.TimerHandle | None = None
        self._mark = 0  # bytes accepted at the last look
        self._since = 0.0  # when that figure was first seen (loop time)

    def arm(self) -> None:
        conn = self._conn
        transport = conn.transport
        if transport is None or conn.closed:
            return
        now = conn.loop.time()
        self._mark = conn.handed - transport.get_write_buffer_size()
        self._since = now
        self.timer = conn.loop.call_at(now + conn.send_timeout() / 4, self._check)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check(self) -> None:
        self.timer = None
        conn = self._conn
        transport = conn.transport
        if conn.closed or transport is None:
            return
        pending = transport.get_write_buffer_size()
        if not pending:
            return  # all accepted: armed again by the next write that leaves some
        now = conn.loop.time()
        accepted = conn.handed - pending
        timeout = conn.send_timeout()
        if accepted != self._mark:  # the socket took some since the last look
            self._mark, self._since = accepted, now
        elif now - self._since >= timeout:
            conn.stalled()
            return
        when = min(self._since + timeout, now + timeout / 4)
        self.timer = conn.loop.call_at(when, self._check)


def accepted(transport: asyncio.Transport, handed: int, *, reset: bool = False) -> int:
    """Bytes of the ``handed`` the socket accepted, asking the kernel (a failed write may
    have dropped the transport's buffer: EPIPE, a reset). After a reset (``reset``), what
    the kernel held untransmitted is dropped with the connection: only what it transmitted
    crossed the wire, so only that counts."""
    n = socket_sent(transport.get_extra_info("socket"), reset=reset)
    if n is None:  # no TCP_INFO (not Linux): what the transport says it still holds,
        n = handed - transport.get_write_buffer_size()  # an over-count after a failure
    return min(max(n, 0), handed)


def reset(transport: asyncio.Transport) -> None:
    """Drop the connection with an RST: a plain close would leave the unsent bytes queued
    in the kernel behind a FIN the client never reads, holding that memory for minutes."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


# struct tcp_info (linux/tcp.h): tcpi_notsent_bytes at 144; tcpi_bytes_sent and
# tcpi_bytes_retrans at 200 (Linux 4.19 and later).
_TCP_INFO_SIZE: Final = 216
_LINGER_ZERO: Final = struct.pack("ii", 1, 0)  # close() sends an RST
_NOTSENT: Final = struct.Struct("=I")
_SENT_RETRANS: Final = struct.Struct("=QQ")
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None)  # Linux


def _tcp_info(sock: Any, size: int) -> bytes | None:
    """The first ``size`` bytes of the socket's ``struct tcp_info``; None if unknown.

    uvloop's transports give a stand-in socket whose getsockopt builds a Python socket
    object (its ``__init__`` in Python, a getsockname call) every time; the descriptor
    is asked through a bare ``_socket.socket`` instead, detached at once: it never
    closes the descriptor, which the transport owns.
    """
    if sock is None or _TCP_INFO is None:
        return None
    try:
        raw = _socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, sock.fileno())
    except (OSError, ValueError):
        return None
    try:
        info: bytes = raw.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, size)
    except (OSError, ValueError):
        return None
    finally:
        raw.detach()
    return info if len(info) >= size else None


def socket_sent(sock: Any, *, reset: bool = False) -> int | None:
    """Bytes a TCP socket ever accepted from its writer, from the kernel; None if unknown.

    What the kernel transmitted once (retransmissions aside) plus what it holds not
    yet transmitted: every byte a send() call returned, read in one getsockopt, so
    it is consistent even while ACKs arrive. With ``reset`` (the connection was reset,
    its unsent bytes dropped), what it transmitted only.
    """
    info = _tcp_info(sock, _TCP_INFO_SIZE)
    if info is None:
        return None
    (notsent,) = _NOTSENT.unpack_from(info, 144)
    sent, retransmitted = _SENT_RETRANS.unpack_from(info, 200)
    return int(sent - retransmitted + (0 if reset else notsent))


_NOTSENT_END: Final = 148  # tcp_info up to tcpi_notsent_bytes: a shorter copy than the whole


def socket_unsent(sock: Any) -> int:
    """Bytes the kernel accepted on ``sock`` and holds not yet transmitted (0 if unknown)."""
    info = _tcp_info(sock, _NOTSENT_END)
    return 0 if info is None else int(_NOTSENT.unpack_from(info, 144)[0])
