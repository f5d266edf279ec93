"""A large response body moved from the upstream's socket to the client's by the kernel.

splice(2) through a pipe: the body never enters governor's memory, and neither side's
bytes are copied through user space (HAProxy's ``option splice-response``). Each move
is counted as it is handed to the client's socket, exactly as a write is; what the
client's socket then accepted is asked of the kernel (TCP_INFO), as for any response.

Taken only where nothing needs to see each piece of the body: plain HTTP on both
sides, a declared length of at least :data:`ZERO_COPY_MIN` still to come, no cut at
the cap, no ``large`` limit, no pacing (see :meth:`ResponseStream.relay`). The
watchdogs are the ones a written body has: the upstream may send nothing for its
``silence``, the client's socket may accept nothing for ``timeouts.send``.

While it runs, the client's socket holds at most :data:`UNSENT` bytes not yet transmitted
(TCP_NOTSENT_LOWAT), plus the move that crossed that line: the relay wakes, and hands on
more, every time the client takes that much, so a running claim lags the wire by what it
does for a written body (``CLAIM_STEP``), not by a whole socket buffer (megabytes on a
fast link), and a client that stops reading pins that much of the kernel's memory (and
the pipe's), no more.

The relay works on duplicates of the two sockets' descriptors (the event loop will
not watch a descriptor a transport owns). A duplicate keeps its socket open, so the
relay closes its duplicates the moment it ends, however it ends (cancelled too),
before anyone resets or closes the connections.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
from collections.abc import Callable
from contextlib import suppress
from typing import Final

from governor.errors import UpstreamBroken

ZERO_COPY_MIN: Final = 1 << 20  # body bytes still to come, at least, for the kernel to move
# The client socket's unsent bytes, at most, before a move (TCP_NOTSENT_LOWAT). Kept short
# (Cloudflare advises 16 KiB): a queue of unsent bytes is sent later, as the client's
# acknowledgements open the window. 256 KiB here cost one 1 GiB stream 1.4x the CPU per
# GiB, and where curl had a core to itself 0.79x the MiB/s with six times the
# retransmissions (README, Performance, step 20).
UNSENT: Final = 1 << 15
# Bytes moved in one wake-up, at most (nginx's sendfile_max_chunk): a client and an
# upstream that both keep up would otherwise hold the event loop for the whole body.
STEP_MAX: Final = 1 << 21
_NOTSENT_LOWAT: Final = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_GETPIPE_SZ: Final = 1032  # fcntl: a pipe's capacity in bytes (Linux)


class Moved:
    """What the kernel moved in this process: body bytes, and responses it finished."""

    def __init__(self) -> None:
        self.bytes = 0
        self.responses = 0


MOVED: Final = Moved()


def available() -> bool:
    """Whether the kernel can splice here (Linux; Python 3.10+)."""
    return hasattr(os, "splice")


class KernelRelay:
    """``remaining`` body bytes from ``up`` to ``down`` (socket descriptors), by splice.

    ``moved(n)`` is told each time ``n`` more bytes were handed to the client's socket;
    ``stalled()`` when the client's socket accepted nothing for ``send_timeout`` seconds
    (the relay has ended and closed its descriptors by then).
    """

    __slots__ = (
        "_broken",
        "_done",
        "_down",
        "_down_ready",
        "_last_down",
        "_last_up",
        "_loop",
        "_pipe_size",
        "_pipe_stuck",
        "_r",
        "_reading",
        "_timer",
        "_up",
        "_up_ready",
        "_w",
        "_writing",
        "in_pipe",
        "moved",
        "remaining",
        "send_timeout",
        "silence",
        "stalled",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        up: int,
        down: int,
        remaining: int,
        *,
        moved: Callable[[int], None],
        stalled: Callable[[], None],
        silence: float,
        send_timeout: float,
    ) -> None:
        self._loop = loop
        self.remaining = remaining
        self.in_pipe = 0
        self.moved = moved
        self.stalled = stalled
        self.silence = silence
        self.send_timeout = send_timeout
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._up = self._down = -1
        try:
            self._pipe_size = _pipe_size(self._w)
            self._up = os.dup(up)
            self._down = os.dup(down)
            with socket.socket(fileno=os.dup(self._down)) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, UNSENT)
        except OSError:
            self.close()
            raise
        self._reading = self._writing = False
        self._up_ready = self._down_ready = True  # worth a try (see _step)
        self._pipe_stuck = False
        # The upstream broke off (or closed early): what it sent is still passed on, then
        # the relay ends with this.
        self._broken: UpstreamBroken | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[None] = loop.create_future()
        self._last_up = self._last_down = loop.time()

    async def run(self) -> None:
        """Move the body; raises UpstreamBroken, or ConnectionResetError for the client."""
        try:
            self._step()
            if not self._done.done():
                self._arm()
            await self._done
        finally:
            self.close()

    def _readable(self) -> None:
        self._up_ready = True
        self._step()

    def _writable(self) -> None:
        self._down_ready = True
        self._step()

    def _step(self) -> None:
        """Move what can be moved now, :data:`STEP_MAX` at most; then wait for whichever
        side holds things up (after STEP_MAX, the next turn of the event loop).

        A side is tried only while it is ready: a short move shows it drained (the
        upstream's socket) or full (the client's), and its next readiness event says
        when it has more. A call that fails (EAGAIN) costs an exception and the error's
        text; trying each side until it failed made most calls fail (64,000 of 100,000
        per GiB, measured with perf's syscall tracepoints).
        """
        now = self._loop.time()
        budget = STEP_MAX
        while not self._done.done():
            progress = False
            if (
                self._up_ready
                and self.remaining
                and self.in_pipe < self._pipe_size
                and self._broken is None
            ):
                want = min(self.remaining, self._pipe_size - self.in_pipe)
                try:
                    n = os.splice(self._up, self._w, want, flags=_FLAGS)
                except BlockingIOError:
                    self._up_ready = False
                    # The socket may have more and the pipe no room (its slots hold less
                    # than its size): then only a move out of it is worth waiting for.
                    self._pipe_stuck = self.in_pipe > 0
                except OSError as exc:
                    self._broken = UpstreamBroken(f"the upstream broke off mid-body ({exc})")
                    progress = True
                else:
                    if n == 0:
                        self._broken = UpstreamBroken("the upstream closed the connection")
                    self.remaining -= n
                    self.in_pipe += n
                    self._last_up = now
                    progress = True
                    self._up_ready = n == want
            if self.in_pipe and self._down_ready:
                try:
                    m = os.splice(self._r, self._down, self.in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    self._down_ready = False
                except OSError as exc:
                    if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                        raise
                    self._finish(ConnectionResetError("the client connection is closed"))
                    return
                else:
                    self._down_ready = m == self.in_pipe
                    self._pipe_stuck = False
                    self.in_pipe -= m
                    self._last_down = now
                    MOVED.bytes += m
                    self.moved(m)
                    progress = True
                    budget -= m
            if not self.in_pipe and self._broken is not None:
                self._finish(self._broken)  # what it sent was passed on
                return
            if not self.remaining and not self.in_pipe:
                MOVED.responses += 1
                self._finish(None)
                return
            if not progress or budget <= 0:  # budget: the other connections' turn
                break
        # Readiness is level-triggered: a side with more to give fires at once.
        self._want_read(
            bool(self.remaining)
            and self.in_pipe < self._pipe_size
            and self._broken is None
            and not self._pipe_stuck
        )
        self._want_write(self.in_pipe > 0)

    def _want_read(self, on: bool) -> None:
        if on and not self._reading:
            self._loop.add_reader(self._up, self._readable)
        elif not on and self._reading:
            self._loop.remove_reader(self._up)
        self._reading = on

    def _want_write(self, on: bool) -> None:
        if on and not self._writing:
            self._loop.add_writer(self._down, self._writable)
        elif not on and self._writing:
            self._loop.remove_writer(self._down)
        self._writing = on

    def _arm(self) -> None:
        self._timer = self._loop.call_later(min(self.silence, self.send_timeout) / 4, self._check)

    def _check(self) -> None:
        """The watchdogs: an upstream that sends nothing, a client that accepts nothing."""
        self._timer = None
        if self._done.done():
            return
        now = self._loop.time()
        if self._writing and now - self._last_down >= self.send_timeout:
            self._finish(ConnectionResetError("the client accepted nothing"))
            self.close()  # before the reset: a duplicate would keep the socket open
            self.stalled()
            return
        if self._writing:
            self._last_up = now  # waiting on the client, not on the upstream
        elif now - self._last_up >= self.silence:
            message = f"the upstream sent nothing for {self.silence:g} s"
            self._finish(UpstreamBroken(message))
            return
        self._arm()

    def _finish(self, exc: BaseException | None) -> None:
        self._want_read(False)
        self._want_write(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._done.done():
            if exc is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(exc)

    def close(self) -> None:
        """Stop watching; close the pipe and the duplicates (idempotent). :meth:`run` does
        it however it ends; a relay that never ran is closed by its owner."""
        if self._up >= 0 or self._down >= 0:
            self._want_read(False)
            self._want_write(False)
        if self._down >= 0:
            with socket.socket(fileno=os.dup(self._down)) as sock, suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, 0)  # the system's again
        for fd in (self._r, self._w, self._up, self._down):
            if fd >= 0:
                os.close(fd)
        self._r = self._w = self._up = self._down = -1


def _pipe_size(fd: int) -> int:
    """The pipe's capacity (16 pages by default; fewer once a user holds many pipes)."""
    try:
        return int(fcntl.fcntl(fd, _F_GETPIPE_SZ))
    except OSError:
        return 1 << 16
