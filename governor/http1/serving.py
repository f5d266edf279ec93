"""What a client connection needs of the listener that accepted it, as a Protocol.

:class:`~governor.http1.server.HTTPServer` is the one implementation; connections see it
through :class:`Listener` so that the server can import the connection, not the reverse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from governor.http1.heads import Limits
from governor.http1.ports import Settings
from governor.http1.request import Handler
from governor.observe.events import RequestSink


class Place(Protocol):
    """The listening address a connection came in on."""

    address: str  # host:port, as logs and metrics name it
    scheme: str  # http | https
    label: str  # scheme://address


class Listener(Settings, Protocol):
    """What a connection needs of the listener that accepted it
    (:class:`~governor.http1.server.HTTPServer`): its settings, its count, its handler."""

    loop: asyncio.AbstractEventLoop
    handler: Handler
    sinks: Sequence[RequestSink]
    limits: Limits
    connections: set[Any]  # of ClientConnection: every connection it holds
    draining: bool  # a stop has begun: close after each request
    stopping: bool  # the listener is closing: idle connections are not kept
    keepalive: float
    send_timeout: float

    def admit(self, peer: str | None) -> str | None:
        """Count a new connection from ``peer``; the reason it is refused, if it is."""
        ...

    def release(self, peer: str | None) -> None: ...

    def refused(
        self, status: int, reason: str, peer: str | None, raw: bytes | None, sent: int
    ) -> None: ...

    def connection_closed(self) -> None: ...
