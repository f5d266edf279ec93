"""An upstream response passed on to the client: spliced, charged, and cut at the cap.

The body is passed on from the upstream connection's protocol callbacks (a splice,
no task per chunk: a measured hot-path gain), each piece charged as the client's
socket accepts it. Invariant, under a cut (``at_cap: cut``, not exempt): no body
byte beyond the cap is handed to the client, counting bytes handed and not yet
accepted, and the chunk framing a piece needs; then the client is cut off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from governor.config import PacingConfig
from governor.core.meter import Meter
from governor.core.pacing import BURST, Pacer
from governor.errors import CapReached, UpstreamBroken
from governor.http1 import zerocopy
from governor.http1.client import OriginConnection
from governor.http1.headers import response_block
from governor.http1.request import Request
from governor.http1.wire import response_has_body

log: Final = logging.getLogger("governor.proxy")


class ResponseStream:
    """One upstream response on its way to the client (the sink of the splice)."""

    __slots__ = (
        "_conn",
        "_debt",
        "_last",
        "_pacing",
        "_waiting",
        "cut",
        "limit",
        "meter",
        "pace_after",
        "pacer",
        "passed",
        "request",
        "silence",
    )

    def __init__(self, request: Request, meter: Meter, *, cut: bool, silence: float) -> None:
        self.request = request
        self.meter = meter
        self.cut = cut
        self.silence = silence  # seconds the upstream may send nothing mid-body
        # The most body bytes to pass on (``large``, for a response of undeclared length),
        # or None; ``passed`` counts them.
        self.limit: int | None = None
        self.passed = 0
        # Pacing (see :meth:`pace`): the tenant's pacer, once ``pace_after`` bytes passed.
        self.pacer: Pacer | None = None
        self.pace_after = 0
        self._pacing: PacingConfig | None = None
        self._conn: OriginConnection | None = None
        self._debt = 0.0  # bytes sent ahead of the paced rate
        self._last = 0.0  # when the debt was last paid down (loop time)
        self._waiting: asyncio.TimerHandle | None = None  # a pause until the rate allows more

    def pace(self, pacer: Pacer, pacing: PacingConfig, *, after: int) -> None:
        """Pace this response with ``pacer`` once ``after`` body bytes have passed (a large
        response: 0 when its length is declared, ``large.size`` when it is not)."""
        self.pacer = pacer
        self._pacing = pacing
        self.pace_after = after

    async def relay(self, conn: OriginConnection) -> bool:
        """Pass on the response whose head ``conn`` holds; False when it was not completed."""
        request = self.request
        up = conn.head
        assert up is not None
        if not response_has_body(request.method, up.status):
            block = response_block(up.block, up.connection, body=False, lows=up.lows)
            request.start_response(up.status, up.reason, block, length=None, body=False)
            return self._end()
        first = [] if self._piecewise() else conn.read_nowait()
        try:
            block = response_block(up.block, up.connection, body=True, lows=up.lows)
            request.start_response(
                up.status, up.reason, block, length=up.content_length, first=first
            )
        except ConnectionError:
            return False
        request.charge()
        if conn.at_eof:  # the whole body came with the head (a small response)
            return self._end()
        return await self._splice(conn)

    async def _splice(self, conn: OriginConnection) -> bool:
        """The rest of the body, passed on from the upstream's protocol callbacks (or, when
        it is large and nothing needs to see it, by the kernel: :meth:`_by_kernel`)."""
        request = self.request
        client = request.conn
        pacer = self.pacer
        if (
            not self._piecewise()
            and not request.chunked_out
            and client.scheme == "http"
            and conn.key[0] == "http"
            and zerocopy.available()
        ):
            left = conn.body_left()
            relay = self._kernel_relay(conn, left) if left >= zerocopy.ZERO_COPY_MIN else None
            if relay is not None:
                conn.pause_reading()  # the kernel reads the rest
                return await self._by_kernel(conn, relay, left)
        if pacer is None:
            client.on_writable = conn.resume_reading
        else:
            self._conn = conn
            client.on_writable = self._writable
            pacer.active += 1
        try:
            await conn.splice(self, self.silence)
        except UpstreamBroken as exc:
            log.warning("%s: the upstream broke off mid-body: %r", self.meter.tenant, exc)
            client.abort()
            return False
        except ConnectionError:
            return False
        finally:
            client.on_writable = None
            request.charge()
            if pacer is not None:
                pacer.active -= 1
                if self._waiting is not None:
                    self._waiting.cancel()
                    self._waiting = None
        return self._end()

    def _piecewise(self) -> bool:
        """Whether each body piece must pass body_data(): under a cut, a limit or pacing it
        meets the cap, the limit or the rate there (not joined to the head, nor left to
        the kernel)."""
        return self.cut or self.limit is not None or self.pacer is not None

    def _kernel_relay(self, conn: OriginConnection, left: int) -> zerocopy.KernelRelay | None:
        """The kernel's relay of the body's ``left`` bytes; None when it cannot be had (no
        socket, or no descriptor to spare: the body then goes the usual way)."""
        client = self.request.conn
        up = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        down = client.transport.get_extra_info("socket") if client.transport else None
        if up is None or down is None:
            return None
        try:
            return zerocopy.KernelRelay(
                client.loop,
                up.fileno(),
                down.fileno(),
                left,
                moved=self._moved,
                stalled=client.stalled,
                silence=self.silence,
                send_timeout=client.send_timeout(),
            )
        except OSError as exc:  # EMFILE and the like
            log.debug("%s: the kernel cannot move this body: %s", self.meter.tenant, exc)
            return None

    async def _by_kernel(
        self, conn: OriginConnection, relay: zerocopy.KernelRelay, left: int
    ) -> bool:
        """The body's ``left`` bytes, moved from socket to socket by the kernel."""
        request = self.request
        client = request.conn
        try:
            await client.settle()  # what was written goes first
            if client.closed:
                return False
            await relay.run()
        except UpstreamBroken as exc:
            log.warning("%s: the upstream broke off mid-body: %r", self.meter.tenant, exc)
            client.abort()
            return False
        except ConnectionError:
            client.broken()  # the kernel dropped what the socket held unsent
            return False
        finally:
            relay.close()
            request.charge()
        conn.moved_by_kernel(left)
        self.passed += left
        return self._end()

    def _moved(self, n: int) -> None:
        """The kernel handed ``n`` more body bytes to the client's socket: count them."""
        request = self.request
        request.handed += n
        request.conn.handed += n
        request.charge()

    def _end(self) -> bool:
        """Complete the response (the last chunk, for a chunked one)."""
        try:
            self.request.end()
        except ConnectionError:
            return False
        self.request.charge()
        return True

    def body_data(self, data: bytes) -> bool:
        """A piece of the spliced response body: pass it on; True while the client is full.

        Under a cut, only what fits under the cap goes on (under a limit, what fits
        under it); then the client's connection is closed and :class:`CapReached` ends
        the splice.
        """
        request = self.request
        over = False
        if self.cut:
            room = self._room()
            if room <= 0:
                request.conn.abort()
                raise CapReached
            if len(data) > room:
                data, over = data[:room], True
        if self.limit is not None:
            room = self.limit - self.passed
            if len(data) > room:
                data, over = data[: max(room, 0)], True
                request.note.outcome = "large"
        self.passed += len(data)
        request.write(data)
        request.charge()
        if over:
            request.conn.abort()
            raise CapReached
        if self.pacer is not None and self.passed > self.pace_after:
            return self._pace(len(data)) or request.conn.write_paused()
        return request.conn.write_paused()

    def _pace(self, n: int) -> bool:
        """Count ``n`` bytes against the paced rate; True when reading must wait for it
        (a timer resumes it: :meth:`_paced`)."""
        pacer, pacing, meter = self.pacer, self._pacing, self.meter
        assert pacer is not None
        assert pacing is not None
        pacer.paced += n
        # What was handed and not claimed yet counts too (as for a cut): a running claim
        # lags by up to CLAIM_STEP, and pacing would start that late, at a rate too high.
        used = meter.used() + self.request.in_flight()
        rate = pacer.rate(pacing, now=meter.now(), used=used, cap=meter.cap, end=meter.period().end)
        if rate is None:  # before pacing.from
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._debt > 0.0:
            self._debt = max(0.0, self._debt - (now - self._last) * rate)
        self._last = now
        self._debt += n
        ahead = self._debt - rate * BURST
        if ahead <= 0.0:
            return False
        self.request.note.outcome = "paced"
        if self._waiting is not None:  # one pause at a time: the debt is all in this one
            self._waiting.cancel()
        self._waiting = loop.call_later(ahead / rate, self._paced)
        return True

    def _paced(self) -> None:
        """The paced rate allows more: read on, unless the client is still full."""
        self._waiting = None
        conn = self._conn
        if conn is not None and not self.request.conn.write_paused():
            conn.resume_reading()

    def _writable(self) -> None:
        """The client took what it held: read on, unless a pause for the rate runs."""
        conn = self._conn
        if conn is not None and self._waiting is None:
            conn.resume_reading()

    def _room(self) -> int:
        """Body bytes that still fit under the cap, after the chunk framing they need
        (bytes handed to the client and not yet accepted count against it)."""
        remaining = self.meter.remaining() - self.request.in_flight()
        if not self.request.chunked_out or remaining <= 0:
            return remaining
        return max(0, remaining - len(f"{remaining:x}") - 4)  # "<hex>\r\n" ... "\r\n"
