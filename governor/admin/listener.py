"""The admin listener: the admin application on ``admin_listen``, which a reload may move.

Invariant: one application across moves, and one owned task for each switch of socket,
so a reload never leaves the admin API on two addresses or none by accident.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Final

from aiohttp import web

from governor.tasks import TaskGroup

log: Final = logging.getLogger("governor")


class AdminListener:
    """The admin application on ``admin_listen``, which a reload may move, add or remove.

    Invariants: the application is one and the same across moves (its token is read
    per request from the live config); :meth:`move` binds the new address at once, so
    a reload whose address cannot be bound is refused before anything changed; the
    switch itself (serve on the new socket, then close the old listener, whose open
    connections finish) runs in one owned task, moves in the order they came, and
    :meth:`settled` and :meth:`stop` wait for it.
    """

    def __init__(
        self,
        app: web.Application,
        *,
        bind: Callable[[str, int], socket.socket],
        tasks: TaskGroup,
    ) -> None:
        self._tasks = tasks  # where each move's task runs; this object awaits it
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._bind = bind  # a listening socket on (host, port), or an error naming the key
        self.address: tuple[str, int] | None = None
        self._sock: socket.socket | None = None  # the newest: served now or once the move ran
        self._site: web.SockSite | None = None
        self._moving: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """The port of the admin listener (the new one from a move on), or None."""
        return None if self._sock is None else int(self._sock.getsockname()[1])

    async def start(self, address: tuple[str, int] | None) -> None:
        """Set the application up and, with an address, listen there."""
        await self._runner.setup()
        if address is not None:
            self._sock, self.address = self._bind(*address), address
            await self._switch(None, self._sock)

    def move(self, address: tuple[str, int] | None) -> None:
        """Listen on ``address`` (None: nowhere) instead; binds now, switches soon.

        Raises what the bind raises, with nothing changed.
        """
        if address == self.address:
            return
        sock = None if address is None else self._bind(*address)
        self.address, self._sock = address, sock
        self._moving = self._tasks.spawn(
            self._switch(self._moving, sock), name="governor-admin-move"
        )

    async def settled(self) -> None:
        """Return once every move asked for so far has taken effect."""
        if self._moving is not None:
            await self._moving

    async def stop(self) -> None:
        """Stop listening and close the admin connections."""
        await self.settled()
        await self._runner.cleanup()

    async def _switch(self, before: asyncio.Task[None] | None, sock: socket.socket | None) -> None:
        if before is not None:
            await before
        old, self._site = self._site, None
        try:
            if sock is not None:
                site = web.SockSite(self._runner, sock)
                await site.start()
                self._site = site
                host, port = sock.getsockname()[:2]
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                log.info("admin listening on http://%s", where)
            if old is not None:
                await old.stop()
        except Exception:  # a bug here must not end the process; the log says what
            log.exception("moving the admin listener failed")
