"""Closing a listening socket without resetting the connections queued on it.

The kernel completes handshakes on its own and queues the connections until the
process accepts them; a client's ``connect`` has returned and its request may be
sent. Closing the listener resets every connection still queued (and, with
SO_REUSEPORT, only that socket's queue: the kernel does not move them to a sibling).
So a graceful stop closes its listener in three steps:

1. refuse new handshakes: a socket filter drops incoming SYNs on the listener (a
   client's SYN goes unanswered; it retries a second later and by then meets a closed
   port or another instance), while handshakes already under way still complete;
2. accept everything queued, and keep accepting while the kernel reports handshakes
   to this port under way (SYN_RECV, asked through sock_diag, as ``ss`` does), up to
   :data:`HANDSHAKE_WAIT` (a handshake not done by then lost a packet; its client
   would retry it in any case);
3. close the listener.

Where the kernel will not filter or say (not Linux), step 1 is skipped and step 2
waits until the queue has stayed empty for :data:`QUIET` (at most
:data:`HANDSHAKE_WAIT`); a connection can then still slip into the queue between the
last accept and the close (a window of microseconds).

Invariant: every connection the kernel queued before step 3 is handed to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Final

log: Final = logging.getLogger("governor.listener")

HANDSHAKE_WAIT: Final = 1.0  # seconds to wait at most for handshakes under way to complete
QUIET: Final = 0.1  # without the kernel's word: seconds the queue must stay empty before the close
RECHECK: Final = 0.01  # seconds between looks at the handshakes still under way

SO_ATTACH_FILTER: Final = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux
# A classic BPF program run on each packet reaching the listener, at the TCP header:
# load the flags byte; SYN set: drop (return 0); else: keep the whole packet.
_DROP_SYN: Final = (
    (0x30, 0, 0, 13),  # ldb [13]          TCP flags
    (0x45, 0, 1, 0x02),  # jset #SYN        SYN set: next; else skip one
    (0x06, 0, 0, 0),  # ret #0             drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1   keep
)


# The program's instructions, in memory that lives as long as the module. The kernel reads
# them through the address in struct sock_fprog during setsockopt, so nothing may free them
# first. A local buffer did not do: compiled by mypyc, a local's reference is dropped after
# its last use (here ctypes.addressof), not at the function's end as in CPython, so the
# kernel read freed memory. It took a garbled filter or none, and the graceful stop lost a
# queued connection in 1 to 5 runs of 30 under a hammer of new connections.
_FILTER_CODE: Final = ctypes.create_string_buffer(
    b"".join(struct.pack("HBBI", *insn) for insn in _DROP_SYN), len(_DROP_SYN) * 8
)


def refuse_new_handshakes(sock: socket.socket) -> bool:
    """Drop SYNs arriving at the listener ``sock`` from now on; False where unsupported.

    Handshakes already answered still complete (their last ACK carries no SYN), so they
    reach the accept queue. Connections accepted later inherit the filter, harmlessly:
    an established connection receives no SYN.
    """
    prog = struct.pack("HP", len(_DROP_SYN), ctypes.addressof(_FILTER_CODE))  # sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)  # the kernel copies it
    except OSError as exc:
        log.debug("cannot filter new handshakes on the listener: %s", exc)
        return False
    return True


Adopt = Callable[[socket.socket], Awaitable[None]]


async def accept_backlog(sock: socket.socket, adopt: Adopt, deadline: float) -> int:
    """Take every connection queued on the listener ``sock`` (see above), then close it.

    Each accepted connection is handed to ``adopt``. Gives up at ``deadline`` (loop
    time). Returns how many connections were taken.
    """
    loop = asyncio.get_running_loop()
    taken = 0
    try:
        filtered = refuse_new_handshakes(sock)
        port = sock.getsockname()[1]
        give_up = min(deadline, loop.time() + HANDSHAKE_WAIT)
        quiet_until = loop.time() + QUIET
        while True:
            n = await _accept_ready(sock, adopt)
            taken += n
            now = loop.time()
            pending = pending_handshakes(sock.family, port) if filtered else None
            if pending == 0:  # none can start (filtered), none under way: the last look
                return taken + await _accept_ready(sock, adopt)
            if n:
                quiet_until = now + QUIET
            until = give_up if pending is not None else min(quiet_until, give_up)
            if now >= until:
                return taken
            await _readable(loop, sock, min(until - now, RECHECK))
    finally:
        sock.close()


async def _accept_ready(sock: socket.socket, adopt: Adopt) -> int:
    """Accept until the queue is empty; how many were handed over."""
    n = 0
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return n
        except OSError as exc:
            if exc.errno == errno.ECONNABORTED:  # the client gave up while queued
                continue
            # EMFILE and the like: what is still queued cannot be taken.
            log.error("shutdown: cannot accept the queued connections: %s", exc)
            return n
        conn.setblocking(False)
        n += 1
        try:
            await adopt(conn)
        except OSError as exc:
            log.warning("shutdown: a queued connection failed: %s", exc)
            conn.close()


# sock_diag (netlink): how ``ss -t state syn-recv`` asks the kernel.
_NETLINK_SOCK_DIAG: Final = 4
_SOCK_DIAG_BY_FAMILY: Final = 20
_NLM_F_REQUEST_DUMP: Final = 0x1 | 0x300
_NLMSG_ERROR: Final = 2
_NLMSG_DONE: Final = 3
_TCP_SYN_RECV: Final = 3


def pending_handshakes(family: int, port: int) -> int | None:
    """TCP handshakes under way (SYN_RECV) to local ``port``; None if the kernel won't say.

    Counts every listener's on that port (with SO_REUSEPORT, the siblings' too), which
    errs on the side of waiting.
    """
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    # struct inet_diag_req_v2: family, protocol, ext, pad, states; an empty socket id.
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_SYN_RECV)
    req += bytes(48)
    head = struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP, 1, 0)
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except (AttributeError, OSError):
        return None
    with nl:
        try:
            nl.settimeout(1.0)
            nl.sendto(head + req, (0, 0))
            return _count_replies(nl, port)
        except OSError:
            return None


def _count_replies(nl: socket.socket, port: int) -> int | None:
    count = 0
    for _ in range(100_000):  # bounded: one dump
        data = nl.recv(1 << 16)
        if not data:
            return None
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == _NLMSG_DONE:
                return count
            if kind == _NLMSG_ERROR or length < 16:
                return None
            # struct inet_diag_msg: family, state, timer, retrans, then the socket id,
            # which begins with the local port in network order.
            if struct.unpack_from("!H", data, off + 20)[0] == port:
                count += 1
            off += (length + 3) & ~3
    return None


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket, wait: float) -> None:
    """Wait up to ``wait`` seconds for ``sock`` to have a connection to accept."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await ready
    finally:
        loop.remove_reader(sock.fileno())
