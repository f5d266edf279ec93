"""SQLite-specific behaviour beyond the contract, and the open_store factory."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from governor.core.ledger import Batch
from governor.errors import StoreError
from governor.store import open_store
from governor.store.base import bucket_of
from governor.store.sqlite import SQLiteStore


async def test_creates_parent_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "usage.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    assert path.exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"usage", "flushes", "grants", "buckets", "marks"} <= tables
    finally:
        conn.close()


_PREVIOUS_SCHEMA = """
CREATE TABLE usage (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant, period)
);
CREATE TABLE flushes (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE INDEX flushes_at ON flushes (at);
INSERT INTO usage VALUES ('acme', '2024-05-16', 5), ('acme', '2024-05-17', 7);
INSERT INTO flushes VALUES ('old-batch', 1700000000.0);
"""


async def test_a_file_made_by_the_previous_version_gains_the_new_tables(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_PREVIOUS_SCHEMA)
    finally:
        conn.close()
    key = ("acme", "2024-05-17")
    store = SQLiteStore(path, clock=lambda: 1_700_000_100.0)
    await store.open()
    try:
        assert await store.totals([key]) == {key: 7}
        assert await store.flush(Batch("old-batch", {key: 100}), []) == {key: 7}  # known id
        assert await store.flush(Batch("new-batch", {key: 1}, at=1_700_000_100.0), []) == {key: 8}
        assert await store.buckets("acme", "2024-05-17") == {bucket_of(1_700_000_100.0): 1}
        assert await store.grant(key, 10) == 10
        assert await store.mark_once(key, "warn:80") is True
        await store.reset(key)
        assert await store.totals([key]) == {key: 0}
        assert await store.prune("2024-05-17") == 1
    finally:
        await store.close()


async def test_open_failure_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "usage.db").mkdir()  # a directory where the file should be
    store = SQLiteStore(tmp_path / "usage.db")
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "usage.db"))):
        await store.open()
    await store.close()


async def test_parent_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = SQLiteStore(tmp_path / "file" / "usage.db")
    with pytest.raises(StoreError, match=r"usage\.db"):
        await store.open()


async def test_locked_database_fails_after_busy_timeout_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "usage.db"
    store = SQLiteStore(path, busy_timeout=0.3)
    await store.open()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)  # a heartbeat: ticks prove the loop ran

    tick = asyncio.get_running_loop().create_task(ticker())
    try:
        with pytest.raises(StoreError, match=rf"{re.escape(str(path))}.*locked"):
            await store.flush(Batch(uuid.uuid4().hex, {("acme", "2024-05-17"): 1}), [])
        assert ticks >= 10  # the loop kept running while SQLite waited
    finally:
        tick.cancel()
        holder.rollback()
        holder.close()
    # The store recovers once the lock is released.
    assert await store.flush(Batch("x" * 32, {("acme", "2024-05-17"): 1}), []) == {
        ("acme", "2024-05-17"): 1
    }
    await store.close()


async def test_runs_in_one_dedicated_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "usage.db")
    await store.open()
    seen: set[str] = set()

    def who() -> None:
        seen.add(threading.current_thread().name)

    try:
        await asyncio.gather(*(store._call(who) for _ in range(20)))
    finally:
        await store.close()
    assert len(seen) == 1
    assert seen != {threading.current_thread().name}


async def test_open_twice_is_an_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "usage.db")
    await store.open()
    try:
        with pytest.raises(StoreError, match="already open"):
            await store.open()
    finally:
        await store.close()
    await store.close()  # closing twice is harmless


def test_open_store_sqlite_absolute_path() -> None:
    store = open_store("sqlite:////var/lib/governor/usage.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == Path("/var/lib/governor/usage.db")
    assert store.persistent


@pytest.mark.parametrize("url", ["sqlite:///relative.db", "sqlite:///", "sqlite:////"])
def test_open_store_rejects_non_absolute_sqlite_paths(url: str) -> None:
    with pytest.raises(StoreError, match="absolute"):
        open_store(url)


@pytest.mark.parametrize("url", ["memcached://localhost:11211", "postgres://x", "nonsense"])
def test_open_store_other_schemes_not_implemented(url: str) -> None:
    with pytest.raises(StoreError, match="not implemented yet"):
        open_store(url)
