"""A usage store in one SQLite file, for a single host.

Invariants:

* The event loop never blocks on SQLite: every call runs in one worker thread
  owned by the store, which also owns the one connection.
* A batch is applied at most once: its ``flush_id`` is recorded in the same
  ``BEGIN IMMEDIATE`` transaction that adds its deltas (to the totals and to the
  history bucket of its ``at``), and a known id skips the adds.
* A flush is one transaction of a bounded number of statements whatever the number of
  keys: the adds are one ``executemany`` each, and totals and grants are read
  ``READ_ROWS`` keys a statement.
* A file made by an earlier version works: tables added since are created on
  open (``CREATE TABLE IF NOT EXISTS``); existing tables are never altered.
* Several processes may share the file: WAL mode, ``synchronous=NORMAL`` and a
  busy timeout let them take turns instead of failing.
* sqlite3 and OS errors become :class:`~governor.errors.StoreError` naming the
  file, in one place (:meth:`SQLiteStore._call`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Final, TypeVar

from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store.base import FLUSH_ID_TTL, TOP_KEEP, TopEntry, TopRow, bucket_of

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS usage (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant, period)
);
CREATE TABLE IF NOT EXISTS flushes (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS flushes_at ON flushes (at);
CREATE TABLE IF NOT EXISTS grants (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant, period)
);
CREATE TABLE IF NOT EXISTS buckets (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    start INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant, period, start)
);
CREATE TABLE IF NOT EXISTS top (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    dimension TEXT NOT NULL,
    item TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (tenant, period, dimension, item)
);
CREATE INDEX IF NOT EXISTS top_bytes ON top (tenant, period, dimension, bytes);
CREATE TABLE IF NOT EXISTS marks (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (tenant, period, event)
);
"""

_ADD: Final = (
    "INSERT INTO usage (tenant, period, bytes) VALUES (?, ?, ?) "
    "ON CONFLICT (tenant, period) DO UPDATE SET bytes = bytes + excluded.bytes"
)
_ADD_BUCKET: Final = (
    "INSERT INTO buckets (tenant, period, start, bytes) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (tenant, period, start) DO UPDATE SET bytes = bytes + excluded.bytes"
)
_ADD_GRANT: Final = (
    "INSERT INTO grants (tenant, period, bytes) VALUES (?, ?, ?) "
    "ON CONFLICT (tenant, period) DO UPDATE SET bytes = bytes + excluded.bytes"
)
_GRANT: Final = "SELECT bytes FROM grants WHERE tenant = ? AND period = ?"
READ_ROWS: Final = 400  # keys read by one statement: two variables each, under SQLite's old 999
_RESET: Final = (
    "INSERT INTO usage (tenant, period, bytes) VALUES (?, ?, 0) "
    "ON CONFLICT (tenant, period) DO UPDATE SET bytes = 0"
)
_TOP_ADD: Final = (
    "INSERT INTO top (tenant, period, dimension, item, bytes, requests) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant, period, dimension, item) DO UPDATE SET "
    "bytes = bytes + excluded.bytes, requests = requests + excluded.requests"
)
_TOP_TRIM: Final = (
    "DELETE FROM top WHERE tenant = ? AND period = ? AND dimension = ? AND item NOT IN "
    "(SELECT item FROM top WHERE tenant = ? AND period = ? AND dimension = ? "
    "ORDER BY bytes DESC LIMIT ?)"
)
_TOP_COUNT: Final = "SELECT COUNT(*) FROM top WHERE tenant = ? AND period = ? AND dimension = ?"
_TOP: Final = (
    "SELECT item, bytes, requests FROM top WHERE tenant = ? AND period = ? AND dimension = ? "
    "ORDER BY bytes DESC, item LIMIT ?"
)
_MARK: Final = "INSERT INTO marks (tenant, period, event) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


class SQLiteStore:
    """The usage store in the SQLite file at ``path`` (its directory is created if missing)."""

    persistent: ClassVar[bool] = True

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def open(self) -> None:
        """Open the file in WAL mode and create the tables if missing."""
        if self._executor is not None:
            raise StoreError(f"sqlite store {self.path}: already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="governor-sqlite")
        try:
            await self._call(self._open)
        except BaseException:
            # Runs after the open job even if this task was cancelled mid-open.
            self._executor.submit(self._close)
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def retune(self, *, timeout: float, history_days: int) -> None:
        """Nothing to take: SQLite waits on its own busy timeout, and old periods are
        pruned by the runtime, which reads ``history_days`` from the live config."""

    async def close(self) -> None:
        """Close the connection and stop the worker thread. Closing twice is harmless."""
        executor = self._executor
        if executor is None:
            return
        try:
            await self._call(self._close)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    async def ping(self) -> None:
        """One trivial statement in the worker thread."""
        await self._call(self._ping)

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        """Apply ``batch`` at most once and return the totals of its keys and ``read``."""
        keys = _union(batch, read)
        return await self._call(self._flush, batch, keys)

    async def totals(self, keys: Iterable[Key]) -> dict[Key, int]:
        """The total of every key in ``keys`` (0 for an unknown key)."""
        return await self._call(self._flush, None, _union(None, keys))

    async def grants(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Extra allowance granted for each key's period (0 when none)."""
        return await self._call(self._grants, _union(None, keys))

    async def grant(self, key: Key, nbytes: int) -> int:
        """Add ``nbytes`` of extra allowance to ``key``'s period; returns the new grant total."""
        return await self._call(self._grant, key, nbytes)

    async def reset(self, key: Key) -> None:
        """Set ``key``'s total back to zero."""
        await self._call(self._reset, key)

    async def buckets(self, tenant: str, period: str) -> dict[int, int]:
        """Bytes per history bucket (bucket start, Unix time) of one tenant's period."""
        return await self._call(self._buckets, tenant, period)

    async def mark_once(self, key: Key, event: str) -> bool:
        """True for the first caller (of any process on the file) to mark ``event`` for ``key``."""
        return await self._call(self._mark_once, key, event)

    async def add_top(self, entries: Sequence[TopEntry]) -> None:
        """Add to top lists; each keeps its TOP_KEEP heaviest items."""
        if entries:
            await self._call(self._add_top, list(entries))

    async def top(self, tenant: str, period: str, dimension: str, n: int) -> list[TopRow]:
        """The ``n`` heaviest items of a top list."""
        return await self._call(self._top, tenant, period, dimension, n)

    async def prune(self, before_period: str) -> int:
        """Delete usage, grants, buckets and marks before ``before_period`` and old flush ids;
        return usage rows deleted."""
        return await self._call(self._prune, before_period)

    # -- the one place that crosses to the worker thread and translates errors --

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise StoreError(f"sqlite store {self.path}: not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    # -- everything below runs in the worker thread --

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.InterfaceError("connection is closed")
        return self._conn

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # explicit transactions only
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _ping(self) -> None:
        self._db().execute("SELECT 1").fetchone()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """A transaction, committed if the block completes and rolled back otherwise.

        A writing one is ``BEGIN IMMEDIATE``: it takes the write lock up front, so two
        writers wait on the busy timeout instead of deadlocking on a read-to-write upgrade.
        """
        db = self._db()
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _flush(self, batch: Batch | None, keys: list[Key]) -> dict[Key, int]:
        with self._transaction(write=batch is not None) as db:
            if batch is not None:
                new = db.execute(
                    "INSERT INTO flushes (id, at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
                    (batch.flush_id, self._clock()),
                ).rowcount
                if new:
                    db.executemany(_ADD, [(t, p, n) for (t, p), n in batch.deltas.items()])
                    if batch.at is not None:
                        start = bucket_of(batch.at)
                        db.executemany(
                            _ADD_BUCKET, [(t, p, start, n) for (t, p), n in batch.deltas.items()]
                        )
            return _read(db, "usage", keys)

    def _grants(self, keys: list[Key]) -> dict[Key, int]:
        with self._transaction(write=False) as db:
            return _read(db, "grants", keys)

    def _grant(self, key: Key, nbytes: int) -> int:
        with self._transaction(write=True) as db:
            db.execute(_ADD_GRANT, (*key, nbytes))
            total: int = db.execute(_GRANT, key).fetchone()[0]
        return total

    def _reset(self, key: Key) -> None:
        self._db().execute(_RESET, key)  # one statement: atomic on its own

    def _buckets(self, tenant: str, period: str) -> dict[int, int]:
        rows = self._db().execute(
            "SELECT start, bytes FROM buckets WHERE tenant = ? AND period = ? ORDER BY start",
            (tenant, period),
        )
        return {start: n for start, n in rows}

    def _mark_once(self, key: Key, event: str) -> bool:
        return self._db().execute(_MARK, (*key, event)).rowcount == 1

    def _add_top(self, entries: list[TopEntry]) -> None:
        with self._transaction(write=True) as db:
            db.executemany(_TOP_ADD, entries)
            for list_key in {(t, p, d) for t, p, d, *_ in entries}:
                (count,) = db.execute(_TOP_COUNT, list_key).fetchone()
                if count > TOP_KEEP:
                    db.execute(_TOP_TRIM, (*list_key, *list_key, TOP_KEEP))

    def _top(self, tenant: str, period: str, dimension: str, n: int) -> list[TopRow]:
        rows = self._db().execute(_TOP, (tenant, period, dimension, n))
        return [(item, nbytes, requests) for item, nbytes, requests in rows]

    def _prune(self, before_period: str) -> int:
        with self._transaction(write=True) as db:
            deleted = db.execute("DELETE FROM usage WHERE period < ?", (before_period,)).rowcount
            for table in ("grants", "buckets", "marks", "top"):
                db.execute(f"DELETE FROM {table} WHERE period < ?", (before_period,))
            db.execute("DELETE FROM flushes WHERE at < ?", (self._clock() - FLUSH_ID_TTL,))
        return deleted


def _read(db: sqlite3.Connection, table: str, keys: list[Key]) -> dict[Key, int]:
    """The bytes of each key in ``table`` (0 when absent), READ_ROWS keys a statement.

    Grouped by period, ``tenant IN (...)``: a lookup on the primary key per tenant.
    """
    by_period: dict[str, list[str]] = {}
    for tenant, period in keys:
        by_period.setdefault(period, []).append(tenant)
    found: dict[Key, int] = {}
    for period, tenants in by_period.items():
        for i in range(0, len(tenants), READ_ROWS):
            part = tenants[i : i + READ_ROWS]
            marks = ", ".join("?" * len(part))
            query = f"SELECT tenant, bytes FROM {table} WHERE period = ? AND tenant IN ({marks})"
            for tenant, n in db.execute(query, [period, *part]):
                found[(tenant, period)] = n
    return {key: found.get(key, 0) for key in keys}


def _union(batch: Batch | None, read: Iterable[Key]) -> list[Key]:
    """The keys of ``batch`` and ``read``, each once, in first-seen order."""
    keys = dict.fromkeys(batch.deltas) if batch is not None else {}
    keys.update(dict.fromkeys(read))
    return list(keys)
