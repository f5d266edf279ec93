"""The interfaces at the HTTP/1.1 engine's edges, as small Protocols.

They let a module name what it needs of another without importing it, so the
engine has no import cycle (not even under ``TYPE_CHECKING``): a request sees
its connection as a :class:`ClientPort`, a tunnel or a spliced body sees only
the callbacks it implements. Implementations: :class:`~governor.http1.connection.ClientConnection`
(ClientPort), :class:`~governor.proxy.stream.ResponseStream` (BodySink),
:class:`~governor.proxy.tunnel.Tunnel` (TunnelSink, OriginSink); ``Settings`` is what a
request reads of the server, ``Taker`` what an upstream read sees of its client side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from governor.errors import BadMessage
from governor.http1.flow import Flow


class Settings(Protocol):
    """The listener's settings a request, and the proxy through it, read."""

    body_max: int  # bytes a request body may have (0: no limit)
    websocket_idle: float  # seconds a tunnel may carry no byte either way (0: no limit)
    https_port: int | None  # the first TLS listener's port (an https_redirect's target)
    header_timeout: float  # seconds a head may take (and a body's grace before its rate counts)
    body_min_rate: int  # bytes/s a request body must keep after that grace (0: no minimum)


class TunnelSink(Protocol):
    """Where a client connection's bytes go once it switched protocols."""

    def client_data(self, data: bytes) -> None: ...

    def client_closed(self) -> None: ...

    def client_writable(self) -> None: ...


class OriginSink(Protocol):
    """Where an upstream connection's bytes go once it switched protocols."""

    def origin_data(self, data: bytes) -> None: ...

    def origin_closed(self) -> None: ...

    def origin_writable(self) -> None: ...


class BodySink(Protocol):
    """Where a spliced response body goes (see :meth:`OriginConnection.splice`)."""

    def body_data(self, data: bytes) -> bool:
        """Take body bytes; True when the taker's socket is full (pause the upstream)."""
        ...


class ClientPort(Protocol):
    """What a request (and the proxy, through ``request.conn``) needs of its client connection."""

    loop: asyncio.AbstractEventLoop
    peer: str | None
    listener: str  # the listening address it came in on (host:port)
    scheme: str  # http | https
    handed: int  # bytes handed to the transport, every response on the connection (wire)
    closing: bool  # no request after this one: the response says Connection: close
    flow: Flow
    body_error: BadMessage | None  # the request body was refused midway
    on_writable: Callable[[], None] | None  # called once a full socket drains
    transport: asyncio.Transport | None  # (on plain HTTP, the socket's: see zerocopy)

    @property
    def server(self) -> Settings: ...

    @property
    def closed(self) -> bool:
        """The connection is gone."""
        ...

    def write(self, data: bytes) -> None: ...

    def writelines(self, parts: Sequence[bytes]) -> None: ...

    def sent(self) -> int:
        """Bytes the socket accepted so far."""
        ...

    def transmitted(self) -> int:
        """Bytes the kernel transmitted so far (accepted, less what it holds unsent)."""
        ...

    def overhead(self) -> int:
        """Bytes received beyond the plaintext (TLS records' framing) not claimed yet."""
        ...

    def pending(self) -> int:
        """Bytes handed to the transport that the socket has not accepted yet."""
        ...

    async def drain(self) -> None: ...

    def stalled(self) -> None:
        """The socket accepted nothing for :meth:`send_timeout` seconds: drop the client."""
        ...

    def send_timeout(self) -> float: ...

    def broken(self) -> None:
        """A write to its socket failed (a reset, a broken pipe): what it held unsent is lost."""
        ...

    async def settle(self) -> None: ...

    def abort(self) -> None:
        """End the connection without a clean end of body."""
        ...

    def switch(self, sink: TunnelSink) -> bytes:
        """Hand every further byte to ``sink``; returns those already received."""
        ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def write_paused(self) -> bool: ...


class Taker(Protocol):
    """The client side of an exchange, as the upstream's reads see it."""

    def pending(self) -> int:
        """Bytes handed to the client's transport that its socket has not accepted."""
        ...
