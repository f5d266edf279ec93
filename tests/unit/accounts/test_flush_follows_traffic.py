"""A flush costs what traffic costs: it reads back the keys served here, never every tenant."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable
from pathlib import Path

import pytest

from governor.accounts.flusher import Flusher
from governor.accounts.runtime import Runtime
from governor.core.ledger import Batch, Key
from governor.core.meter import Meter
from governor.errors import StoreError
from governor.store.memory import MemoryStore
from tests.unit.accounts.test_runtime import NOON, config

DAY = "2024-02-21"
NEXT_DAY_NOON = NOON + 86400


class Recording(MemoryStore):
    """A MemoryStore that records the keys each call carries, and can be taken down."""

    def __init__(self) -> None:
        super().__init__()
        self._open = True
        self.down = False
        self.flushed: list[set[Key]] = []  # per flush: the keys sent or read
        self.granted: list[set[Key]] = []  # per flush: the keys whose grants were read
        self.pings = 0

    async def ping(self) -> None:
        self.pings += 1
        if self.down:
            raise StoreError("the store is down")

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        if self.down:
            raise StoreError("the store is down")
        keys = list(read)
        self.flushed.append(set(keys) | set(batch.deltas if batch is not None else ()))
        return await super().flush(batch, keys)

    async def grants(self, keys: Iterable[Key]) -> dict[Key, int]:
        keys = list(keys)
        self.granted.append(set(keys))
        return await super().grants(keys)


class Clock:
    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> float:
        return self.now


def accounts(tmp_path: Path, store: Recording, tenants: int, clock: Clock) -> Flusher:
    """A runtime with ``tenants`` tenants t0, t1, ... and its flusher."""
    base = config(tmp_path)
    (site,) = base.tenants
    many = tuple(
        dataclasses.replace(site, name=f"t{i}", hosts=(f"t{i}.test",)) for i in range(tenants)
    )
    runtime = Runtime(dataclasses.replace(base, tenants=many), store=store, clock=clock)
    return Flusher(runtime)


def serve(flusher: Flusher, name: str, nbytes: int) -> None:
    """What a request does: decide on the tenant's usage, then charge its bytes."""
    rt = flusher.runtime
    tenant = rt.snapshot.tenants[name]
    meter = Meter(
        ledger=rt.ledger,
        tenant=tenant.config,
        periods=tenant.periods,
        clock=rt.clock,
        grants=rt.grants,
    )
    meter.used()
    meter.charge(0, nbytes)


async def test_after_the_first_flush_only_served_keys_are_read(tmp_path: Path) -> None:
    store, clock = Recording(), Clock()
    flusher = accounts(tmp_path, store, 1000, clock)
    await flusher.start()  # the one flush that reads every tenant: a restart resumes the day
    assert len(store.flushed[-1]) == 1000
    serve(flusher, "t1", 10)
    serve(flusher, "t2", 0)  # served, nothing charged yet: still learned
    await flusher.flush()
    assert store.flushed[-1] == {("t1", DAY), ("t2", DAY)}
    assert store.granted[-1] == {("t1", DAY), ("t2", DAY)}
    await flusher.flush()  # no new bytes: the served keys are still kept fresh
    assert store.flushed[-1] == {("t1", DAY), ("t2", DAY)}


async def test_a_start_learns_every_tenant_in_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("governor.accounts.flusher.LEARN_SLICE", 300)
    store, clock = Recording(), Clock()
    for i in range(0, 1000, 7):  # another instance's counts, and a grant
        await store.flush(Batch(flush_id=f"b{i}", deltas={(f"t{i}", DAY): i + 1}), ())
    await store.grant(("t500", DAY), 5)
    store.flushed.clear()
    flusher = accounts(tmp_path, store, 1000, clock)
    await flusher.start()
    reads = store.flushed  # the first flush had nothing to send or read: it pinged
    assert [len(r) for r in reads] == [300, 300, 300, 100]
    assert set().union(*reads) == {(f"t{i}", DAY) for i in range(1000)}
    ledger = flusher.runtime.ledger
    assert all(ledger.known((f"t{i}", DAY)) == i + 1 for i in range(0, 1000, 7))
    assert flusher.runtime.grants[("t500", DAY)] == 5
    flushes = len(store.flushed)
    await flusher.flush()  # learned: an idle flush reads nothing
    assert len(store.flushed) == flushes


