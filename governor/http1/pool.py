"""The pool of keep-alive connections to the upstreams, most recently used first.

A connection goes back to the pool only when its request was sent whole, its
response read to its exact end, and both sides said keep-alive
(:attr:`~governor.http1.client.OriginConnection.reusable`). An idle pooled
connection that becomes readable (data or EOF) is closed at once; and a pooled
connection is polled, without reading, as it is taken from the pool, so bytes
already in the socket but not yet delivered are never taken for the next
response (as nginx's keepalive cache does). A request without a body that fails
on a reused connection before any response byte arrived (the upstream closed it
while it sat idle) is retried once on a new connection (by the proxy).
"""

from __future__ import annotations

import asyncio
import ssl

from governor.config import Config, UpstreamURL
from governor.errors import upstream_error
from governor.http1.client import READ_MAX, OriginConnection, PoolKey


class OriginPool:
    """Keep-alive connections per upstream (scheme, host, port), most recently used first."""

    def __init__(self, *, connect_timeout: float) -> None:
        self.loop = asyncio.get_event_loop()
        self.connect_timeout = connect_timeout
        self._idle: dict[PoolKey, list[OriginConnection]] = {}
        self._all: set[OriginConnection] = set()
        self._tls: ssl.SSLContext | None = None
        # Every connection reads into this in turn: a read is copied out at once
        # (buffer_updated), so one buffer serves them all.
        self.read_array = bytearray(READ_MAX)
        self.read_buffer = memoryview(self.read_array)

    def reconfigure(self, config: Config) -> None:
        """A reload: connects from now on wait ``timeouts.upstream_connect``."""
        self.connect_timeout = config.timeouts.upstream_connect

    async def acquire(self, upstream: UpstreamURL, *, fresh: bool = False) -> OriginConnection:
        """A connection to ``upstream``: an idle pooled one, or a new one."""
        key = (upstream.scheme, upstream.host, upstream.port)
        idle = self._idle.get(key)
        while idle and not fresh:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.readable():  # the upstream wrote or closed while it sat idle
                conn.close()
                continue
            conn.idle_since = None
            conn.reused = True
            return conn
        return await self._connect(upstream, key)

    async def _connect(self, upstream: UpstreamURL, key: PoolKey) -> OriginConnection:
        loop = asyncio.get_running_loop()
        self.loop = loop
        tls: ssl.SSLContext | None = None
        if upstream.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: OriginConnection(self, key),
                    upstream.host,
                    upstream.port,
                    ssl=tls,
                    server_hostname=upstream.host if tls is not None else None,
                )
        except OSError as exc:  # TimeoutError included
            raise upstream_error(exc, "connect") from exc
        self._all.add(conn)
        return conn

    def release(self, conn: OriginConnection) -> None:
        """Return ``conn`` to the pool if it can carry another exchange, else close it."""
        if not conn.reusable:
            conn.close()
            return
        conn.park()
        self._idle.setdefault(conn.key, []).append(conn)

    def forget(self, conn: OriginConnection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def close(self) -> None:
        """Close every connection."""
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
