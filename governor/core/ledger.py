"""In-memory byte counts per (tenant, period), flushed to a store in batches.

The proxy counts bytes on the hot path without touching the store: :meth:`Ledger.add`
is a dict update. A flusher periodically takes the pending counts as a
:class:`Batch` (:meth:`~Ledger.take`), sends it to the store, and reports back with
:meth:`~Ledger.commit` (applied; here are the store's totals) or
:meth:`~Ledger.fail` (not known to be applied; retry later).

Invariants:

* No byte is lost or counted twice. Every byte added is, at all times, in
  exactly one of: *pending* (not yet taken), the one *in-flight* batch (taken,
  not yet committed), a *carried* batch (spooled by an earlier process, see
  :meth:`~Ledger.carry`), or the store's totals (known after a commit). A failed
  batch stays in flight and is offered again by :meth:`~Ledger.take` with the
  same ``flush_id``, so a store that applies each id at most once never
  double-counts a batch whose first attempt did land.
* At most one batch is in flight at a time; carried batches wait their turn, each
  with its own ``flush_id``, before pending counts are taken.
* :meth:`~Ledger.used` is the best local estimate of a key's total:
  last known store total + in-flight + carried + pending, never negative.
* Work follows traffic: the keys a flush reads back are the *served* keys
  (:meth:`~Ledger.serve`, and every key of a batch taken), a set bounded by the
  keys that saw traffic here, never every configured tenant. The flusher drops a
  served key when its period is over (:meth:`~Ledger.unserve`).

This module is pure: no I/O, no clock, nothing awaits.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["Batch", "Key", "Ledger", "is_blocked"]

Key = tuple[str, str]
"""(tenant name, period key)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Byte deltas to add to the store at most once.

    ``flush_id`` is unique per batch (uuid4 hex); a retried batch keeps its id so
    the store can recognise it and apply it at most once.
    """

    flush_id: str
    deltas: Mapping[Key, int]
    at: float | None = None  # Unix time the batch was taken: its bytes' history bucket

    def total(self) -> int:
        """The sum of all deltas in the batch."""
        return sum(self.deltas.values())


class Ledger:
    """Byte counts not yet in the store, plus the store's last known totals."""

    __slots__ = ("_carried", "_inflight", "_known", "_pending", "_served")

    def __init__(self) -> None:
        self._known: dict[Key, int] = {}
        self._served: set[Key] = set()  # keys whose store totals this process keeps learning
        self._pending: dict[Key, int] = {}
        self._inflight: Batch | None = None
        self._carried: list[Batch] = []  # taken by an earlier process; offered in turn

    def add(self, key: Key, nbytes: int) -> None:
        """Count ``nbytes`` (>= 0) against ``key``. O(1); the per-chunk hot path."""
        if nbytes <= 0:
            if nbytes < 0:
                raise ValueError(f"cannot add a negative byte count: {nbytes}")
            return
        pending = self._pending
        pending[key] = pending.get(key, 0) + nbytes

    def serve(self, key: Key) -> None:
        """Mark ``key`` as served here: each flush reads its fleet total back. O(1)."""
        self._served.add(key)

    def served(self) -> frozenset[Key]:
        """The keys served here: those marked by :meth:`serve` and those of batches taken."""
        return frozenset(self._served)

    def unserve(self, keys: Iterable[Key]) -> None:
        """Stop learning ``keys`` (their period is over) and forget their known totals.

        Pending and in-flight counts are never dropped.
        """
        for key in keys:
            self._served.discard(key)
            self._known.pop(key, None)

    def used(self, key: Key) -> int:
        """Bytes used by ``key``: last known store total + in-flight + pending."""
        n = self._known.get(key, 0) + self._pending.get(key, 0)
        if self._inflight is not None:
            n += self._inflight.deltas.get(key, 0)
        for batch in self._carried:  # empty but after a restart that replays a spool
            n += batch.deltas.get(key, 0)
        return max(n, 0)

    def take(self, now: float | None = None) -> Batch | None:
        """The batch to flush next, or None when there is nothing to flush.

        If a batch is still in flight (its flush failed or has not been reported),
        that same batch, with the same ``flush_id``, is returned again. Otherwise the
        next carried batch goes in flight, or else all pending counts move into a new
        in-flight batch.
        """
        if self._inflight is not None:
            return self._inflight
        if self._carried:
            self._inflight = self._carried.pop(0)
            self._served.update(self._inflight.deltas)
            return self._inflight
        if not self._pending:
            return None
        batch = Batch(flush_id=uuid.uuid4().hex, deltas=MappingProxyType(self._pending), at=now)
        self._served.update(self._pending)
        self._pending = {}
        self._inflight = batch
        return batch

    def commit(self, batch: Batch, totals: Mapping[Key, int]) -> None:
        """Record that the store applied ``batch``; ``totals`` are its totals afterwards.

        The store is authoritative: each key in ``totals`` (which include this
        batch, may include other instances' bytes, and may name keys outside the
        batch) becomes the known total. The in-flight batch is cleared; bytes
        added since :meth:`take` stay pending.
        """
        self._check_inflight(batch)
        self._inflight = None
        self._known.update(totals)

    def fail(self, batch: Batch) -> None:
        """Record that flushing ``batch`` failed; it stays in flight for a retry with its id."""
        self._check_inflight(batch)

    def seed(self, totals: Mapping[Key, int]) -> None:
        """Set known store totals (at startup, on refresh); pending and in-flight are untouched."""
        self._known.update(totals)

    def learn(self, key: Key, total: int) -> bool:
        """Take ``total``, read from the store outside a flush, as ``key``'s store total.

        Not while a batch holding ``key`` is in flight or carried: it may or may not be in
        that total, so then the flusher's commit is waited for instead. Returns whether
        the total was taken.
        """
        if self._inflight is not None and key in self._inflight.deltas:
            return False
        if any(key in batch.deltas for batch in self._carried):
            return False
        self._known[key] = total
        return True

    def is_served(self, key: Key) -> bool:
        """Whether each flush reads ``key`` back (see :meth:`serve`)."""
        return key in self._served

    def known(self, key: Key) -> int | None:
        """The store's last known total of ``key``, or None when no flush has read it."""
        return self._known.get(key)

    def pending_bytes(self) -> int:
        """Bytes counted here but not yet known to be in the store (pending + in-flight)."""
        n = sum(self._pending.values())
        if self._inflight is not None:
            n += self._inflight.total()
        return n + sum(batch.total() for batch in self._carried)

    def seal(self, now: float | None = None) -> list[Batch]:
        """Everything not yet known to be in the store, as batches that keep their ids.

        The in-flight batch, the carried ones, and the pending counts sealed into a new
        batch (carried from now on), so that however often these batches are written
        down and read back, the store applies each at most once.
        """
        if self._pending:
            deltas = MappingProxyType(self._pending)
            self._pending = {}
            self._carried.append(Batch(flush_id=uuid.uuid4().hex, deltas=deltas, at=now))
        return ([self._inflight] if self._inflight is not None else []) + list(self._carried)

    def carry(self, batches: Sequence[Batch]) -> None:
        """Take back what :meth:`seal` gave (in an earlier process), into an unused ledger.

        Each batch keeps its ``flush_id``: if one did land before, the store recognises
        the id and does not count it again. They are flushed one by one, in order,
        before any count added here.
        """
        if self._inflight is not None or self._pending or self._carried:
            raise ValueError("carry() needs a ledger with nothing pending or in flight")
        self._carried = [b for b in batches if b.deltas]

    def forget(self, keep: Callable[[Key], bool]) -> None:
        """Drop known totals of keys for which ``keep`` is false (e.g. past periods).

        Bounds memory. Pending and in-flight counts are never dropped.
        """
        self._known = {k: v for k, v in self._known.items() if keep(k)}

    def _check_inflight(self, batch: Batch) -> None:
        if self._inflight is None or batch.flush_id != self._inflight.flush_id:
            raise ValueError(f"batch {batch.flush_id} is not the batch in flight")


def is_blocked(used: int, cap: int) -> bool:
    """Whether a tenant that has used ``used`` bytes is at or over its daily ``cap``."""
    return used >= cap
