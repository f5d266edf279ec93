"""WebSocket upgrades: a metered byte tunnel, opened only after the upstream says 101.

Frames are not decoded or re-encoded: once both sides have switched protocols,
bytes pass through unchanged, so what is counted is what crossed the wire. Both
directions stream with backpressure: a side's reads pause while more than
:data:`HIGH_WATER` bytes wait to be written to the other.

Invariant: the tunnel ends as a whole. When either side closes, the other side is
closed after what was already received from the first has been written to it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from governor.headers import Header, client_response_headers
from governor.meter import Meter
from governor.wire import CountingRequestHandler

HIGH_WATER = 2**18
SUPPORTED = frozenset({"websocket"})


class Pipe:
    """Bytes from one protocol, handed over as aiohttp's ``set_parser`` payload.

    aiohttp feeds the raw bytes of an upgraded connection to whatever parser is
    set; this one queues them for the pump and pauses the transport while the
    queue is above the high-water mark.
    """

    def __init__(self, transport: asyncio.BaseTransport | None) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._transport = cast(asyncio.ReadTransport | None, transport)
        self._paused = False

    # The parser/payload interface aiohttp calls.
    def feed_data(self, data: bytes, size: int = 0) -> tuple[bool, bytes]:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
            if self._size > HIGH_WATER and self._transport is not None and not self._paused:
                self._paused = True
                self._transport.pause_reading()
            self._wake()
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        self.feed_eof()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """The next bytes, or b"" once the side closed."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._size -= len(data)
        if self._paused and self._size <= HIGH_WATER // 2 and self._transport is not None:
            self._paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
        return data


def upgrade_token(request: web.BaseRequest) -> str | None:
    """The requested protocol when this is an upgrade governor tunnels, else None."""
    conn = request.headers.get("Connection", "")
    if "upgrade" not in (t.strip().lower() for t in conn.split(",")):
        return None
    token = request.headers.get("Upgrade", "").strip().lower()
    return token if token in SUPPORTED else None


async def tunnel(
    request: web.BaseRequest,
    up: aiohttp.ClientResponse,
    meter: Meter,
    charge_out: Callable[[int | None], None],
    *,
    cut: bool,
) -> web.StreamResponse:
    """Answer the client's upgrade with the upstream's 101 and pump bytes both ways."""
    headers: list[Header] = client_response_headers(
        [(n.decode("latin-1"), v.decode("latin-1")) for n, v in up.raw_headers]
    )
    headers += [("Connection", "upgrade"), ("Upgrade", up.headers.get("Upgrade", "websocket"))]
    resp = web.StreamResponse(status=101, reason=up.reason, headers=CIMultiDict(headers))
    upstream_conn = up.connection
    assert upstream_conn is not None
    assert upstream_conn.protocol is not None
    up_proto: Any = upstream_conn.protocol
    up_transport = upstream_conn.transport
    assert up_transport is not None
    up_proto.read_timeout = None  # an idle WebSocket is not a silent upstream
    from_upstream = Pipe(up_transport)
    up_proto.set_parser(from_upstream, from_upstream)

    client_proto = cast(CountingRequestHandler, request.protocol)
    from_client = Pipe(request.transport)
    await resp.prepare(request)
    charge_out(None)
    client_proto.set_parser(from_client)  # type: ignore[arg-type]

    def over_cap() -> bool:
        return cut and meter.blocked()

    async def client_to_upstream() -> None:
        while (data := await from_client.read()) and not up_transport.is_closing():
            meter.ingress(client_proto.claim_in())
            if over_cap():
                break
            up_transport.write(data)
            if up_transport.get_write_buffer_size() > HIGH_WATER:
                await _drained(up_proto)
        meter.ingress(client_proto.claim_in())
        up_transport.close()

    async def upstream_to_client() -> None:
        while data := await from_upstream.read():
            if over_cap():
                break
            try:
                await resp.write(data)
            except ConnectionError:
                break
            finally:
                charge_out(None)
        transport = request.transport
        if transport is not None:
            transport.close()

    try:
        async with asyncio.TaskGroup() as pumps:
            pumps.create_task(client_to_upstream())
            pumps.create_task(upstream_to_client())
    finally:
        up_transport.close()
        upstream_conn.close()
        meter.ingress(client_proto.claim_in())
    return resp


async def _drained(protocol: Any) -> None:
    """Wait until the transport under ``protocol`` accepts writes again."""
    await protocol._drain_helper()
