"""The contract every usage store implements, so the proxy never depends on a backend.

A store holds the authoritative byte total per (tenant, period) shared by every
governor instance. Invariant: a batch is applied at most once, keyed by its
``flush_id``, so a flush retried after an uncertain failure never double-counts.
Stores raise only :class:`~governor.errors.StoreError`; backend errors are
translated inside the backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar, Final, Protocol

from governor.core.ledger import Batch, Key

__all__ = ["BUCKET_SECONDS", "FLUSH_ID_TTL", "TOP_KEEP", "Store", "TopEntry", "TopRow", "bucket_of"]

TopEntry = tuple[str, str, str, str, int, int]
"""(tenant, period, dimension, item, bytes, requests): what an instance adds to a top list."""

TopRow = tuple[str, int, int]
"""(item, bytes, requests) of a top list, heaviest first."""

TOP_KEEP: Final = 200
"""Items a store keeps per top list (tenant, period, dimension): the heaviest by bytes."""

FLUSH_ID_TTL: Final = 86400.0
"""Seconds an applied flush id is remembered; :meth:`Store.prune` forgets older ones."""

BUCKET_SECONDS: Final = 300
"""The width of a history bucket: a batch's bytes are also added to the bucket of its ``at``."""


def bucket_of(at: float) -> int:
    """The Unix time at which the history bucket holding ``at`` starts."""
    return int(at) - int(at) % BUCKET_SECONDS


class Store(Protocol):
    """A usage store. Open it before use and close it when done."""

    persistent: ClassVar[bool]
    """Whether totals survive closing the store and opening a new one on the same location."""

    async def open(self) -> None:
        """Connect and create the schema if missing."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...

    def retune(self, *, timeout: float, history_days: int) -> None:
        """Take a reloaded ``store_timeout`` and ``history_days``, where the backend uses them.

        Operations already running finish as they began; later ones use the new values.
        """
        ...

    async def ping(self) -> None:
        """One round trip that touches no key: raises StoreError if the store is not usable.

        A flush with nothing to send or read pings instead, so an idle process still
        notices (and reports) a store that is down.
        """
        ...

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        """Apply ``batch`` atomically and at most once, then read totals.

        A batch whose ``flush_id`` was already applied is not added again. Returns
        the total of every key in ``read`` and in the batch (0 for an unknown key).
        One round trip for a network store.
        """
        ...

    async def totals(self, keys: Iterable[Key]) -> dict[Key, int]:
        """The total of every key in ``keys`` (0 for an unknown key)."""
        ...

    async def grants(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Extra allowance granted for each key's period (0 when none)."""
        ...

    async def grant(self, key: Key, nbytes: int) -> int:
        """Add ``nbytes`` of extra allowance to ``key``'s period; returns the new grant total."""
        ...

    async def reset(self, key: Key) -> None:
        """Set ``key``'s total back to zero (an operator's reset of today's count)."""
        ...

    async def buckets(self, tenant: str, period: str) -> dict[int, int]:
        """Bytes per history bucket (bucket start, Unix time) of one tenant's period.

        :meth:`flush` adds each batch's deltas to the bucket of the batch's ``at``
        too (nothing when ``at`` is None), at most once like the totals.
        """
        ...

    async def mark_once(self, key: Key, event: str) -> bool:
        """True for the first caller to mark ``event`` for ``key``'s period, fleet-wide.

        Later calls (from any instance) get False: a warning is sent once per
        threshold per period however many instances see the threshold crossed.
        """
        ...

    async def add_top(self, entries: Sequence[TopEntry]) -> None:
        """Add bytes and requests to items of top lists; each list keeps its
        :data:`TOP_KEEP` heaviest items (by bytes). Not idempotent: a retried call after an
        uncertain failure may count its entries twice (they are statistics, not the cap)."""
        ...

    async def top(self, tenant: str, period: str, dimension: str, n: int) -> list[TopRow]:
        """The ``n`` heaviest items of a top list, heaviest first."""
        ...

    async def prune(self, before_period: str) -> int:
        """Delete usage (and grants, buckets, marks) of periods ``< before_period``, and applied
        flush ids older than a day.

        Returns the number of usage rows deleted.
        """
        ...
