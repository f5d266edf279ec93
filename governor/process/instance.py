"""One governor instance: start-up → serve → graceful shutdown, every task owned, one reload.

:class:`Governor` builds the parts (store, runtime and flusher, upstream pool, the
HTTP server and its proxy handler, access log, metrics, warner, admin listener),
starts them in an order where each failure names its config key, and stops them in
the reverse. Its :class:`~governor.tasks.TaskGroup` owns every background
task (the flusher, the warner's delivery, the admin listener's moves); nothing of
an instance runs on after :meth:`Governor.stop`. Tests run it in-process on port 0
with an injected clock; :mod:`governor.process.serve` runs it with signals.

Reload: every setting but ``listen``, ``store``, ``workers`` and ``spool`` (which
take a restart and keep their running values) reaches the running parts through one fan-out,
:meth:`Governor.reconfigure`, each part taking what it holds (see
:class:`Reconfigurable`). A reload is all or nothing: the file is checked as
``governor check`` checks it and a new ``admin_listen`` is bound before anything
changes; any problem and the running config stays.

Start-up never fails with a bare OS error: whatever the config names and cannot be
used (a port, a file, the store) is a :class:`~governor.errors.StartError` that says
``FILE:LINE: key: what``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import socket
import time
from pathlib import Path
from typing import Final, Protocol

from governor.accounts import spool
from governor.accounts.flusher import Flusher
from governor.accounts.runtime import Clock, Runtime, Snapshot
from governor.admin.api import create_admin_app
from governor.admin.listener import AdminListener
from governor.config import Config, load_config
from governor.config.listeners import pin_listeners
from governor.errors import ConfigError, StartError, StoreError
from governor.http1.pool import OriginPool
from governor.http1.server import HTTPServer
from governor.observe.accesslog import AccessLog, open_access_log
from governor.observe.build_info import register_build_info
from governor.observe.events import RequestSink
from governor.observe.forecast import Forecasts
from governor.observe.metrics import Metrics
from governor.observe.tls_metrics import ListenerMetrics
from governor.observe.top import TopTally
from governor.observe.webhooks import Warner
from governor.process.preflight import preflight
from governor.proxy.handler import Proxy
from governor.release import release
from governor.store import open_store
from governor.store.base import Store
from governor.tasks import TaskGroup
from governor.tls.certificates import Certificates, load_certificates

log: Final = logging.getLogger("governor")

RESTART_ONLY: Final = ("listen", "store", "workers", "spool")
"""The keys a reload does not apply: they keep their running values until a restart."""

OLD_CONFIG_LEVELS: Final = 4
"""How deep a replaced config and snapshot are held while released: at 3, the tenant
index's host table still went at once (4 ms at 20,000 tenants); at 4, nothing over 3 ms."""


class Reconfigurable(Protocol):
    """A running part that holds settings of the config, and takes new ones on a reload."""

    def reconfigure(self, config: Config) -> None:
        """Use ``config`` from now on; what is in flight may finish under the old one."""


