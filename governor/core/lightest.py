"""The lightest of a bounded set of counters whose weights only grow, pure.

Both space-saving tables (the top consumers' in :mod:`governor.core.top`, the visitors'
in :mod:`governor.core.shares`) replace their lightest counter when a new item comes
and every counter is taken. A pass over the counters to find it costs the table's size
on every such request: 5 µs at 100 counters, 7 µs at 256, on each request of a crawl of
distinct paths or a flood of distinct visitors, the traffic those tables are for.

:class:`Lightest` keeps a min-heap of ``(weight, item)``, one entry per counter, and
lets entries go stale: a counter that grows is not touched here. Stale entries only
understate (weights never shrink while an item is counted), so when the top entry's
weight is its item's current weight, no counter is lighter; a stale top is refreshed
and sifted down, and the search goes on. Each growth makes at most one refresh later:
amortized O(log n) per replacement.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush, heapreplace


class Lightest:
    """The counters of a table, by weight, for taking out the lightest."""

    __slots__ = ("_heap", "checks")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self.checks = 0  # weights read by replace(): how much work the replacements took

    def add(self, item: str, weight: int) -> None:
        """A counter the table now holds (not one it holds already)."""
        heappush(self._heap, (weight, item))

    def replace(self, weight_of: Callable[[str], int], item: str, n: int) -> str:
        """Take out the lightest counter and put ``item`` in its place, weighing what it
        weighed plus ``n`` (space-saving's replacement); returns the item taken out.
        ``weight_of`` gives an item's current weight. The table must hold a counter."""
        heap = self._heap
        while True:
            weight, lightest = heap[0]
            current = weight_of(lightest)
            self.checks += 1
            if current == weight:
                heapreplace(heap, (weight + n, item))
                return lightest
            heapreplace(heap, (current, lightest))

    def __len__(self) -> int:
        return len(self._heap)
