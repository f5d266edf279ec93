"""An in-process usage store for unit tests and single-process experiments.

It implements the :class:`~governor.store.base.Store` contract with dicts and
keeps its invariant: a batch is applied at most once per ``flush_id``. Nothing
survives the object (``persistent`` is False) and nothing is shared between
instances.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import ClassVar

from governor.errors import StoreError
from governor.ledger import Batch, Key
from governor.store.base import FLUSH_ID_TTL

__all__ = ["MemoryStore"]


class MemoryStore:
    """A usage store held in dicts. ``clock`` dates applied flush ids for :meth:`prune`."""

    persistent: ClassVar[bool] = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._usage: dict[Key, int] = {}
        self._flushes: dict[str, float] = {}
        self._open = False

    async def open(self) -> None:
        """Make the store usable."""
        self._open = True

    async def close(self) -> None:
        """Make the store unusable; its data stay in the object."""
        self._open = False

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
        return {key: self._usage.get(key, 0) for key in keys}

    async def totals(self, keys: Iterable[Key]) -> dict[Key, int]:
        """The total of every key in ``keys`` (0 for an unknown key)."""
        return await self.flush(None, keys)

    async def history(self, tenant: str, since_period: str) -> dict[str, int]:
        """Bytes per period key for ``tenant``, for periods ``>= since_period``."""
        self._check_open()
        return {
            period: n
            for (t, period), n in sorted(self._usage.items())
            if t == tenant and period >= since_period
        }

    async def prune(self, before_period: str) -> int:
        """Delete usage before ``before_period`` and old flush ids; return usage rows deleted."""
        self._check_open()
        old = [key for key in self._usage if key[1] < before_period]
        for key in old:
            del self._usage[key]
        cutoff = self._clock() - FLUSH_ID_TTL
        self._flushes = {i: at for i, at in self._flushes.items() if at >= cutoff}
        return len(old)

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("memory store: not open")
