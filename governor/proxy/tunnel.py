"""WebSocket upgrades: a metered byte tunnel, opened only after the upstream says 101.

Frames are not decoded or re-encoded: once both sides have switched protocols,
bytes pass through unchanged, so what is counted is what crossed the wire. Each
direction has backpressure: a side's reads pause while the other side's
transport cannot take more.

Invariant: the tunnel ends as a whole. When either side closes, the other is
closed after what was already received from the first has been written to it
(a transport's close flushes its buffer first).
"""

from __future__ import annotations

import asyncio
from typing import Final

from governor.core.ledger import is_blocked
from governor.core.meter import Meter
from governor.http1.client import OriginConnection
from governor.http1.request import Request

SUPPORTED: Final = frozenset({"websocket"})


def upgrade_token(value: str | None) -> str | None:
    """The requested protocol when it is one governor tunnels, else None."""
    if value is None:
        return None
    token = value.strip(" \t").lower()  # SP/HTAB only: "\xa0websocket" is no upgrade
    return token if token in SUPPORTED else None


class Tunnel:
    """Bytes both ways between a client connection and an upstream connection, metered."""

    def __init__(
        self,
        request: Request,
        origin: OriginConnection,
        meter: Meter,
        *,
        enforce: bool = True,
    ) -> None:
        self.request = request
        self.enforce = enforce  # False: shadow mode, never closed at the cap
        self.client = request.conn
        self.origin = origin
        self.meter = meter
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.idle = request.conn.server.websocket_idle  # seconds without a byte either way
        self._last = self.loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Switch both connections to the tunnel; pass on what each had already sent."""
        if self.idle:
            self._timer = self.loop.call_later(self.idle, self._check_idle)
        from_client = self.client.switch(self)
        from_origin = self.origin.switch(self)
        if from_client:
            self.client_data(from_client)
        if from_origin:
            self.origin_data(from_origin)

    async def wait(self) -> None:
        await self.done

    def _over_cap(self) -> bool:
        """A tunnel is never exempt: it closes at the cap, bytes not yet accepted counted
        (unless its tenant is in shadow mode)."""
        return self.enforce and is_blocked(
            self.meter.used() + self.request.in_flight(), self.meter.cap
        )

    # From the client.
    def _check_idle(self) -> None:
        """Close a tunnel quiet for ``idle`` seconds (one timer, re-armed lazily)."""
        self._timer = None
        if self.done.done():
            return
        quiet = self.loop.time() - self._last
        if quiet >= self.idle:
            self.close()
        else:
            self._timer = self.loop.call_later(self.idle - quiet, self._check_idle)

    def client_data(self, data: bytes) -> None:
        self._last = self.loop.time()
        self.request.received_raw(len(data))
        self.request.charge()
        if self._over_cap():
            self.close()
            return
        try:
            self.origin.send(data)
        except ConnectionError:
            self.close()
            return
        if self.origin.write_paused():
            self.client.pause_reading()

    def client_closed(self) -> None:
        self.close()

    def client_writable(self) -> None:
        self.request.charge()
        self.origin.resume_reading()

    # From the upstream.
    def origin_data(self, data: bytes) -> None:
        self._last = self.loop.time()
        if self._over_cap():
            self.close()
            return
        try:
            self.request.write_raw(data)
        except ConnectionError:
            self.close()
            return
        self.request.charge()
        if self.client.write_paused():
            self.origin.pause_reading()

    def origin_closed(self) -> None:
        self.close()

    def origin_writable(self) -> None:
        self.client.resume_reading()

    def close(self) -> None:
        """End the tunnel: both sides closed, the waiter woken."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.origin.close()
        self.client.abort()  # after what it was handed is sent, within timeouts.send
        if not self.done.done():
            self.request.end()  # a 101 has no body to end: the exchange is complete
            self.done.set_result(None)