class Governor:
    """A running governor: listener, proxy, accounts, observers, and the tasks it owns."""

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
        self.store = store if store is not None else _open_store(config)
        self.runtime = Runtime(config, store=self.store, clock=clock)
        self.flusher = Flusher(
            self.runtime,
            spool_path=_spool_path(config, worker),
            spool_orphans=lambda: _spool_orphans(config, worker),
        )
        self.tasks = TaskGroup()  # every background task of this instance
        self.metrics = Metrics(self.runtime, worker=worker)
        self.flusher.listeners.append(self.metrics.flushed)
        self.access_log = _open_access_log(config)
        # Told about every answered request.
        self.top = TopTally(self.runtime)  # the top consumers, written after each flush
        self.flusher.writers.append(self.top.write)
        self.listener_metrics = ListenerMetrics(self.metrics.registry)
        register_build_info(self.metrics.registry)
        self.flusher.listeners.append(self.listener_metrics.flushed)
        self.sinks: list[RequestSink] = [
            self.metrics,
            self.access_log,
            self.top,
            self.listener_metrics,
        ]
        self.warner = Warner(self.runtime)
        self.flusher.listeners.append(self.warner.flushed)
        # Forecasts first: the metrics and the status page read what each flush projected.
        self.forecasts = Forecasts(self.runtime)
        self.flusher.listeners.insert(0, self.forecasts.flushed)
        self.forecasts.on_forecast = self.warner.forecast
        self.metrics.forecasts = self.forecasts
        self._server: HTTPServer | None = None
        self.pool: OriginPool | None = None
        self.admin: AdminListener | None = None
        # Workers bind with SO_REUSEPORT (see _listen); fixed at start, as `workers` is.
        self._reuse_port = worker is not None or config.workers > 1
        self._ready = False
        self._stopping = False  # begin_stop() was called
        self._flushing: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []

    @property
    def port(self) -> int:
        """The port the proxy listens on (useful with ``listen: ...:0``): the first listener's."""
        return int(self._sockets[0].getsockname()[1])

    @property
    def ports(self) -> list[int]:
        """The port of each listener, in the order of ``listen``."""
        return [int(sock.getsockname()[1]) for sock in self._sockets]

    @property
    def admin_port(self) -> int | None:
        """The port of the admin listener, when there is one."""
        return None if self.admin is None else self.admin.port

    @property
    def address(self) -> str:
        """``host:port`` of the listener, IPv6 in brackets."""
        host = self.config.listen_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind the listener, open the store, resume today's totals, then accept."""
        # Bind first: a port in use fails before anything else is opened.
        for i, listener in enumerate(self.config.listeners):
            key = "listen" if len(self.config.listeners) == 1 else f"listen[{i}]"
            try:
                self._sockets.append(self._bind(key, listener.host, listener.port))
            except StartError:
                self._close_sockets()
                raise
        try:
            certificates = self._certificates(self.config)
            # The spool next: a second process with the same file stops here, before
            # touching the store, and never gets to overwrite the first one's counts.
            self.flusher.claim_spool()
            await self._open_store()
            await self._resume()
        except BaseException:
            self._close_sockets()
            self.flusher.release_spool()
            await self.store.close()
            raise
        self.pool = OriginPool(connect_timeout=self.config.timeouts.upstream_connect)
        proxy = Proxy(self.runtime, self.pool)
        server = HTTPServer(
            proxy.handle,
            sinks=self.sinks,
            limits=self.config.limits,
            timeouts=self.config.timeouts,
        )
        server.on_refusal = proxy.charge_refusal
        server.on_handshake = proxy.charge_handshake
        server.certificates = certificates
        server.on_tls = self.listener_metrics.handshake
        self.listener_metrics.certificates(certificates)
        self.metrics.bind_server(server)
        for sock, listener in zip(self._sockets, self.config.listeners, strict=True):
            await server.start(sock, listener)
        self._server = server
        self.warner.start(self.tasks)
        self.forecasts.start(self.tasks)
        self._flushing = self.tasks.spawn(self.flusher.run(), name="governor-flusher")
        await self._start_admin()
        if self._stopping:  # asked to stop while starting: never report ready
            self.begin_stop()
        else:
            self._ready = True
        for sock, listener in zip(self._sockets, self.config.listeners, strict=True):
            port = int(sock.getsockname()[1])
            host = f"[{listener.host}]" if ":" in listener.host else listener.host
            log.info("governor listening on %s://%s:%d", listener.scheme, host, port)

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def _certificates(self, config: Config) -> Certificates | None:
        """The certificates ``config`` names, loaded (None without a TLS listener); each
        one that expires within 14 days is warned about. Raises ConfigError."""
        if all(listener.tls is None for listener in config.listeners):
            return None
        # Certificates expire in real time, whatever clock the accounts run on. Files that
        # did not change since the running ones were read are not read again.
        running = self._server.certificates if self._server is not None else None
        certificates, warnings = load_certificates(config, now=time.time(), previous=running)
        for warning in warnings:
            log.warning("certificate: %s", warning)
        return certificates

    async def _start_admin(self) -> None:
        """The admin listener, on ``admin_listen`` when set (a reload may add it later)."""
        app = create_admin_app(self.runtime, metrics=self.metrics, ready=lambda: self._ready)
        self.admin = AdminListener(
            app, bind=lambda host, port: self._bind("admin_listen", host, port), tasks=self.tasks
        )
        await self.admin.start(self.config.admin_listen)

    async def reload(self, path: Path | None = None) -> bool:
        """Load the config file again; a valid one serves new requests at once.

        Everything but :data:`RESTART_ONLY` is applied (see :meth:`reconfigure`). The
        file is checked as ``governor check`` checks it, for the keys a reload applies,
        and a new ``admin_listen`` is bound, before anything changes: any problem and the
        reload is rejected with the problems logged and the old config kept.

        The file is read, checked and built into a new snapshot (the tenant index) in a
        worker thread: however many tenants it names, requests go on being served
        meanwhile, and only the swap runs on the event loop. Callers run one reload at a
        time (:mod:`governor.process.serve` coalesces SIGHUPs).

        The cycle collector is off while the new config is built, and what is alive after
        the swap is frozen (:func:`gc.freeze`), as at start-up: a collection holds the
        interpreter lock for as long as it walks, and walking a 20,000-tenant config
        mid-build or after it held requests up for 50 to 120 ms. The config makes no
        reference cycles, so the old one is freed by reference counting, frozen or not:
        in a worker thread, a piece at a time (:func:`governor.release.release`), since
        dropping it at once held the loop 15 ms at 20,000 tenants.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            try:
                config, snapshot, certificates = await asyncio.to_thread(
                    self._prepare, path or self.config.path
                )
                if self.admin is not None:
                    self.admin.move(config.admin_listen)  # binds now; serves there soon
            except (ConfigError, StartError) as exc:
                self.metrics.reloaded(False)
                log.error("reload rejected, keeping the running config:\n%s", exc)
                return False
            old: list[object] = [self.config, self.runtime.snapshot]
            if self._server is not None:
                self._server.certificates = certificates  # new handshakes use them
            self.listener_metrics.certificates(certificates)
            self.reconfigure(config, snapshot)
            await asyncio.to_thread(release, old, levels=OLD_CONFIG_LEVELS)
            gc.freeze()
        finally:
            if collecting:
                gc.enable()
        self.metrics.reloaded(True)
        n = len(config.tenants)
        log.info("reloaded %s: %d tenant%s", config.path, n, "" if n == 1 else "s")
        return True

    def _prepare(self, path: Path) -> tuple[Config, Snapshot, Certificates | None]:
        """A reload's work off the loop: the file loaded and checked, its snapshot built,
        its certificates read again (a renewed certificate is served from now on)."""
        config = self._pinned(load_config(path, beside_loop=True))
        problems = preflight(config, skip=(*RESTART_ONLY, "admin_listen", "tls"))
        if problems:
            raise ConfigError(problems)
        return config, Snapshot.build(config), self._certificates(config)

    def begin_stop(self) -> None:
        """A stop was asked for (SIGTERM): /readyz fails from now, responses say close.

        Serving goes on until :meth:`stop` drains; call this the moment the signal
        arrives, so a load balancer polling /readyz learns of the stop at once.
        """
        self._stopping = True
        self._ready = False
        if self._server is not None:
            self._server.begin_drain()

    def reconfigure(self, config: Config, snapshot: Snapshot | None = None) -> None:
        """Hand ``config`` to every running part; each takes the settings it holds.

        ``snapshot``: ``config`` built for request handling already (by :meth:`reload`,
        off the loop); without it the runtime builds one here.

        The one way a reload reaches the parts. Who takes what: the runtime's snapshot
        (tenants, trusted_proxies, flush_interval, history_days, webhook_url and
        admin_token, read live by the warner and the admin API, timeouts.upstream_response)
        and through it the store (store_timeout, history_days); the flusher (a new
        flush_interval counts from now); the listener (limits, the client-side timeouts);
        the upstream pool (timeouts.upstream_connect); the access log (access_log,
        log_format); the metrics (the tenants' series); this object (timeouts.shutdown
        and shutdown_delay at the stop).
        ``admin_listen`` was moved by :meth:`reload` already; ``spool`` is locked by this
        process from its start, so it takes a restart like ``listen`` and ``store``.
        """
        self.config = config
        # The runtime first: the metrics read their tenants from its new snapshot.
        self.runtime.reconfigure(config, snapshot)
        for part in self._parts():
            part.reconfigure(config)

    def _parts(self) -> list[Reconfigurable]:
        """The parts but the runtime (which may take a snapshot built beforehand)."""
        parts: list[Reconfigurable] = [self.flusher, self.access_log, self.metrics]
        if self._server is not None:
            parts.append(self._server)
        if self.pool is not None:
            parts.append(self.pool)
        return parts

    def _pinned(self, config: Config) -> Config:
        """``config`` with :data:`RESTART_ONLY` as running; a change to them is warned about."""
        running = self.config
        listeners = pin_listeners(config.listeners, running.listeners)
        if listeners is None:
            kept = ", ".join(
                listener.scheme + "://" + listener.address for listener in running.listeners
            )
            log.warning("reload: a change to listen takes a restart; keeping %s", kept)
            listeners = running.listeners
        if config.store != running.store:
            log.warning("reload: a new store takes a restart; keeping %s", running.store)
        if config.workers != running.workers and self.worker is None:
            log.warning("reload: a new workers count takes a restart; keeping %d", running.workers)
        if config.spool != running.spool:
            log.warning("reload: a new spool takes a restart; keeping %s", running.spool)
        return dataclasses.replace(
            config,
            listeners=listeners,
            store=running.store,
            workers=running.workers,
            spool=running.spool,
        )

    # --- start-up: every failure names its key ---------------------------------------

    def _bind(self, key: str, host: str, port: int) -> socket.socket:
        try:
            return _listen(host, port, reuse_port=self._reuse_port)
        except OSError as exc:
            raise StartError(self.config.problem(key, exc.strerror or str(exc))) from None

    async def _open_store(self) -> None:
        try:
            await self.store.open()
        except StoreError as exc:
            raise StartError(self.config.problem("store", str(exc))) from None

    async def _resume(self) -> None:
        """Take back the spool and learn today's totals (the store's own failures are logged)."""
        try:
            await self.flusher.start()
        except OSError as exc:  # the spool could not be read or moved aside
            where = f"{exc.filename}: " if exc.filename else ""
            raise StartError(
                self.config.problem("spool", f"{where}{exc.strerror or exc}")
            ) from None

    async def stop(self) -> None:
        """Drain without failing a request, flush every count, release all.

        After :meth:`begin_stop`: go on accepting for ``timeouts.shutdown_delay`` (a
        load balancer stops sending meanwhile), then take every connection the kernel
        has queued, let requests in flight finish within ``timeouts.shutdown``, and only
        then close the admin listener (so /readyz answers 503 throughout).
        """
        self.begin_stop()
        timeouts = self.config.timeouts
        if self._server is not None:
            if timeouts.shutdown_delay > 0:
                await asyncio.sleep(timeouts.shutdown_delay)  # still serving, on purpose
            await self._server.shutdown(timeouts.shutdown)
            self._server = None
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        self.flusher.stop()
        if self._flushing is not None:
            await self._flushing
            self._flushing = None
        await self.warner.stop()
        await self.forecasts.stop()
        await self.tasks.close()  # nothing of this instance runs on past here
        self.access_log.close()
        if self.pool is not None:
            await self.pool.close()
        await self.store.close()


def _open_store(config: Config) -> Store:
    try:
        return open_store(
            config.store, timeout=config.store_timeout, history_days=config.history_days
        )
    except StoreError as exc:  # the loader refuses what this refuses; a Config made in code
        raise StartError(config.problem("store", str(exc))) from None


def _open_access_log(config: Config) -> AccessLog:
    try:
        return open_access_log(config)
    except OSError as exc:
        raise StartError(
            config.problem("access_log", f"cannot open {config.access_log}: {exc.strerror or exc}")
        ) from None


def _spool_path(config: Config, worker: int | None) -> Path | None:
    """Each worker spools to a file of its own: ``spool.json`` → ``spool.1.json``."""
    if config.spool is None or worker is None:
        return config.spool
    return spool.worker_path(config.spool, worker)


def _spool_orphans(config: Config, worker: int | None) -> list[Path]:
    """Spool files of this ``spool`` setting left by a run with another number of workers."""
    if config.spool is None:
        return []
    return spool.orphans(config.spool, worker, config.workers)


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
