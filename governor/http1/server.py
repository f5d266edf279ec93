"""The listener: accepts client connections, owns them, and drains them on shutdown.

Invariant: :meth:`HTTPServer.shutdown` fails no request the kernel took in: it stops
taking new handshakes, accepts every connection already queued
(:mod:`governor.http1.drain`), closes idle connections, lets requests in flight
finish within the timeout, then closes the rest. From :meth:`HTTPServer.begin_drain`
on, every response says ``Connection: close``. See :mod:`governor.http1.connection`
for what one connection keeps, and :mod:`governor.http1.request` for one request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from governor.config import Config, LimitsConfig, Timeouts
from governor.config.model import ListenConfig
from governor.core.meter import Meter
from governor.http1.connection import ClientConnection
from governor.http1.drain import accept_backlog
from governor.http1.heads import Limits
from governor.http1.request import Handler, refusal
from governor.http1.sniff import sniff_head
from governor.http1.target import path_of
from governor.observe.events import Refusal, RequestSink, report_refusal
from governor.tls.certificates import Certificates
from governor.tls.channel import TLSChannel

log: Final = logging.getLogger("governor.listener")
tls_log = logging.getLogger("governor.tls")
PLAIN_HTTP_ANSWER: Final = refusal(400, "a plain HTTP request on an HTTPS port")  # as nginx's


class Listening:
    """One listening address of the server: plain HTTP, or TLS with its certificates."""

    def __init__(self, server: HTTPServer, config: ListenConfig) -> None:
        self.server = server
        self.address = config.address
        self.scheme = config.scheme
        self.label = f"{config.scheme}://{config.address}"
        self.tls = config.tls is not None

    @property
    def handshake_timeout(self) -> float:
        return self.server.handshake_timeout

    @property
    def plain_http_answer(self) -> bytes:
        return PLAIN_HTTP_ANSWER

    def protocol(self) -> asyncio.Protocol:
        """A new connection's protocol: the HTTP connection, under TLS when this is TLS."""
        conn = ClientConnection(self.server, self)
        return TLSChannel(conn, self) if self.tls else conn

    def tls_context(self) -> ssl.SSLContext:
        certificates = self.server.certificates
        assert certificates is not None
        return certificates.context(self.address)

    def handshake_done(self, channel: TLSChannel) -> None:
        server = self.server
        if server.on_tls is not None:
            server.on_tls(self.address, True)
        hook = server.on_handshake
        if hook is not None:
            channel.meter = hook(channel.server_name, channel.handshake_in, channel.handshake_out)

    def handshake_failed(self, channel: TLSChannel, reason: str) -> None:
        """Count it; a handshake that named a tenant is that tenant's traffic all the same
        (what the socket took of it: the alert it may still hold is dropped by the abort)."""
        server = self.server
        if server.on_tls is not None:
            server.on_tls(self.address, False)
        raw = channel.raw
        if channel.server_name and server.on_handshake is not None and raw is not None:
            sent = channel.handed - raw.get_write_buffer_size()
            server.on_handshake(channel.server_name, channel.received, sent)
        peer = raw.get_extra_info("peername") if raw is not None else None
        tls_log.debug("%s on %s: %s", peer[0] if peer else "?", self.address, reason)


