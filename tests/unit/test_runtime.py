"""The runtime's accounts against an in-tree store fake: outages, the spool, restarts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import pytest

from governor.config import Config, TenantConfig, UpstreamURL
from governor.errors import StoreError
from governor.ledger import Batch, Key
from governor.runtime import Runtime
from governor.store.memory import MemoryStore

NOON = 1708484400.0  # 2024-02-21 12:00 in Asia/Seoul
KEY = ("site", "2024-02-21")


class Outage(MemoryStore):
    """A MemoryStore that can be taken down, and can lose the answer of a flush it applied."""

    persistent: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self._open = True
        self.down = False
        self.lose_answer = False

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        if self.down:
            raise StoreError("the store is down")
        totals = await super().flush(batch, read)
        if self.lose_answer:
            self.lose_answer = False
            raise StoreError("applied, then the answer was lost")
        return totals


def config(tmp_path: Path) -> Config:
    import datetime as dt
    from zoneinfo import ZoneInfo

    tenant = TenantConfig(
        name="site",
        hosts=("site.test",),
        upstream=UpstreamURL(
            url="http://127.0.0.1:9", scheme="http", host="127.0.0.1", port=9, base_path=""
        ),
        daily_cap=10**9,
        timezone=ZoneInfo("Asia/Seoul"),
        reset_at=dt.time(0, 0),
    )
    return Config(
        path=tmp_path / "governor.yaml",
        listen_host="127.0.0.1",
        listen_port=8080,
        store="memory:",
        tenants=(tenant,),
    )


async def run_and_stop(runtime: Runtime) -> None:
    """Start the flusher, stop it at once: the final flush, then the spool if needed."""
    runtime.stop()
    await runtime.run_flusher()


async def test_an_outage_across_a_restart_loses_nothing(tmp_path: Path) -> None:
    store = Outage()
    spool = tmp_path / "spool.json"
    first = Runtime(config(tmp_path), store=store, clock=lambda: NOON, spool_path=spool)
    await first.start()
    first.ledger.add(KEY, 1000)
    store.down = True
    await first.flush()
    assert not first.store_ok
    first.ledger.add(KEY, 234)
    await run_and_stop(first)
    assert spool.exists()
    store.down = False
    assert await store.totals([KEY]) == {KEY: 0}
    second = Runtime(config(tmp_path), store=store, clock=lambda: NOON, spool_path=spool)
    await second.start()
    assert await store.totals([KEY]) == {KEY: 1234}
    assert second.ledger.used(KEY) == 1234
    assert not spool.exists()


async def test_a_spooled_batch_that_did_land_is_not_counted_twice(tmp_path: Path) -> None:
    store = Outage()
    spool = tmp_path / "spool.json"
    first = Runtime(config(tmp_path), store=store, clock=lambda: NOON, spool_path=spool)
    await first.start()
    first.ledger.add(KEY, 500)
    store.lose_answer = True
    await first.flush()  # applied, but governor cannot know
    store.down = True
    first.ledger.add(KEY, 11)
    await run_and_stop(first)
    store.down = False
    second = Runtime(config(tmp_path), store=store, clock=lambda: NOON, spool_path=spool)
    await second.start()
    assert await store.totals([KEY]) == {KEY: 511}


async def test_the_spool_stays_until_every_spooled_count_is_in_the_store(tmp_path: Path) -> None:
    store = Outage()
    spool = tmp_path / "spool.json"
    first = Runtime(config(tmp_path), store=store, clock=lambda: NOON, spool_path=spool)
    await first.start()
    first.ledger.add(KEY, 7)
    store.down = True
    await run_and_stop(first)
    second = Runtime(config(tmp_path), store=store, clock=lambda: NOON, spool_path=spool)
    await second.start()  # the store is still down: the counts wait in memory
    assert second.ledger.used(KEY) == 7
    assert spool.exists()
    await run_and_stop(second)  # still down at the next stop: spooled again
    store.down = False
    third = Runtime(config(tmp_path), store=store, clock=lambda: NOON, spool_path=spool)
    await third.start()
    assert await store.totals([KEY]) == {KEY: 7}
    assert not spool.exists()


async def test_a_corrupt_spool_is_moved_aside_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.json"
    spool.write_text("{not json")
    runtime = Runtime(config(tmp_path), store=Outage(), clock=lambda: NOON, spool_path=spool)
    await runtime.start()
    assert (tmp_path / "spool.json.corrupt").read_text() == "{not json"
    assert not spool.exists()
    assert "could not be read" in caplog.text


class Broken(Outage):
    """A store with a bug: its first flush raises something that is not a StoreError."""

    def __init__(self) -> None:
        super().__init__()
        self.bugs = 1

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        if self.bugs:
            self.bugs -= 1
            raise RuntimeError("a bug in a store")
        return await super().flush(batch, read)


async def test_an_unexpected_flush_error_does_not_stop_the_flusher(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Broken()
    runtime = Runtime(config(tmp_path), store=store, clock=lambda: NOON)
    runtime.ledger.add(KEY, 42)
    import asyncio

    runtime.nudge()  # the flusher's first flush fails at once; its last one lands
    flusher = asyncio.get_running_loop().create_task(runtime.run_flusher())
    async with asyncio.timeout(5):
        while store.bugs:  # noqa: ASYNC110 - the flusher's first attempt
            await asyncio.sleep(0.01)
    runtime.stop()
    await flusher
    assert "flush failed unexpectedly" in caplog.text
    assert await store.totals([KEY]) == {KEY: 42}


async def test_a_flusher_stopped_before_it_ran_still_flushes(tmp_path: Path) -> None:
    store = Outage()
    runtime = Runtime(config(tmp_path), store=store, clock=lambda: NOON)
    runtime.ledger.add(KEY, 9)
    runtime.stop()
    await runtime.run_flusher()
    assert await store.totals([KEY]) == {KEY: 9}
