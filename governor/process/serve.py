"""Running a governor as a process: the event loop, signals, reload and drain.

SIGHUP reloads the config file (an invalid one is rejected and the old config
kept); SIGTERM and SIGINT stop gracefully: /readyz fails at once, serving goes on
for ``timeouts.shutdown_delay``, then every connection already queued is accepted
and served, in-flight requests finish within ``timeouts.shutdown``, every count is
flushed, and it returns.
With ``workers > 1`` each worker process runs this under :mod:`governor.process.supervisor`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from typing import Final, Protocol

from governor.config import Config
from governor.process import sdnotify
from governor.process.instance import Governor
from governor.process.lifeline import Lifeline
from governor.tasks import TaskGroup

log: Final = logging.getLogger("governor")

GC_GEN0_THRESHOLD: Final = 10_000  # CPython's default is 700
# Seconds another thread may hold the interpreter lock while the event loop waits for
# it (CPython's default is 0.005). See _tune_interpreter.
SWITCH_INTERVAL: Final = 0.0005


async def serve(
    config: Config, *, worker: int | None = None, lifeline: Lifeline | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, reloading on SIGHUP.

    Under the supervisor (``worker`` is the index, ``lifeline`` the channel to it), the
    worker reports ready once it listens and its handlers are in place (only then does
    the supervisor forward SIGHUP), stops gracefully when the supervisor goes away, and
    ignores repeated signals while it drains (a service manager may signal every process
    of the group as well as the supervisor) instead of dying before its last flush.
    """
    governor = Governor(config, worker=worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def begin_stop() -> None:
        governor.begin_stop()  # /readyz fails from this moment, not from the drain's
        stop.set()

    reload_asked = False

    def reload_when_started() -> None:
        nonlocal reload_asked
        reload_asked = True

    # Before the start: a SIGTERM once the port is bound stops gracefully, and a SIGHUP
    # (its default action ends the process) is kept for when the start is done.
    loop.add_signal_handler(signal.SIGTERM, begin_stop)
    loop.add_signal_handler(signal.SIGINT, begin_stop)
    loop.add_signal_handler(signal.SIGHUP, reload_when_started)
    try:
        await governor.start()
    except BaseException:  # e.g. admin_listen in use: what started stops as on SIGTERM
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await governor.stop()
        raise
    reloads = Reloads(governor, notify=worker is None)
    loop.add_signal_handler(signal.SIGHUP, reloads.ask)
    if reload_asked:
        reloads.ask()
    _tune_interpreter()

    def supervisor_gone() -> None:
        log.warning("the supervisor is gone: stopping")
        begin_stop()

    if lifeline is not None:
        lifeline.watch(loop, supervisor_gone)
        lifeline.ready()
    if worker is None:  # systemd Type=notify; a supervisor speaks for its workers
        sdnotify.ready()
    try:
        await stop.wait()
        delay = governor.config.timeouts.shutdown_delay
        log.info(
            "stopping: /readyz fails; %sdraining queued and in-flight requests, then a final flush",
            f"serving {delay:g} s more (timeouts.shutdown_delay), then " if delay > 0 else "",
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if worker is None:
                loop.remove_signal_handler(sig)
            else:
                loop.add_signal_handler(sig, _already_stopping, sig)
        if lifeline is not None:
            lifeline.close(loop)
        if worker is None:  # systemd Type=notify
            sdnotify.stopping()
        await governor.stop()
        if worker is not None:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
    log.info("stopped")


class Reloadable(Protocol):
    """What :class:`Reloads` drives: a governor (a fake in the unit tests)."""

    @property
    def tasks(self) -> TaskGroup: ...

    async def reload(self) -> bool: ...


class Reloads:
    """SIGHUP → a reload, one at a time: SIGHUPs during one make one more after it.

    A reload builds the new config off the event loop and takes a while at many
    tenants; a SIGHUP meanwhile may follow an edit the running reload read too early,
    so it is not dropped, and any number of them make a single reload more. The reload
    is a task of the governor's (:class:`~governor.tasks.TaskGroup`), cancelled at its stop.
    A process of its own (``notify``) tells systemd (Type=notify) a reload runs, then is done.
    """

    def __init__(self, governor: Reloadable, *, notify: bool) -> None:
        self._governor = governor
        self._notify = notify
        self._running: asyncio.Task[None] | None = None
        self._again = False

    @property
    def running(self) -> asyncio.Task[None] | None:
        """The reload under way (with any SIGHUPs it has gathered), or None."""
        return self._running

    def ask(self) -> None:
        """SIGHUP: reload now, or once more after the reload under way."""
        if self._running is not None:
            self._again = True
            return
        self._running = self._governor.tasks.spawn(self._run(), name="governor-reload")

    async def _run(self) -> None:
        try:
            again = True
            while again:
                self._again = False
                if self._notify:
                    sdnotify.reloading()
                await self._governor.reload()
                if self._notify:
                    sdnotify.ready()
                again = self._again
        finally:
            self._running = None


def _tune_interpreter() -> None:
    """Give the event loop's thread the lock sooner; keep the start-up heap out of collections.

    Threads do background work here (a reload's build, a scrape's render): a thread
    holding the lock keeps it for a whole switch interval while the loop waits, and a
    request needs the loop several times, so at the default 5 ms a 50 ms render made
    requests wait 10 to 12 ms; at 0.5 ms, 2 to 3 ms. With no other thread running, the
    interval costs nothing.

    Everything alive after start-up (modules, config, the app) lives as long as the
    process: freezing it spares every collection from walking it. Requests make many
    short-lived objects that reference counting frees; a higher first-generation
    threshold runs the cycle collector less often over them.
    """
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _already_stopping(sig: signal.Signals) -> None:
    log.info("%s ignored: already stopping", sig.name)


def run(config: Config, *, worker: int | None = None, lifeline: Lifeline | None = None) -> None:
    """Run :func:`serve` on uvloop (plain asyncio where uvloop is missing)."""
    main = serve(config, worker=worker, lifeline=lifeline)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is a fallback
        asyncio.run(main)
        return
    uvloop.run(main)