class HTTPServer:
    """The listener: accepts connections, owns them, and drains them on shutdown."""

    def __init__(
        self,
        handler: Handler,
        *,
        sinks: Sequence[RequestSink],
        limits: LimitsConfig,
        timeouts: Timeouts,
    ) -> None:
        self.handler = handler
        self.sinks = sinks
        # Charges a refused request to the tenant its head names; returns that tenant.
        self.on_refusal: Callable[[Refusal], str | None] | None = None
        # Charges a TLS handshake (SNI name, bytes in, out) to the tenant the name is of;
        # returns its meter, which also takes the connection's last bytes (close_notify).
        self.on_handshake: Callable[[str | None, int, int], Meter | None] | None = None
        self.certificates: Certificates | None = None
        self.on_tls: Callable[[str, bool], None] | None = None  # a handshake: listener, ok
        self.https_port: int | None = None  # the first TLS listener's port
        self.connections: set[ClientConnection] = set()
        self.per_client: dict[str | None, int] = {}
        self.loop = asyncio.get_event_loop()
        self._servers: list[tuple[asyncio.Server, socket.socket, Listening]] = []
        self._drained: asyncio.Event | None = None
        self.draining = False  # a stop has begun: every response says Connection: close
        self.stopping = False  # the listener is closing: idle connections are not kept
        self.configure(limits, timeouts)

    def reconfigure(self, config: Config) -> None:
        """A reload: ``limits`` and the client-side ``timeouts`` (see :meth:`configure`)."""
        self.configure(config.limits, config.timeouts)

    def configure(self, limits: LimitsConfig, timeouts: Timeouts) -> None:
        """Take (new) limits and timeouts; connections use them from their next request."""
        self.limits = Limits(
            request_line=limits.request_line,
            field=limits.header_field,
            head=limits.header_total,
            fields=limits.header_count,
        )
        self.body_max = limits.body_max
        self.max_connections = limits.connections
        self.max_per_client = limits.connections_per_client
        self.keepalive = timeouts.keepalive
        self.header_timeout = timeouts.request_header
        self.body_min_rate = timeouts.body_min_rate
        self.websocket_idle = timeouts.websocket_idle
        self.send_timeout = timeouts.send
        self.handshake_timeout = timeouts.tls_handshake

    def admit(self, peer: str | None) -> str | None:
        """Count a new connection from ``peer``; the reason it is refused, if it is."""
        if self.max_connections and len(self.connections) >= self.max_connections:
            return f"governor holds {self.max_connections} connections already"
        held = self.per_client.get(peer, 0)
        if self.max_per_client and held >= self.max_per_client:
            return f"this address holds {self.max_per_client} connections already"
        self.per_client[peer] = held + 1
        return None

    def release(self, peer: str | None) -> None:
        held = self.per_client.get(peer, 0) - 1
        if held > 0:
            self.per_client[peer] = held
        else:
            self.per_client.pop(peer, None)

    def refused(
        self, status: int, reason: str, peer: str | None, raw: bytes | None, sent: int
    ) -> None:
        """A request answered by the listener: charged to its tenant, reported to the sinks.

        ``raw`` is every byte of it received (None for a connection refused on
        arrival: only logged), ``sent`` the answer handed to its socket. What
        crossed the wire for a tenant is the tenant's: the refused request's bytes
        and the answer count like any other request's (see ``on_refusal``).
        """
        if raw is None:
            log.info("refused a connection from %s: %d %s", peer or "?", status, reason)
            return
        method, target, host = sniff_head(raw)
        refusal = Refusal(
            status=status,
            reason=reason,
            peer=peer,
            host=host,
            method=method,
            path=path_of(target),
            received=len(raw),
            sent=sent,
        )
        log.info(
            "refused a request from %s: %d %s", refusal.peer or "?", refusal.status, refusal.reason
        )
        tenant = self.on_refusal(refusal) if self.on_refusal is not None else None
        report_refusal(self.sinks, refusal, tenant)

    async def start(self, sock: socket.socket, config: ListenConfig) -> None:
        """Accept connections on the listening socket ``sock``, the listener ``config``.

        asyncio's server accepts on a duplicate of it: closing that server stops the
        accepting while ``sock`` stays open, so :meth:`shutdown` can take what the
        kernel has queued before closing it.
        """
        self.loop = asyncio.get_running_loop()
        listening = Listening(self, config)
        copy = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            server = await self.loop.create_server(listening.protocol, sock=copy, backlog=1024)
        except BaseException:
            copy.close()
            raise
        self._servers.append((server, sock, listening))
        if listening.tls and self.https_port is None:
            self.https_port = int(sock.getsockname()[1])

    def connection_closed(self) -> None:
        if self._drained is not None and not self.connections:
            self._drained.set()

    def begin_drain(self) -> None:
        """A stop has begun: every response from now on says ``Connection: close``.

        Accepting goes on (``timeouts.shutdown_delay``); clients are told to come back
        on a new connection, which a load balancer sends elsewhere (Envoy's drain does
        the same).
        """
        self.draining = True
        for conn in self.connections:
            conn.closing = True

    async def shutdown(self, grace: float) -> None:
        """Stop accepting without resetting a queued connection; finish, within ``grace``.

        Every connection the kernel queued is accepted and served (``Connection:
        close``); idle ones close; requests in flight get until ``grace`` seconds from
        now, then what is left is closed.
        """
        if not self._servers:
            return
        deadline = self.loop.time() + grace
        self.begin_drain()
        self.stopping = True
        servers, self._servers = self._servers, []
        for server, _, _ in servers:
            server.close()  # its copy of the listener; ours still queues connections
        # A connection the loop accepted just before has its connection_made still queued
        # (uvloop calls it soon, not at once): let it run, so that it is in `connections`
        # and the drain waits for its request. Else, with no other connection open, the
        # stop went on at once and served that request after the final flush: its client
        # got the response, the store never got its bytes (once in a CI run of the hammer).
        await asyncio.sleep(0)
        for conn in list(self.connections):
            conn.stop_when_idle()
        for _, listener, listening in servers:
            taken = await accept_backlog(listener, self._adopter(listening), deadline)
            if taken:
                log.info("shutdown: served %d connections queued on %s", taken, listening.address)
        self._drained = asyncio.Event()
        if self.connections:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._drained.wait()
            except TimeoutError:
                log.warning("shutdown: closing %d connections still busy", len(self.connections))
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
            task = conn._task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])

    def _adopter(self, listening: Listening) -> Callable[[socket.socket], Awaitable[None]]:
        async def adopt(sock: socket.socket) -> None:
            await self.loop.connect_accepted_socket(listening.protocol, sock)

        return adopt
