"""The channel between the supervisor and one worker: both ends, and what crosses it.

One module owns the wire format (a JSON greeting one way, one ready byte the other,
end of file for a death either side), so the two processes cannot disagree on it.
See docs/workers.md for why a socketpair and not ``multiprocessing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import Callable
from typing import Final

from governor.config import Config
from governor.errors import GovernorError

READY: Final = b"R"
"""The worker's one byte: it listens and its signal handlers are in place."""


def greeting(config: Config) -> bytes:
    """The supervisor's one line to a new worker: the ``listen`` and ``store`` it must use."""
    hello = {
        "listen": [[listener.host, listener.port] for listener in config.listeners],
        "store": config.store,
    }
    return json.dumps(hello).encode() + b"\n"


class Lifeline:
    """A worker's end of its channel to the supervisor."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._watching = False

    def ready(self) -> None:
        """Tell the supervisor this worker listens and handles signals."""
        with contextlib.suppress(OSError):  # gone already: the watch will notice
            self._sock.send(READY)

    def watch(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None]) -> None:
        """Call ``on_lost`` once when the supervisor's end closes (it died or stopped)."""
        self._sock.setblocking(False)
        self._watching = True

        def readable() -> None:
            try:
                data = self._sock.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                return  # nothing is sent after the greeting
            self._unwatch(loop)
            on_lost()

        loop.add_reader(self._sock.fileno(), readable)

    def _unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._watching:
            self._watching = False
            loop.remove_reader(self._sock.fileno())

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop watching and close the worker's end."""
        self._unwatch(loop)
        self._sock.close()


def join(fd: int, config: Config) -> tuple[Config, Lifeline]:
    """In a worker: read the supervisor's greeting on ``fd``; ``config`` with its pins.

    ``listen`` and ``store`` are the supervisor's, whatever the file says now.
    """
    sock = socket.socket(fileno=fd)
    sock.settimeout(10.0)  # the greeting was written before this process started
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise GovernorError("the supervisor closed the channel before its greeting")
            data += chunk
        try:
            hello = json.loads(data)
            addresses = [(str(host), int(port)) for host, port in hello["listen"]]
            store = str(hello["store"])
        except (ValueError, KeyError, TypeError) as exc:
            raise GovernorError(f"the supervisor's greeting is malformed: {exc}") from exc
        if addresses != [(listener.host, listener.port) for listener in config.listeners]:
            raise GovernorError(
                "listen changed since the supervisor started; restart governor to apply it"
            )
        pinned = dataclasses.replace(config, store=store)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return pinned, Lifeline(sock)
