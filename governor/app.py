"""One governor instance: start-up → serve → graceful shutdown, with every task owned.

:class:`Governor` wires the parts together (store, runtime, upstream session,
the aiohttp low-level server and its listener) and owns the only background
task, the flusher. Tests run it in-process on port 0 with an injected clock;
:mod:`governor.server` runs it with signals.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

from aiohttp import web

from governor.accesslog import open_access_log
from governor.admin import create_admin_app
from governor.config import Config, load_config
from governor.errors import ConfigError
from governor.listener import HTTPServer
from governor.metrics import Metrics
from governor.origin import OriginPool
from governor.proxy import Proxy
from governor.runtime import Clock, Runtime
from governor.store import open_store
from governor.store.base import Store
from governor.warnings import Warner

log = logging.getLogger("governor")


class Governor:
    """A running governor: listener, proxy, accounts, and the flusher task."""

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        clock: Clock = time.time,
        worker: int | None = None,
    ) -> None:
        self.config = config
        self.worker = worker  # 0..N-1 under the supervisor (workers > 1), None when alone
        self.store = (
            store
            if store is not None
            else open_store(
                config.store, timeout=config.store_timeout, history_days=config.history_days
            )
        )
        self.runtime = Runtime(
            config, store=self.store, clock=clock, spool_path=_spool_path(config, worker)
        )
        self.metrics = Metrics(self.runtime, worker=worker)
        self.runtime.request_sinks.append(self.metrics)
        self.runtime.flush_listeners.append(self.metrics.flushed)
        self.access_log = open_access_log(config)
        if self.access_log is not None:
            self.runtime.request_sinks.append(self.access_log)
        self.warner = Warner(self.runtime)
        self.runtime.flush_listeners.append(self.warner.flushed)
        self._server: HTTPServer | None = None
        self.pool: OriginPool | None = None
        self._admin: web.AppRunner | None = None
        self._ready = False
        self._flusher: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []
        self.reloads_ok = 0
        self.reloads_failed = 0

    @property
    def port(self) -> int:
        """The port the proxy listens on (useful with ``listen: ...:0``)."""
        return int(self._sockets[0].getsockname()[1])

    @property
    def admin_port(self) -> int | None:
        """The port of the admin listener, when there is one."""
        if self._admin is None or len(self._sockets) < 2:
            return None
        return int(self._sockets[1].getsockname()[1])

    @property
    def address(self) -> str:
        """``host:port`` of the listener, IPv6 in brackets."""
        host = self.config.listen_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind the listener, open the store, resume today's totals, then accept."""
        # Bind first, both ports: one in use fails before anything else is opened.
        reuse_port = self.worker is not None or self.config.workers > 1
        sock = _listen(self.config.listen_host, self.config.listen_port, reuse_port=reuse_port)
        self._sockets.append(sock)
        admin_sock: socket.socket | None = None
        try:
            if self.config.admin_listen is not None:
                admin_sock = _listen(*self.config.admin_listen, reuse_port=reuse_port)
            await self.store.open()
            await self.runtime.start()
        except BaseException:
            sock.close()
            if admin_sock is not None:
                admin_sock.close()
            await self.store.close()
            raise
        self.pool = OriginPool(connect_timeout=self.config.timeouts.upstream_connect)
        proxy = Proxy(self.runtime, self.pool)
        server = HTTPServer(
            proxy.handle,
            sinks=self.runtime.request_sinks,
            limits=self.config.limits,
            timeouts=self.config.timeouts,
        )
        self.metrics.bind_server(server)
        await server.start(sock)
        self._server = server
        await self.warner.start()
        loop = asyncio.get_running_loop()
        self._flusher = loop.create_task(self.runtime.run_flusher(), name="governor-flusher")
        if admin_sock is not None and self.config.admin_listen is not None:
            await self._start_admin(admin_sock, self.config.admin_listen[0])
        self._ready = True
        log.info("governor listening on http://%s", self.address)

    async def _start_admin(self, sock: socket.socket, host: str) -> None:
        app = create_admin_app(
            self.runtime,
            token=self.config.admin_token,
            metrics=self.metrics,
            ready=lambda: self._ready,
        )
        self._admin = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._admin.setup()
        self._sockets.append(sock)
        await web.SockSite(self._admin, sock).start()
        port = sock.getsockname()[1]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("admin listening on http://%s", where)

    def reload(self, path: Path | None = None) -> bool:
        """Load the config file again; a valid one serves new requests at once.

        An invalid file is rejected with its problems logged and the old config kept.
        """
        try:
            config = load_config(path or self.config.path)
        except ConfigError as exc:
            self.reloads_failed += 1
            self.metrics.reloaded(False)
            log.error("reload rejected, keeping the running config:\n%s", exc)
            return False
        if (
            config.listen_host != self.config.listen_host
            or config.listen_port != self.config.listen_port
        ):
            log.warning("reload: a new listen address takes a restart; keeping %s", self.address)
        if config.store != self.config.store:
            log.warning("reload: a new store takes a restart; keeping %s", self.config.store)
        self.config = config
        self.runtime.reload(config)
        if self._server is not None:
            self._server.configure(config.limits, config.timeouts)
        self.reloads_ok += 1
        self.metrics.reloaded(True)
        log.info("reloaded %s: %d tenants", config.path, len(config.tenants))
        return True

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, flush every count, release all."""
        self._ready = False
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        if self._server is not None:
            # Stops accepting, closes idle connections, gives in-flight requests
            # up to timeouts.shutdown to finish.
            await self._server.shutdown(self.config.timeouts.shutdown)
            self._server = None
        self.runtime.stop()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        await self.warner.stop()
        if self.access_log is not None:
            self.access_log.close()
        if self.pool is not None:
            await self.pool.close()
        await self.store.close()


def _spool_path(config: Config, worker: int | None) -> Path | None:
    """Each worker spools to a file of its own: ``spool.json`` → ``spool.1.json``."""
    if config.spool is None or worker is None:
        return config.spool
    return config.spool.with_name(f"{config.spool.stem}.{worker}{config.spool.suffix}")


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket on ``host:port``.

    ``reuse_port`` (the workers of a supervisor) sets SO_REUSEPORT so that every worker
    binds the same port and the kernel spreads new connections among them. A single
    process never sets it: a second stray instance on the same port must fail with
    "address already in use" instead of silently taking half the connections.
    A worker checks its index, not only ``workers``, so that a worker restarted after
    the file's ``workers`` changed still joins its siblings (``workers`` takes a restart).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock
