"""``workers: N``: one supervisor process starts, watches, restarts and stops N workers.

Each worker is the ordinary ``governor serve`` bound with SO_REUSEPORT; the supervisor
serves nothing and owns no listening socket. The channel to each worker is
:mod:`governor.process.lifeline`. Why child processes and not ``multiprocessing``, the
channel, the metrics folder and the restart/stop policy: docs/workers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client.multiprocess import mark_process_dead

from governor.config import Config, load_config
from governor.errors import ConfigError, GovernorError, StartError, StoreError
from governor.observe import MULTIPROC_ENV
from governor.process import sdnotify
from governor.process.lifeline import READY, greeting
from governor.store import open_store

log: Final = logging.getLogger("governor.supervisor")

SHUTDOWN_MARGIN: Final = 5.0  # seconds beyond the drain and the final flush before SIGKILL
BACKOFF_FIRST: Final = 0.1  # seconds before restarting a worker that died
BACKOFF_MAX: Final = 10.0
STABLE_AFTER: Final = 10.0  # a worker that ran this long before dying is not crash-looping


def supervise(config: Config) -> int:
    """Run the supervisor of ``config.workers`` workers; returns the exit status."""
    return asyncio.run(Supervisor(config).run())


@dataclass(eq=False)
class _Worker:
    """One worker slot: its index and the process currently filling it."""

    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    reload_pending: bool = False
    terminated: bool = False


class Supervisor:
    """Starts, watches, restarts, signals and stops the worker processes."""

    def __init__(
        self, config: Config, *, command: Sequence[str] = (sys.executable, "-m", "governor")
    ) -> None:
        self.config = config
        self._command = tuple(command)
        self._workers = [_Worker(i) for i in range(config.workers)]
        self._stopping = asyncio.Event()
        self._failed = False  # a worker failed to start: return 1
        self._unclean = False  # a worker did not stop cleanly: return 1
        self._kill_timer: asyncio.TimerHandle | None = None
        self._notified_ready = False  # systemd Type=notify: READY=1 once every worker is ready
        # The workers' shared prometheus-client multiprocess directory, one per run.
        self.metrics_dir: str | None = None
        self.grace = _grace(config)
        self.address = ", ".join(listener.address for listener in config.listeners)

    async def run(self) -> int:
        """Supervise until SIGTERM/SIGINT (or a failed start); returns the exit status."""
        listeners = self.config.listeners
        for i, listener in enumerate(listeners):
            key = "listen" if len(listeners) == 1 else f"listen[{i}]"
            if listener.port == 0:
                raise GovernorError(
                    f"{key}: port 0 would give each worker a different port; "
                    "give a fixed port with workers > 1"
                )
            try:
                _probe(listener.host, listener.port, listener.address)
            except OSError as exc:
                raise StartError(self.config.problem(key, exc.strerror or str(exc))) from None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        try:
            self.metrics_dir = _metrics_dir(self.config)
            await _prepare_store(self.config)
            log.info(
                "supervising %d workers on %s (pid %d)",
                len(self._workers),
                self.address,
                os.getpid(),
            )
            async with asyncio.TaskGroup() as tg:
                for w in self._workers:
                    tg.create_task(self._keep(w), name=f"governor-worker-{w.index}")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            for w in self._workers:  # only after an error in the supervisor itself
                if w.proc is not None and w.proc.returncode is None:
                    w.proc.kill()
                    await w.proc.wait()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
                self.metrics_dir = None
        if self._failed:
            log.error("stopped: a worker failed to start")
            return 1
        if self._unclean:
            log.error("stopped: not every worker stopped cleanly")
            return 1
        log.info("stopped: every worker drained and flushed")
        return 0

    # --- one slot -------------------------------------------------------------------

    async def _keep(self, w: _Worker) -> None:
        """Keep slot ``w`` filled until the supervisor stops: start, watch, restart."""
        loop = asyncio.get_running_loop()
        first = True
        quick_deaths = 0
        while not self._stopping.is_set():
            started = loop.time()
            try:
                proc, channel = await self._spawn(w)
            except OSError as exc:
                log.error("worker %d could not be started: %s", w.index, exc)
                code: int | None = None
            else:
                log.info(
                    "worker %d %s (pid %d)", w.index, "started" if first else "restarted", proc.pid
                )
                with channel:
                    await self._handshake(w, proc, channel)
                    code = await proc.wait()
                self._reaped(proc.pid)
                if self._stopping.is_set():
                    self._stopped(w, proc.pid, code)
                    return
                if code == 0:
                    log.warning(
                        "worker %d (pid %d) exited with status 0 on its own; not restarting it",
                        w.index,
                        proc.pid,
                    )
                    return
            if first and not w.ready:
                what = _status(code) if code is not None else "could not be started"
                log.error("worker %d failed to start (%s); stopping", w.index, what)
                self._failed = True
                self._stop()
                return
            uptime = loop.time() - started
            quick_deaths = quick_deaths + 1 if not w.ready or uptime < STABLE_AFTER else 0
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(quick_deaths - 1, 0))
            if code is not None:
                log.error(
                    "worker %d (pid %d) died: %s after %.1f s; restarting in %.1f s%s",
                    w.index,
                    proc.pid,
                    _status(code),
                    uptime,
                    delay,
                    f" (crash loop: {quick_deaths} quick deaths in a row)"
                    if quick_deaths > 1
                    else "",
                )
            first = False
            w.ready = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()

    async def _spawn(self, w: _Worker) -> tuple[asyncio.subprocess.Process, socket.socket]:
        """Start the process for slot ``w``, its channel primed with the pinned config."""
        ours, theirs = socket.socketpair()
        try:
            ours.sendall(greeting(self.config))
            fd = theirs.fileno()
            env = dict(os.environ)
            if self.metrics_dir is not None:
                env[MULTIPROC_ENV] = self.metrics_dir
            env.pop(sdnotify.NOTIFY_ENV, None)  # only the supervisor speaks to systemd
            proc = await asyncio.create_subprocess_exec(
                *self._command,
                "serve",
                "--config",
                str(self.config.path),
                "--worker-index",
                str(w.index),
                "--worker-channel",
                str(fd),
                pass_fds=(fd,),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        w.proc = proc
        w.ready = False
        w.reload_pending = False
        w.terminated = False
        if self._stopping.is_set():  # the stop came while it was being started
            self._terminate(w)
        ours.setblocking(False)
        return proc, ours

    async def _handshake(
        self, w: _Worker, proc: asyncio.subprocess.Process, channel: socket.socket
    ) -> None:
        """Wait for the worker's ready byte (or the end of file of its death)."""
        loop = asyncio.get_running_loop()
        try:
            data = await loop.sock_recv(channel, 1)
        except OSError:
            data = b""
        if data != READY or proc.returncode is not None:
            return
        w.ready = True
        log.info("worker %d ready (pid %d)", w.index, proc.pid)
        if not self._notified_ready and all(x.ready for x in self._workers):
            self._notified_ready = True
            sdnotify.ready()  # systemd Type=notify
        if w.reload_pending and not self._stopping.is_set():
            w.reload_pending = False
            self._send(w, signal.SIGHUP)

    def _reaped(self, pid: int) -> None:
        """Forget a dead worker's live gauges (its counters and histograms still count)."""
        if self.metrics_dir is not None:
            mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def _stopped(self, w: _Worker, pid: int, code: int) -> None:
        clean = code == 0 or (code == -signal.SIGTERM and not w.ready)  # stopped while booting
        if clean:
            log.info("worker %d (pid %d) stopped", w.index, pid)
        else:
            self._unclean = True
            log.error("worker %d (pid %d) stopped uncleanly: %s", w.index, pid, _status(code))

    # --- signals --------------------------------------------------------------------

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.info("%s: already stopping", sig.name)
            return
        log.info("%s: stopping every worker (they drain, then flush)", sig.name)
        self._stop()

    def _stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        sdnotify.stopping()  # systemd Type=notify
        for w in self._workers:
            self._terminate(w)
        loop = asyncio.get_running_loop()
        self._kill_timer = loop.call_later(self.grace, self._kill_stragglers)

    def _kill_stragglers(self) -> None:
        for w in self._workers:
            if w.proc is not None and w.proc.returncode is None:
                log.error(
                    "worker %d (pid %d) did not stop within %.1f s; killing it",
                    w.index,
                    w.proc.pid,
                    self.grace,
                )
                self._unclean = True
                self._send(w, signal.SIGKILL)

    def _on_reload(self) -> None:
        if self._stopping.is_set():
            return  # a worker draining must not be disturbed
        log.info("SIGHUP: reloading every worker")
        self._retune()
        if self._notified_ready:  # systemd Type=notify; the workers reload on their own
            sdnotify.reloading()
        for w in self._workers:
            if w.proc is None or w.proc.returncode is not None:
                continue  # a worker started later reads the file as it is then
            if w.ready:
                self._send(w, signal.SIGHUP)
            else:
                w.reload_pending = True
        if self._notified_ready:
            sdnotify.ready()

    def _retune(self) -> None:
        """Take what the supervisor itself holds from the reloaded file: the stop's grace.

        The workers reload the file on their own (and log its problems); a worker that
        was given a longer ``timeouts.shutdown`` must not be killed at the old one.
        """
        try:
            config = load_config(self.config.path)
        except ConfigError:
            return  # the workers reject it too, and say why
        if config.workers != self.config.workers:
            kept = len(self._workers)
            log.warning("reload: a new workers count takes a restart; keeping %d", kept)
        self.grace = _grace(config)

    def _terminate(self, w: _Worker) -> None:
        """SIGTERM, once per process: a second one could land after its handlers are gone."""
        if w.proc is not None and w.proc.returncode is None and not w.terminated:
            w.terminated = True
            self._send(w, signal.SIGTERM)

    @staticmethod
    def _send(w: _Worker, sig: signal.Signals) -> None:
        if w.proc is not None and w.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(sig)


def _grace(config: Config) -> float:
    """How long the workers get to drain and flush before they are killed."""
    timeouts = config.timeouts
    return timeouts.shutdown_delay + timeouts.shutdown + config.store_timeout + SHUTDOWN_MARGIN


def _metrics_dir(config: Config) -> str:
    """A fresh, empty folder for the workers' metrics (files left by a run would be summed)."""
    try:
        return tempfile.mkdtemp(prefix="governor-metrics-")
    except OSError as exc:
        raise StartError(
            config.problem(
                "workers",
                f"the workers' metrics need a writable temporary folder ($TMPDIR): {exc}",
            )
        ) from None


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _probe(host: str, port: int, address: str) -> None:
    """Fail now, like a single process would, if something already listens on the port.

    Workers bind with SO_REUSEPORT, which would let them join the sockets of another
    supervisor of the same user silently; a plain bind (never listening, closed at
    once) refuses while anything listens there.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from exc


async def _prepare_store(config: Config) -> None:
    """Open the store once and close it, before any worker starts.

    An unreachable store fails the start here, with one clear message, instead of in N
    workers at once; and a new SQLite file is created (WAL mode, tables) by one process,
    not by N racing to switch its journal mode, which SQLite may refuse with "database
    is locked" without waiting.
    """
    try:
        store = open_store(config.store, timeout=config.store_timeout)
        await store.open()
        await store.close()
    except StoreError as exc:
        raise StartError(config.problem("store", str(exc))) from None
