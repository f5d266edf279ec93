"""The accounts (runtime, flusher) against an in-tree store fake: outages, the spool, restarts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import pytest

from governor.accounts.flusher import Flusher
from governor.accounts.runtime import Runtime
from governor.config import Config, TenantConfig, UpstreamURL
from governor.config.model import ListenConfig
from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store.memory import MemoryStore
from tests.support import eventually

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
        listeners=(ListenConfig(host="127.0.0.1", port=8080),),
        store="memory:",
        tenants=(tenant,),
    )


def accounts(tmp_path: Path, store: MemoryStore, spool: Path | None = None) -> Flusher:
    """A runtime at NOON and its flusher (spooling to ``spool``)."""
    return Flusher(Runtime(config(tmp_path), store=store, clock=lambda: NOON), spool_path=spool)


async def run_and_stop(flusher: Flusher) -> None:
    """Start the flusher, stop it at once: the final flush, then the spool if needed."""
    flusher.stop()
    await flusher.run()


async def test_an_outage_across_a_restart_loses_nothing(tmp_path: Path) -> None:
    store = Outage()
    spool = tmp_path / "spool.json"
    first = accounts(tmp_path, store, spool)
    await first.start()
    first.runtime.ledger.add(KEY, 1000)
    store.down = True
    await first.flush()
    assert not first.runtime.store_ok
    first.runtime.ledger.add(KEY, 234)
    await run_and_stop(first)
    assert spool.exists()
    store.down = False
    assert await store.totals([KEY]) == {KEY: 0}
    second = accounts(tmp_path, store, spool)
    await second.start()
    assert await store.totals([KEY]) == {KEY: 1234}
    assert second.runtime.ledger.used(KEY) == 1234
    assert not spool.exists()


async def test_a_spooled_batch_that_did_land_is_not_counted_twice(tmp_path: Path) -> None:
    store = Outage()
    spool = tmp_path / "spool.json"
    first = accounts(tmp_path, store, spool)
    await first.start()
    first.runtime.ledger.add(KEY, 500)
    store.lose_answer = True
    await first.flush()  # applied, but governor cannot know
    store.down = True
    first.runtime.ledger.add(KEY, 11)
    await run_and_stop(first)
    store.down = False
    second = accounts(tmp_path, store, spool)
    await second.start()
    assert await store.totals([KEY]) == {KEY: 511}


async def test_the_spool_stays_until_every_spooled_count_is_in_the_store(tmp_path: Path) -> None:
    store = Outage()
    spool = tmp_path / "spool.json"
    first = accounts(tmp_path, store, spool)
    await first.start()
    first.runtime.ledger.add(KEY, 7)
    store.down = True
    await run_and_stop(first)
    second = accounts(tmp_path, store, spool)
    await second.start()  # the store is still down: the counts wait in memory
    assert second.runtime.ledger.used(KEY) == 7
    assert spool.exists()
    await run_and_stop(second)  # still down at the next stop: spooled again
    store.down = False
    third = accounts(tmp_path, store, spool)
    await third.start()
    assert await store.totals([KEY]) == {KEY: 7}
    assert not spool.exists()


async def test_a_corrupt_spool_is_moved_aside_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.json"
    spool.write_text("{not json")
    flusher = accounts(tmp_path, Outage(), spool)
    await flusher.start()
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
    flusher = accounts(tmp_path, store)
    flusher.runtime.ledger.add(KEY, 42)
    import asyncio

    flusher.nudge()  # the flusher's first flush fails at once; its last one lands
    task = asyncio.get_running_loop().create_task(flusher.run())
    await eventually(lambda: not store.bugs, what="the flusher's first attempt")
    flusher.stop()
    await task
    assert "flush failed unexpectedly" in caplog.text
    assert await store.totals([KEY]) == {KEY: 42}


async def test_a_flusher_stopped_before_it_ran_still_flushes(tmp_path: Path) -> None:
    store = Outage()
    flusher = accounts(tmp_path, store)
    flusher.runtime.ledger.add(KEY, 9)
    flusher.stop()
    await flusher.run()
    assert await store.totals([KEY]) == {KEY: 9}


async def test_a_spool_file_written_behind_its_back_is_merged_not_replaced(
    tmp_path: Path,
) -> None:
    """What another writer left in the file (an older governor that took no lock, say)."""
    import json

    store = Outage()
    spool = tmp_path / "spool.json"
    first = accounts(tmp_path, store, spool)
    await first.start()
    # Version 1, as governor wrote it before: one in-flight batch and pending counts.
    other = {
        "version": 1,
        "inflight": {"flush_id": "f" * 32, "deltas": [["site", "2024-02-21", 40]]},
        "pending": [["site", "2024-02-21", 2]],
    }
    spool.write_text(json.dumps(other))
    first.runtime.ledger.add(KEY, 1000)
    store.down = True
    await run_and_stop(first)
    store.down = False
    second = accounts(tmp_path, store, spool)
    await second.start()
    assert await store.totals([KEY]) == {KEY: 1042}
    assert not spool.exists()


async def test_a_spool_held_by_another_process_is_refused_naming_the_file_and_the_key(
    tmp_path: Path,
) -> None:
    import asyncio
    import sys

    from governor.accounts.spool import SpoolBusy

    spool = tmp_path / "spool.json"
    holder = await asyncio.create_subprocess_exec(  # another process, as a running governor
        sys.executable,
        "-c",
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid());"
        "print('held', flush=True); sys.stdin.read()",
        str(tmp_path / "spool.json.lock"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"held\n"
        flusher = accounts(tmp_path, Outage(), spool)
        with pytest.raises(SpoolBusy) as caught:
            await flusher.start()
        message = str(caught.value)
        assert str(spool) in message
        assert "`spool`" in message
        assert f"pid {holder.pid}" in message
        assert str(tmp_path / "governor.yaml") in message
    finally:
        await holder.communicate(b"")
    flusher = accounts(tmp_path, Outage(), spool)
    await flusher.start()  # let go: the next one may have it
    await run_and_stop(flusher)


async def test_two_runtimes_of_one_process_share_a_spool_and_lose_nothing(
    tmp_path: Path,
) -> None:
    store = Outage()
    spool = tmp_path / "spool.json"
    one = accounts(tmp_path, store, spool)
    two = accounts(tmp_path, store, spool)
    await one.start()
    await two.start()
    one.runtime.ledger.add(KEY, 100)
    two.runtime.ledger.add(KEY, 20)
    store.down = True
    await run_and_stop(one)
    await run_and_stop(two)  # merged with the first one's, not over it
    store.down = False
    again = accounts(tmp_path, store, spool)
    await again.start()
    assert await store.totals([KEY]) == {KEY: 120}
    assert not spool.exists()


async def test_a_batch_spooled_twice_is_applied_once(tmp_path: Path) -> None:
    """A crash after a spooled batch landed but before the file was updated: no double count."""
    store = Outage()
    spool = tmp_path / "spool.json"
    first = accounts(tmp_path, store, spool)
    await first.start()
    first.runtime.ledger.add(KEY, 300)
    store.down = True
    await run_and_stop(first)
    saved = spool.read_text()
    store.down = False
    second = accounts(tmp_path, store, spool)
    await second.start()
    await run_and_stop(second)
    assert not spool.exists()
    spool.write_text(saved)  # as if the file had not been updated after the replay
    third = accounts(tmp_path, store, spool)
    await third.start()
    assert await store.totals([KEY]) == {KEY: 300}
    assert not spool.exists()


async def test_counts_lost_at_a_stop_without_a_spool_are_logged_with_their_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Outage()
    flusher = accounts(tmp_path, store)  # no spool configured
    await flusher.start()
    store.down = True
    flusher.runtime.ledger.add(KEY, 4321)
    await run_and_stop(flusher)
    lost = [r.getMessage() for r in caplog.records if "no spool is configured" in r.getMessage()]
    assert lost == [
        "the store did not take the last 4321 bytes of counts and no spool is configured "
        "(the spool key): they are lost"
    ]
