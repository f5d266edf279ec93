"""The Store contract, run against every backend.

To add a backend, add a :class:`Backend` (or, for a backend on a server, a
:class:`ServerBackend`) to ``BACKENDS``; every test below then runs against it.
Tests needing data shared across instances or surviving a reopen are skipped for
stores whose ``persistent`` is False.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store import Store
from governor.store.base import BUCKET_SECONDS, TOP_KEEP, bucket_of
from governor.store.memory import MemoryStore
from governor.store.redis import RedisStore
from governor.store.sqlite import SQLiteStore
from tests.store.history import history

DAY = 86400.0
A: Key = ("acme", "2024-05-17")
B: Key = ("bolt", "2024-05-17")


class Clock:
    """A settable clock for dating flush ids."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Backend:
    """How to make a store of one backend; two stores made with one ``where`` share data."""

    name: str
    make: Callable[[Path, Clock], Store]


@dataclass(frozen=True)
class ServerBackend:
    """A backend on a server: the fixture ``url_fixture`` gives the URL of a server emptied
    for the test, and every store made in the test connects to it."""

    name: str
    url_fixture: str
    connect: Callable[[str, Clock], Store]

    def at(self, url: str) -> Backend:
        return Backend(self.name, lambda where, clock: self.connect(url, clock))


def redis_store(url: str, clock: Clock) -> Store:
    # A generous timeout: these tests check behaviour, not latency, on busy CI machines.
    return RedisStore(url, timeout=5.0, clock=clock)


