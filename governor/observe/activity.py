"""Which tenants are active in their current period, and what the last look at each showed.

The metrics, the status page and the tenants API show per-tenant detail only for tenants
that did something this period, so that their cost follows traffic, not the config: a
fleet of 100,000 configured sites with 1,000 busy ones costs 1,000 entries here.

A tenant becomes *active* when this process serves a request for it, or when a flush
learns a non-zero total or a grant for it; it stays active until its period ends. The
owner (:class:`~governor.observe.metrics.Metrics`) calls :meth:`Activity.note` with a
fresh usage for each tenant that changed, and :meth:`Activity.due` tells which entries'
periods have ended (a heap keyed by period end, so a sweep costs what is due, not a pass
over every entry). Entries may also be *watched* without being active (the metrics of a
small config export every tenant): they are counted nowhere and ranked nowhere.

No I/O, no asyncio, no clock: the caller passes ``now``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from governor.accounts.runtime import TenantUsage

NEAR_SHARE: Final = 0.8
"""From this share of its cap on (and not blocked), a tenant counts as near its cap."""


def share(usage: TenantUsage) -> float:
    """How much of its cap a tenant used: 1.0 at the cap; a cap of 0 is always full."""
    if usage.cap_bytes <= 0:
        return float("inf") if usage.used_bytes > 0 or usage.blocked else 1.0
    return usage.used_bytes / usage.cap_bytes


@dataclass(slots=True)
class Entry:
    """What the last look at one tenant showed."""

    usage: TenantUsage
    ends: float  # Unix time its period (as last seen) ends
    active: bool  # traffic here or a non-zero total this period; else only watched
    share: float = 0.0


class Activity:
    """The tenants watched this period (active ones counted and ranked)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._ends: list[tuple[float, int, str]] = []  # (period end, tie-break, name)
        self._order = itertools.count()
        self.blocked = 0  # active tenants at their cap
        self.near = 0  # active tenants at NEAR_SHARE of their cap or more, not blocked
        self.active = 0

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry | None:
        """The entry of ``name``, or None when it is not watched."""
        return self._entries.get(name)

    def note(self, usage: TenantUsage, *, active: bool) -> Entry:
        """Record a fresh look at a tenant; ``active`` only ever turns an entry on."""
        name = usage.tenant
        ends = usage.resets_at.timestamp()
        old = self._entries.get(name)
        if old is not None:
            self._count(old, -1)
            active = active or (old.active and old.ends == ends)
        if old is None or old.ends != ends:
            heapq.heappush(self._ends, (ends, next(self._order), name))
        entry = Entry(usage=usage, ends=ends, active=active, share=share(usage))
        self._entries[name] = entry
        self._count(entry, 1)
        return entry

    def drop(self, name: str) -> None:
        """Stop watching ``name`` (idle in its new period, or no longer configured)."""
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._count(entry, -1)

    def due(self, now: float) -> list[str]:
        """The watched tenants whose period (as last seen) has ended by ``now``."""
        ends = self._ends
        names: list[str] = []
        while ends and ends[0][0] <= now:
            end, _, name = heapq.heappop(ends)
            entry = self._entries.get(name)
            if entry is not None and entry.ends == end:  # else a stale heap item
                names.append(name)
        return names

    def names(self) -> Iterator[str]:
        """Every watched tenant, in the order first seen."""
        return iter(list(self._entries))

    def ranked(self, start: int, stop: int) -> list[TenantUsage]:
        """Active tenants ``[start, stop)`` by share of cap, highest first (ties: first seen)."""
        if stop <= start:
            return []
        active = (e for e in self._entries.values() if e.active)
        top = heapq.nlargest(stop, active, key=lambda e: e.share)
        return [e.usage for e in top[start:stop]]

    def _count(self, entry: Entry, sign: int) -> None:
        if not entry.active:
            return
        self.active += sign
        if entry.usage.blocked:
            self.blocked += sign
        elif entry.share >= NEAR_SHARE:
            self.near += sign
