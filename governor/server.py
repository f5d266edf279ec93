"""Running a governor as a process: the event loop, signals, reload and drain.

SIGHUP reloads the config file (an invalid one is rejected and the old config
kept); SIGTERM and SIGINT stop gracefully: stop accepting, let in-flight
requests finish within ``timeouts.shutdown``, flush every count, return.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from governor.app import Governor
from governor.config import Config

log = logging.getLogger("governor")


async def serve(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, reloading on SIGHUP."""
    governor = Governor(config)
    await governor.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, governor.reload)
    try:
        await stop.wait()
        log.info("stopping: draining in-flight requests, then a final flush")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await governor.stop()
    log.info("stopped")


def run(config: Config) -> None:
    """Run :func:`serve` on uvloop (plain asyncio where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is a fallback
        asyncio.run(serve(config))
        return
    uvloop.run(serve(config))