async def test_what_a_start_could_not_learn_is_learned_a_slice_per_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("governor.accounts.flusher.LEARN_SLICE", 400)
    store, clock = Recording(), Clock()
    await store.flush(Batch(flush_id="b", deltas={("t999", DAY): 77}), ())
    store.flushed.clear()
    flusher = accounts(tmp_path, store, 1000, clock)
    store.down = True
    await flusher.start()
    assert flusher.runtime.ledger.known(("t999", DAY)) is None
    store.down = False
    sizes: list[int] = []
    for _ in range(3):
        before = len(store.flushed)
        await flusher.flush()
        sizes.extend(len(r) for r in store.flushed[before:])
    assert max(sizes) <= 400
    assert flusher.runtime.ledger.known(("t999", DAY)) == 77
    before = len(store.flushed)
    await flusher.flush()
    assert len(store.flushed) == before  # all learned: nothing more to read


async def test_an_idle_flush_pings_the_store_and_notices_it_down(tmp_path: Path) -> None:
    store, clock = Recording(), Clock()
    flusher = accounts(tmp_path, store, 3, clock)
    await flusher.start()
    flushes, pings = len(store.flushed), store.pings
    await flusher.flush()
    assert (len(store.flushed), store.pings) == (flushes, pings + 1)  # nothing to send or read
    store.down = True
    await flusher.flush()
    assert not flusher.runtime.store_ok


async def test_the_served_set_is_dropped_at_each_tenants_period_change(tmp_path: Path) -> None:
    store, clock = Recording(), Clock()
    flusher = accounts(tmp_path, store, 10, clock)
    await flusher.start()
    serve(flusher, "t3", 5)
    await flusher.flush()
    heard: list[Collection[str]] = []
    flusher.listeners.append(heard.append)
    clock.now = NEXT_DAY_NOON
    flushes = len(store.flushed)
    await flusher.flush()
    assert len(store.flushed) == flushes  # nothing served today: nothing read (a ping)
    assert flusher.runtime.ledger.served() == frozenset()
    assert heard == [{"t3"}]  # its period changed
    assert flusher.runtime.ledger.used(("t3", DAY)) == 0  # the old total is forgotten


async def test_listeners_hear_the_tenants_whose_total_or_grant_changed(tmp_path: Path) -> None:
    store, clock = Recording(), Clock()
    flusher = accounts(tmp_path, store, 10, clock)
    await flusher.start()
    heard: list[Collection[str]] = []
    flusher.listeners.append(heard.append)
    serve(flusher, "t1", 10)
    serve(flusher, "t2", 0)
    serve(flusher, "t3", 0)
    await flusher.flush()
    assert set(heard[-1]) == {"t1"}
    await store.grant(("t2", DAY), 100)  # another instance's operator
    await store.flush(Batch("elsewhere", {("t3", DAY): 7}), [])  # another instance's bytes
    await flusher.flush()
    assert set(heard[-1]) == {"t2", "t3"}
    assert flusher.runtime.grants[("t2", DAY)] == 100
    assert flusher.runtime.ledger.used(("t3", DAY)) == 7
    await flusher.flush()
    assert set(heard[-1]) == set()


async def test_counts_not_reaching_the_store_are_said_once_and_their_recovery_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, clock = Recording(), Clock()
    flusher = accounts(tmp_path, store, 3, clock)
    rt = flusher.runtime
    await flusher.start()
    assert rt.unflushed_since is None
    store.down = True
    serve(flusher, "t0", 42)
    with caplog.at_level(logging.WARNING, logger="governor.accounts"):
        await flusher.flush()
        clock.now += 5
        await flusher.flush()
        assert rt.unflushed_since == NOON
        assert rt.ledger.pending_bytes() == 42
        store.down = False
        await flusher.flush()
    assert rt.unflushed_since is None
    said = [r.getMessage() for r in caplog.records]
    assert sum("not reaching the store since" in m for m in said) == 1, said
    assert sum("reach the store again, after 5.0 s" in m for m in said) == 1, said
    assert await store.totals([("t0", DAY)]) == {("t0", DAY): 42}


async def test_a_tenant_asked_for_by_name_is_learned_at_once(tmp_path: Path) -> None:
    store, clock = Recording(), Clock()
    flusher = accounts(tmp_path, store, 3, clock)
    rt = flusher.runtime
    await flusher.start()
    await store.flush(Batch("elsewhere", {("t1", DAY): 70}), [])
    await store.grant(("t1", DAY), 5)
    assert rt.usage("t1") is not None
    assert rt.usage("t1").used_bytes == 0  # type: ignore[union-attr]  # not served here
    usage = await rt.lookup("t1")
    assert usage is not None
    assert (usage.used_bytes, usage.granted_bytes) == (70, 5)
    await flusher.flush()
    assert ("t1", DAY) in store.flushed[-1]  # served from now on
