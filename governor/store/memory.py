"""An in-process usage store for unit tests and single-process experiments.

It implements the :class:`~governor.store.base.Store` contract with dicts and
keeps its invariant: a batch is applied at most once per ``flush_id``. Nothing
survives the object (``persistent`` is False) and nothing is shared between
instances.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store.base import FLUSH_ID_TTL, TOP_KEEP, TopEntry, TopRow, bucket_of

__all__ = ["MemoryStore"]


class MemoryStore:
    """A usage store held in dicts. ``clock`` dates applied flush ids for :meth:`prune`."""

    persistent: ClassVar[bool] = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._usage: dict[Key, int] = {}
        self._grants: dict[Key, int] = {}
        self._buckets: dict[tuple[str, str, int], int] = {}
        self._marks: set[tuple[str, str, str]] = set()
        self._flushes: dict[str, float] = {}
        self._top: dict[tuple[str, str, str], dict[str, list[int]]] = {}
        self._open = False

    async def open(self) -> None:
        """Make the store usable."""
        self._open = True

    def retune(self, *, timeout: float, history_days: int) -> None:
        """Nothing to take: nothing here waits on a network or expires by itself."""

    async def close(self) -> None:
        """Make the store unusable; its data stay in the object."""
        self._open = False

    async def ping(self) -> None:
        """Raise StoreError when closed."""
        self._check_open()

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        """Apply ``batch`` at most once and return the totals of its keys and ``read``."""
        self._check_open()
        keys = list(read)
        if batch is not None:
            keys[:0] = batch.deltas
            if batch.flush_id not in self._flushes:
                self._flushes[batch.flush_id] = self._clock()
                for key, n in batch.deltas.items():
                    self._usage[key] = self._usage.get(key, 0) + n
                    if batch.at is not None:
                        slot = (key[0], key[1], bucket_of(batch.at))
                        self._buckets[slot] = self._buckets.get(slot, 0) + n
        return {key: self._usage.get(key, 0) for key in keys}

    async def totals(self, keys: Iterable[Key]) -> dict[Key, int]:
        """The total of every key in ``keys`` (0 for an unknown key)."""
        return await self.flush(None, keys)

    async def grants(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Extra allowance granted for each key's period (0 when none)."""
        self._check_open()
        return {key: self._grants.get(key, 0) for key in keys}

    async def grant(self, key: Key, nbytes: int) -> int:
        """Add ``nbytes`` of extra allowance to ``key``'s period; returns the new grant total."""
        self._check_open()
        self._grants[key] = self._grants.get(key, 0) + nbytes
        return self._grants[key]

    async def reset(self, key: Key) -> None:
        """Set ``key``'s total back to zero."""
        self._check_open()
        self._usage[key] = 0

    async def buckets(self, tenant: str, period: str) -> dict[int, int]:
        """Bytes per history bucket of one tenant's period."""
        self._check_open()
        return {
            start: n
            for (t, p, start), n in sorted(self._buckets.items())
            if t == tenant and p == period
        }

    async def mark_once(self, key: Key, event: str) -> bool:
        """True for the first caller to mark ``event`` for ``key``'s period."""
        self._check_open()
        mark = (key[0], key[1], event)
        if mark in self._marks:
            return False
        self._marks.add(mark)
        return True

    async def add_top(self, entries: Sequence[TopEntry]) -> None:
        self._check_open()
        touched = set()
        for tenant, period, dimension, item, nbytes, requests in entries:
            table = self._top.setdefault((tenant, period, dimension), {})
            counts = table.setdefault(item, [0, 0])
            counts[0] += nbytes
            counts[1] += requests
            touched.add((tenant, period, dimension))
        for key in touched:
            table = self._top[key]
            if len(table) > TOP_KEEP:
                kept = sorted(table.items(), key=lambda kv: -kv[1][0])[:TOP_KEEP]
                self._top[key] = dict(kept)

    async def top(self, tenant: str, period: str, dimension: str, n: int) -> list[TopRow]:
        self._check_open()
        table = self._top.get((tenant, period, dimension), {})
        rows = sorted(table.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
        return [(item, c[0], c[1]) for item, c in rows]

    async def prune(self, before_period: str) -> int:
        """Delete usage before ``before_period`` and old flush ids; return usage rows deleted."""
        self._check_open()
        old = [key for key in self._usage if key[1] < before_period]
        for key in old:
            del self._usage[key]
        self._grants = {k: v for k, v in self._grants.items() if k[1] >= before_period}
        self._buckets = {k: v for k, v in self._buckets.items() if k[1] >= before_period}
        self._marks = {m for m in self._marks if m[1] >= before_period}
        self._top = {k: v for k, v in self._top.items() if k[1] >= before_period}
        cutoff = self._clock() - FLUSH_ID_TTL
        self._flushes = {i: at for i, at in self._flushes.items() if at >= cutoff}
        return len(old)

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("memory store: not open")
