"""Flow control, once for both sides: the client connection and the upstream connection.

A connection's reads pause and resume through :class:`Flow` only, so its
``reading_paused`` is always what the transport was told; writes wait in
:meth:`Flow.drain` while the transport is above its high-water mark. A
:class:`BodyQueue` holds body pieces for their reader and pauses reading above
its high-water mark, resuming only once it is back at its low one (hysteresis:
a queue hovering at one threshold would pause and resume on every piece).
Why these marks: ``docs/http1.md``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Protocol


class Transport(Protocol):
    """What flow control needs of a transport."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...


class Flow:
    """One connection's backpressure: its reads (paused or not) and its writes (drain).

    Pause and resume are idempotent: the transport hears of a change only when
    the state changes. :meth:`stop_reading` pauses for good (a refused body):
    no later resume undoes it. :meth:`lose` (the connection is gone) fails a
    drain waiter with the error given and makes every later call a no-op.
    """

    __slots__ = (
        "_drain",
        "_lost",
        "_stopped",
        "loop",
        "reading_paused",
        "transport",
        "write_high",
        "write_low",
        "writing_paused",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, write_high: int | None, write_low: int | None
    ) -> None:
        self.loop = loop
        self.transport: Transport | None = None
        self.write_high = write_high  # None: the transport's own default
        self.write_low = write_low
        self.reading_paused = False
        self.writing_paused = False
        self._stopped = False
        self._lost = False
        self._drain: asyncio.Future[None] | None = None

    def attach(self, transport: Transport) -> None:
        """The connection is made: flow control now acts on ``transport``."""
        self.transport = transport
        if self.write_high is not None:
            transport.set_write_buffer_limits(high=self.write_high, low=self.write_low)

    # Reading.
    def pause_reading(self) -> None:
        transport = self.transport
        if not self.reading_paused and transport is not None and not self._lost:
            self.reading_paused = True
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self.transport
        if self.reading_paused and transport is not None and not self._lost and not self._stopped:
            self.reading_paused = False
            transport.resume_reading()

    def stop_reading(self) -> None:
        """Pause reading for the rest of the connection."""
        self.pause_reading()
        self._stopped = True

    # Writing: the transport's callbacks, and the wait they end.
    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter = self._drain
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait while writing is paused; at once when it is not, or the connection is lost.

        Raises what :meth:`lose` was given when the connection is lost while waiting.
        """
        if not self.writing_paused or self._lost:
            return
        waiter = self._drain
        if waiter is None or waiter.done():
            waiter = self._drain = self.loop.create_future()
        try:
            await asyncio.shield(waiter)  # two writers may wait; one's cancel is not the other's
        finally:
            if self._drain is waiter and waiter.done():
                self._drain = None

    async def settle(self) -> None:
        """Wait until the transport holds nothing: its marks at zero, then back to ours.

        Raises what :meth:`lose` was given when the connection is lost meanwhile.
        """
        transport = self.transport
        if transport is None or self._lost:
            return
        with contextlib.suppress(RuntimeError):  # a transport closing meanwhile
            transport.set_write_buffer_limits(high=0, low=0)  # resumed once it is empty
        try:
            await self.drain()
        finally:
            if not self._lost:
                with contextlib.suppress(RuntimeError):
                    transport.set_write_buffer_limits(high=self.write_high, low=self.write_low)

    def lose(self, error: BaseException) -> None:
        """The connection is gone: a drain waiting fails with ``error``."""
        self._lost = True
        waiter = self._drain
        self._drain = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # retrieved: the writer may have been cancelled already


class BodyQueue:
    """Body pieces waiting for their reader; reading pauses above ``high``, resumes at ``low``.

    The owner puts what the wire delivered and its reader takes it; :attr:`size`
    is the bytes held. :meth:`wait` waits for :meth:`wake` (a piece, the end, or
    a failure: what the reader then finds is the owner's to say).
    """

    __slots__ = ("_pieces", "_waiter", "flow", "high", "low", "size")

    def __init__(self, flow: Flow, *, high: int, low: int) -> None:
        self.flow = flow
        self.high = high
        self.low = low
        self.size = 0
        self._pieces: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._pieces)

    def put(self, piece: bytes) -> None:
        """Hold ``piece`` (the caller wakes the reader once it has put all it had)."""
        self._pieces.append(piece)
        self.size += len(piece)
        if self.size > self.high:
            self.flow.pause_reading()

    def get(self) -> bytes:
        """The oldest piece (``b""`` when none); reading resumes once at ``low``."""
        if not self._pieces:
            return b""
        piece = self._pieces.popleft()
        self.size -= len(piece)
        if self.size <= self.low:
            self.flow.resume_reading()
        return piece

    def take_all(self) -> list[bytes]:
        """Every piece held, as received (none: ``[]``); reading resumes. Not joined: a
        body's pieces go to the client's socket in one scatter write, uncopied."""
        pieces = self._pieces
        if not pieces:
            return []
        taken = [pieces.popleft()] if len(pieces) == 1 else list(pieces)
        pieces.clear()
        self.size = 0
        self.flow.resume_reading()
        return taken

    async def wait(self) -> None:
        """Wait for the next :meth:`wake`."""
        self._waiter = self.flow.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
