"""The forecasts' history task stops even when its store swallows a cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from governor.accounts.runtime import Runtime
from governor.config import load_config
from governor.observe.forecast import Forecasts
from governor.store.memory import MemoryStore
from governor.tasks import TaskGroup
from tests.support import write_config


class SwallowingStore(MemoryStore):
    """A store whose history read takes a while and eats a cancellation, as some clients do."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = asyncio.Event()

    async def buckets(self, tenant: str, period: str) -> dict[int, int]:
        self.reading.set()
        with contextlib.suppress(asyncio.CancelledError):  # swallowed, as if the read ended
            await asyncio.sleep(0.2)
        return {}


async def test_stop_ends_the_history_task_whatever_the_store_does(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, upstream="http://127.0.0.1:1"))
    store = SwallowingStore()
    await store.open()
    runtime = Runtime(config, store=store, clock=lambda: 1708484400.0)
    forecasts = Forecasts(runtime)
    tasks = TaskGroup()
    forecasts.start(tasks)
    forecasts.flushed(["site"])  # queues the tenant's history
    async with asyncio.timeout(5):
        await store.reading.wait()
        await forecasts.stop()  # before the fix: waited on its queue for good
    assert forecasts._task is None
