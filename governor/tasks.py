"""The owner of background tasks: no task of governor's is fire-and-forget.

A :class:`TaskGroup` keeps a strong reference to each task it starts (the loop keeps
only a weak one, so an unreferenced task can vanish mid-run), logs the failure of any
task nobody awaits, and at :meth:`TaskGroup.close` cancels and awaits whatever is
still running. Unlike :class:`asyncio.TaskGroup`, one failure does not cancel the
others: a failed webhook delivery must not stop the flusher. The model is mitmproxy's
``mitmproxy/utils/asyncio_utils.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

log: Final = logging.getLogger("governor")

T = TypeVar("T")


class TaskGroup:
    """Background tasks with one owner; ``close()`` leaves none running."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this group; its owner may await or cancel it too."""
        if self._closed:
            coro.close()  # never started: no "was never awaited" warning
            raise RuntimeError(f"task group closed: cannot start {name}")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here, so asyncio never logs it a second time
        if exc is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    async def close(self) -> None:
        """Cancel every task still running and wait for each to end."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