BACKENDS: list[Backend | ServerBackend] = [
    Backend("sqlite", lambda where, clock: SQLiteStore(where / "usage.db", clock=clock)),
    Backend("memory", lambda where, clock: MemoryStore(clock=clock)),
    ServerBackend("redis", "redis_url", redis_store),
    ServerBackend("sentinel", "sentinel_url", redis_store),
    ServerBackend("cluster", "cluster_url", redis_store),
]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    b: Backend | ServerBackend = request.param
    if isinstance(b, ServerBackend):
        url: str = request.getfixturevalue(b.url_fixture)
        return b.at(url)
    return b


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def where(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def store(backend: Backend, where: Path, clock: Clock) -> AsyncIterator[Store]:
    s = backend.make(where, clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def batch(deltas: dict[Key, int], flush_id: str | None = None, at: float | None = None) -> Batch:
    return Batch(flush_id or uuid.uuid4().hex, deltas, at)


def needs_persistence(store: Store) -> None:
    if not store.persistent:
        pytest.skip(f"{type(store).__name__} is not persistent")


async def test_flush_adds_and_returns_totals(store: Store) -> None:
    assert await store.flush(batch({A: 10, B: 3}), []) == {A: 10, B: 3}
    assert await store.flush(batch({A: 5}), [B]) == {A: 15, B: 3}


async def test_same_flush_id_counts_once(store: Store) -> None:
    b = batch({A: 10, B: 1})
    assert await store.flush(b, []) == {A: 10, B: 1}
    assert await store.flush(b, []) == {A: 10, B: 1}
    assert await store.flush(batch({A: 1}), []) == {A: 11}
    assert await store.flush(b, [A]) == {A: 11, B: 1}


async def test_read_only_keys_return_zero_or_their_total(store: Store) -> None:
    c: Key = ("acme", "2024-05-18")
    await store.flush(batch({A: 7}), [])
    assert await store.flush(None, [A, B, c]) == {A: 7, B: 0, c: 0}
    assert await store.flush(batch({B: 2}), [A, c]) == {A: 7, B: 2, c: 0}
    assert await store.totals([A, B, c]) == {A: 7, B: 2, c: 0}
    assert await store.totals([]) == {}
    assert await store.flush(None, []) == {}


async def test_empty_batch_is_harmless(store: Store) -> None:
    assert await store.flush(batch({}), [A]) == {A: 0}


async def test_many_keys_in_one_flush(store: Store) -> None:
    deltas = {(f"t{i}", "2024-05-17"): i + 1 for i in range(2000)}
    assert await store.flush(batch(deltas), []) == deltas
    assert await store.totals(deltas) == deltas


async def test_a_flush_of_many_slices_counts_each_once_however_often_resent(store: Store) -> None:
    # More keys than several Redis slices (SLICE_KEYS) and SQLite statements (READ_ROWS).
    deltas = {(f"t{i:04d}", "2024-05-17"): i + 1 for i in range(1234)}
    read = [(f"r{i:04d}", "2024-05-17") for i in range(1111)]
    b = batch(deltas)
    want = {**deltas, **dict.fromkeys(read, 0)}
    assert await store.flush(b, read) == want
    assert await store.flush(b, read) == want  # resent: nothing added
    assert await store.totals([*read, *deltas]) == want
    await store.grant(read[-1], 9)
    assert await store.grants([*deltas, *read]) == {**dict.fromkeys(want, 0), read[-1]: 9}


async def test_ping_answers_when_open_and_fails_when_closed(
    backend: Backend, where: Path, clock: Clock
) -> None:
    s = backend.make(where, clock)
    await s.open()
    await s.ping()
    await s.close()
    with pytest.raises(StoreError):
        await s.ping()


async def test_large_counts(store: Store) -> None:
    big = 2**62
    assert await store.flush(batch({A: big}), []) == {A: big}


async def test_concurrent_flushes_on_one_store(store: Store) -> None:
    await asyncio.gather(*(store.flush(batch({A: 1, B: 2}), [A]) for _ in range(100)))
    assert await store.totals([A, B]) == {A: 100, B: 200}


async def test_totals_persist_across_reopen(
    store: Store, backend: Backend, where: Path, clock: Clock
) -> None:
    needs_persistence(store)
    b = batch({A: 10})
    await store.flush(b, [])
    await store.close()
    again = backend.make(where, clock)
    await again.open()
    try:
        assert await again.totals([A]) == {A: 10}
        assert await again.flush(b, []) == {A: 10}  # applied ids persist too
    finally:
        await again.close()


async def test_concurrent_flushes_from_two_instances_are_all_counted(
    store: Store, backend: Backend, where: Path, clock: Clock
) -> None:
    needs_persistence(store)
    other = backend.make(where, clock)
    await other.open()
    try:
        n = 100
        results = await asyncio.gather(
            *(s.flush(batch({A: 1, B: 3}), [A]) for _ in range(n) for s in (store, other))
        )
        assert await store.totals([A, B]) == {A: 2 * n, B: 6 * n}
        assert await other.totals([A, B]) == {A: 2 * n, B: 6 * n}
        # Each reply includes its own batch, so the totals seen only grow towards the end.
        assert sorted(r[A] for r in results)[-1] == 2 * n
        assert all(r[A] >= 1 for r in results)
    finally:
        await other.close()


async def test_history(store: Store) -> None:
    await store.flush(
        batch(
            {
                ("acme", "2024-05-15"): 1,
                ("acme", "2024-05-16"): 2,
                ("acme", "2024-05-17"): 3,
                ("bolt", "2024-05-17"): 99,
            }
        ),
        [],
    )
    assert await history(store, "acme", "2024-05-16") == {"2024-05-16": 2, "2024-05-17": 3}
    assert await history(store, "acme", "2000-01-01") == {
        "2024-05-15": 1,
        "2024-05-16": 2,
        "2024-05-17": 3,
    }
    assert await history(store, "acme", "2024-05-18") == {}
    assert await history(store, "nobody", "2000-01-01") == {}


async def test_prune_deletes_old_periods(store: Store) -> None:
    await store.flush(
        batch(
            {
                ("acme", "2024-05-15"): 1,
                ("bolt", "2024-05-15"): 1,
                ("acme", "2024-05-16"): 2,
                ("acme", "2024-05-17"): 3,
            }
        ),
        [],
    )
    assert await store.prune("2024-05-16") == 2
    assert await history(store, "acme", "2000-01-01") == {"2024-05-16": 2, "2024-05-17": 3}
    assert await store.totals([("bolt", "2024-05-15")]) == {("bolt", "2024-05-15"): 0}
    assert await store.prune("2024-05-16") == 0


async def test_prune_forgets_flush_ids_older_than_a_day(store: Store, clock: Clock) -> None:
    old, recent = batch({A: 1}), batch({B: 1})
    await store.flush(old, [])
    clock.now += DAY / 2
    await store.flush(recent, [])
    clock.now += DAY / 2 + 1  # `old` is now more than a day old, `recent` is not
    assert await store.prune("2000-01-01") == 0
    assert await store.flush(recent, []) == {B: 1}  # still remembered: not re-applied
    assert await store.flush(old, []) == {A: 2}  # forgotten: applied again


async def test_closed_store_raises_store_error(backend: Backend, where: Path, clock: Clock) -> None:
    s = backend.make(where, clock)
    with pytest.raises(StoreError):
        await s.totals([A])
    await s.open()
    await s.flush(batch({A: 1}), [])
    await s.close()
    with pytest.raises(StoreError):
        await s.flush(batch({A: 1}), [])
    with pytest.raises(StoreError):
        await history(s, "acme", "2000-01-01")


async def test_grants_add_up_and_read_back_per_key(store: Store) -> None:
    c: Key = ("acme", "2024-05-18")
    assert await store.grants([A, B]) == {A: 0, B: 0}
    assert await store.grant(A, 100) == 100
    assert await store.grant(A, 50) == 150
    assert await store.grant(B, 7) == 7
    assert await store.grants([A, B, c]) == {A: 150, B: 7, c: 0}
    assert await store.grants([c, A]) == {c: 0, A: 150}
    assert await store.grants([]) == {}
    assert await store.grant(A, 2**62) == 2**62 + 150  # no rounding through a double
    # A grant is an allowance, not usage.
    assert await store.totals([A, B]) == {A: 0, B: 0}
    assert await history(store, "acme", "2000-01-01") == {}


async def test_concurrent_grants_all_count(store: Store) -> None:
    results = await asyncio.gather(*(store.grant(A, 1) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await store.grants([A]) == {A: 50}


async def test_grant_persists_across_reopen(
    store: Store, backend: Backend, where: Path, clock: Clock
) -> None:
    needs_persistence(store)
    await store.grant(A, 1000)
    await store.close()
    again = backend.make(where, clock)
    await again.open()
    try:
        assert await again.grants([A, B]) == {A: 1000, B: 0}
        assert await again.grant(A, 1) == 1001
    finally:
        await again.close()


async def test_reset_zeroes_only_that_key(store: Store) -> None:
    other_day: Key = ("acme", "2024-05-16")
    b = batch({A: 10, B: 5, other_day: 3})
    await store.flush(b, [])
    await store.grant(A, 9)
    await store.reset(A)
    assert await store.totals([A, B, other_day]) == {A: 0, B: 5, other_day: 3}
    assert await store.grants([A]) == {A: 9}  # a reset leaves the grant alone
    # Later flushes add from zero; the batch from before the reset stays applied once.
    assert await store.flush(batch({A: 4}), []) == {A: 4}
    assert await store.flush(b, []) == {A: 4, B: 5, other_day: 3}
    await store.reset(A)
    await store.reset(A)  # resetting twice is harmless
    assert await store.totals([A]) == {A: 0}
    c: Key = ("cast", "2024-05-17")
    await store.reset(c)  # a key never counted
    assert await store.totals([c]) == {c: 0}
    assert await store.flush(batch({c: 2}), []) == {c: 2}


async def test_buckets_add_each_batch_to_the_bucket_of_its_time(store: Store) -> None:
    t0 = 1_700_000_000.0 + 17.25  # not at a bucket boundary
    first, second = bucket_of(t0), bucket_of(t0 + BUCKET_SECONDS)
    assert second == first + BUCKET_SECONDS
    b1 = batch({A: 10, B: 1}, at=t0)
    await store.flush(b1, [])
    await store.flush(batch({A: 2}, at=first + BUCKET_SECONDS - 0.5), [])  # same bucket
    await store.flush(batch({A: 5}, at=t0 + BUCKET_SECONDS), [])
    await store.flush(batch({A: 100}), [])  # no time: totals only
    assert await store.flush(b1, []) == {A: 117, B: 1}  # retried: counted nowhere again
    assert await store.buckets("acme", A[1]) == {first: 12, second: 5}
    assert await store.buckets("bolt", B[1]) == {first: 1}
    assert await store.buckets("acme", "2024-05-18") == {}
    assert await store.buckets("nobody", A[1]) == {}


async def test_buckets_are_kept_per_period(store: Store) -> None:
    t0 = 1_700_000_000.0
    other_day: Key = ("acme", "2024-05-18")
    await store.flush(batch({A: 3, other_day: 4}, at=t0), [])
    assert await store.buckets("acme", A[1]) == {bucket_of(t0): 3}
    assert await store.buckets("acme", other_day[1]) == {bucket_of(t0): 4}


async def test_mark_once(store: Store) -> None:
    assert await store.mark_once(A, "warn:80") is True
    assert await store.mark_once(A, "warn:80") is False
    assert await store.mark_once(A, "warn:90") is True  # another event
    assert await store.mark_once(("acme", "2024-05-18"), "warn:80") is True  # another period
    assert await store.mark_once(B, "warn:80") is True  # another tenant
    assert await store.mark_once(A, "warn:90") is False


async def test_concurrent_marks_let_exactly_one_through(store: Store) -> None:
    results = await asyncio.gather(*(store.mark_once(A, "warn:80") for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]


async def test_mark_once_is_fleet_wide(
    store: Store, backend: Backend, where: Path, clock: Clock
) -> None:
    needs_persistence(store)
    other = backend.make(where, clock)
    await other.open()
    try:
        assert await store.mark_once(A, "warn:80") is True
        assert await other.mark_once(A, "warn:80") is False
        assert await other.mark_once(A, "warn:90") is True
        assert await store.mark_once(A, "warn:90") is False
        results = await asyncio.gather(
            *(s.mark_once(B, "warn:80") for _ in range(10) for s in (store, other))
        )
        assert results.count(True) == 1
    finally:
        await other.close()


async def test_prune_drops_grants_buckets_and_marks_of_old_periods(store: Store) -> None:
    old: Key = ("acme", "2024-05-16")
    only_granted: Key = ("bolt", "2024-05-16")
    only_marked: Key = ("cast", "2024-05-16")
    t0 = 1_700_000_000.0
    await store.flush(batch({old: 1, A: 2}, at=t0), [])
    for key in (old, A, only_granted):
        await store.grant(key, 10)
    for key in (old, A, only_marked):
        assert await store.mark_once(key, "warn:80") is True
    assert await store.prune("2024-05-17") == 1
    assert await store.grants([old, only_granted, A]) == {old: 0, only_granted: 0, A: 10}
    assert await store.buckets("acme", old[1]) == {}
    assert await store.buckets("acme", A[1]) == {bucket_of(t0): 2}
    assert await store.mark_once(old, "warn:80") is True  # forgotten: marks afresh
    assert await store.mark_once(only_marked, "warn:80") is True
    assert await store.mark_once(A, "warn:80") is False  # kept
    assert await history(store, "acme", "2000-01-01") == {A[1]: 2}


async def test_new_methods_on_a_closed_store_raise_store_error(
    backend: Backend, where: Path, clock: Clock
) -> None:
    s = backend.make(where, clock)
    with pytest.raises(StoreError):
        await s.grants([A])
    await s.open()
    await s.close()
    with pytest.raises(StoreError):
        await s.grants([A])
    with pytest.raises(StoreError):
        await s.grant(A, 1)
    with pytest.raises(StoreError):
        await s.reset(A)
    with pytest.raises(StoreError):
        await s.buckets("acme", A[1])
    with pytest.raises(StoreError):
        await s.mark_once(A, "warn:80")


async def test_top_lists_add_up_across_calls_and_keep_the_heaviest(store: Store) -> None:
    day = "2024-05-15"
    await store.flush(batch({("acme", day): 1}), [])  # a period with usage, as in service
    await store.add_top(
        [
            ("acme", day, "path", "/big", 5000, 1),
            ("acme", day, "path", "/small", 10, 2),
            ("acme", day, "agent", "curl/8", 5010, 3),
            ("bolt", day, "path", "/big", 1, 1),
        ]
    )
    await store.add_top([("acme", day, "path", "/big", 1000, 4)])  # another instance, or flush
    assert await store.top("acme", day, "path", 10) == [("/big", 6000, 5), ("/small", 10, 2)]
    assert await store.top("acme", day, "path", 1) == [("/big", 6000, 5)]
    assert await store.top("acme", day, "agent", 10) == [("curl/8", 5010, 3)]
    assert await store.top("acme", day, "client", 10) == []
    many = [
        ("acme", day, "client", f"10.{i // 256}.{i % 256}.0/24", i + 1, 1)
        for i in range(TOP_KEEP + 50)
    ]
    await store.add_top(many)
    kept = await store.top("acme", day, "client", TOP_KEEP + 50)
    assert len(kept) == TOP_KEEP
    assert kept[0] == (
        f"10.{(TOP_KEEP + 49) // 256}.{(TOP_KEEP + 49) % 256}.0/24",
        TOP_KEEP + 50,
        1,
    )
    assert kept[-1][1] == 51  # the 50 lightest went
    await store.flush(batch({("acme", "2024-05-16"): 1}), [])
    await store.prune("2024-05-16")
    assert await store.top("acme", day, "path", 10) == []
