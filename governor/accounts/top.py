"""Reading the top consumers back: one list as a document, and a line for events.

The store keeps each tenant's top lists per period (see :mod:`governor.core.top` and
:mod:`governor.observe.top`); the admin API, ``governor top``, the status page and the
warning events all read them through here, so all four say the same.
"""

from __future__ import annotations

from typing import Any, Final

from governor.core.top import COUNTERS, DIMENSIONS, Dimension
from governor.store.base import Store, TopRow

MAX_LIMIT: Final = 100  # items a caller may ask for


def share(part: int, whole: int) -> float:
    """``part`` of ``whole`` as a fraction (0 when ``whole`` is 0), rounded to 4 places."""
    return round(part / whole, 4) if whole > 0 else 0.0


def rows_doc(rows: list[TopRow], total: int) -> list[dict[str, Any]]:
    return [
        {"item": item, "bytes": nbytes, "requests": requests, "share": share(nbytes, total)}
        for item, nbytes, requests in rows
    ]


async def top_document(
    store: Store, tenant: str, period: str, by: Dimension, limit: int, total: int
) -> dict[str, Any]:
    """One top list, with each item's share of the period's ``total`` and the error bound."""
    rows = await store.top(tenant, period, by, limit)
    return {
        "tenant": tenant,
        "period": period,
        "by": by,
        "total_bytes": total,
        # What an item's bytes may be over by (see governor.core.top): total / COUNTERS.
        "error_bytes": total // COUNTERS,
        "items": rows_doc(rows, total),
    }


async def top_line(
    store: Store, tenant: str, period: str, total: int
) -> tuple[str, dict[str, Any]]:
    """The heaviest User-Agent, visitor and path ("facebookexternalhit 41%, 203.0.113.0/24
    12%, /files/lecture.mp4 9%") and the top three of each dimension (for a webhook)."""
    lists = {dimension: await store.top(tenant, period, dimension, 3) for dimension in DIMENSIONS}
    parts = [
        f"{rows[0][0]} {round(100 * share(rows[0][1], total))}%"
        for rows in (lists["agent"], lists["client"], lists["path"])
        if rows
    ]
    return ", ".join(parts), {d: rows_doc(rows, total) for d, rows in lists.items()}
