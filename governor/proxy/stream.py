"""An upstream response passed on to the client: spliced, charged, and cut at the cap.

The body is passed on from the upstream connection's protocol callbacks (a splice,
no task per chunk: a measured hot-path gain), each piece charged as the client's
socket accepts it. Invariant, under a cut (``at_cap: cut``, not exempt): no body
byte beyond the cap is handed to the client, counting bytes handed and not yet
accepted, and the chunk framing a piece needs; then the client is cut off.
"""

from __future__ import annotations

import logging

from governor.core.meter import Meter
from governor.errors import UpstreamBroken
from governor.http1.client import OriginConnection
from governor.http1.headers import response_block
from governor.http1.request import Request
from governor.http1.wire import response_has_body

log = logging.getLogger("governor.proxy")


class CapReached(ConnectionAbortedError):
    """``at_cap: cut``: the tenant reached its cap mid-response; the client is cut off.

    Also a response of undeclared length that passed ``large.size`` (see ``limit``).
    """


class ResponseStream:
    """One upstream response on its way to the client (the sink of the splice)."""

    __slots__ = ("cut", "limit", "meter", "passed", "request", "silence")

    def __init__(self, request: Request, meter: Meter, *, cut: bool, silence: float) -> None:
        self.request = request
        self.meter = meter
        self.cut = cut
        self.silence = silence  # seconds the upstream may send nothing mid-body
        # The most body bytes to pass on (``large``, for a response of undeclared length),
        # or None; ``passed`` counts them.
        self.limit: int | None = None
        self.passed = 0

    async def relay(self, conn: OriginConnection) -> bool:
        """Pass on the response whose head ``conn`` holds; False when it was not completed."""
        request = self.request
        up = conn.head
        assert up is not None
        if not response_has_body(request.method, up.status):
            block = response_block(up.block, up.connection, body=False)
            request.start_response(up.status, up.reason, block, length=None, body=False)
            return self._end()
        # Under a cut or a limit, each piece meets the cap or the limit in body_data().
        first = b"" if self.cut or self.limit is not None else conn.read_nowait()
        try:
            block = response_block(up.block, up.connection, body=True)
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
        """The rest of the body, passed on from the upstream's protocol callbacks."""
        request = self.request
        client = request.conn
        client.on_writable = conn.resume_reading
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
        return self._end()

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
        return request.conn.write_paused()

    def _room(self) -> int:
        """Body bytes that still fit under the cap, after the chunk framing they need
        (bytes handed to the client and not yet accepted count against it)."""
        remaining = self.meter.remaining() - self.request.in_flight()
        if not self.request.chunked_out or remaining <= 0:
            return remaining
        return max(0, remaining - len(f"{remaining:x}") - 4)  # "<hex>\r\n" ... "\r\n"
