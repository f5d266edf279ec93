"""The flusher's last flush at a stop: it takes every count added before the stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from governor.accounts.flusher import Flusher
from governor.accounts.runtime import Runtime
from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store.memory import MemoryStore
from tests.unit.accounts.test_runtime import KEY, NOON, accounts, config


class Gated(MemoryStore):
    """A store whose flushes wait for ``gate``, announcing each one on ``entered``."""

    def __init__(self, *, down: bool = False) -> None:
        super().__init__()
        self._open = True
        self.down = down
        self.flushes = 0
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        self.flushes += 1
        self.entered.set()
        await self.gate.wait()
        if self.down:
            raise StoreError("the store is down")
        return await super().flush(batch, read)


async def test_a_stop_during_a_flush_still_flushes_what_came_after_its_take(
    tmp_path: Path,
) -> None:
    # The graceful stop: the drain ends (the last requests charged their bytes) while a
    # periodic flush, which took its batch before those charges, waits on the store.
    store = Gated()
    flusher = accounts(tmp_path, store)
    runtime = flusher.runtime
    runtime.ledger.add(KEY, 100)
    flusher.nudge()
    task = asyncio.get_running_loop().create_task(flusher.run())
    async with asyncio.timeout(5):
        await store.entered.wait()  # the periodic flush took the 100 and waits
    runtime.ledger.add(KEY, 20155)  # a response charged during that flush
    flusher.stop()
    store.gate.set()
    async with asyncio.timeout(5):
        await task
    assert await store.totals([KEY]) == {KEY: 20255}
    assert runtime.ledger.pending_bytes() == 0


async def test_a_stop_during_a_failing_flush_spools_at_once_what_came_after_its_take(
    tmp_path: Path,
) -> None:
    # The store just failed: another attempt would only add a store_timeout to the stop.
    store = Gated(down=True)
    spool = tmp_path / "spool.json"
    flusher = accounts(tmp_path, store, spool)
    runtime = flusher.runtime
    runtime.ledger.add(KEY, 100)
    flusher.nudge()
    task = asyncio.get_running_loop().create_task(flusher.run())
    async with asyncio.timeout(5):
        await store.entered.wait()
    runtime.ledger.add(KEY, 20155)
    flusher.stop()
    store.gate.set()
    async with asyncio.timeout(5):
        await task
    assert store.flushes == 1
    later = MemoryStore()
    await later.open()
    restarted = Flusher(
        Runtime(config(tmp_path), store=later, clock=lambda: NOON), spool_path=spool
    )
    await restarted.start()
    assert await later.totals([KEY]) == {KEY: 20255}
