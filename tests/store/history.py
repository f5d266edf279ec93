"""Bytes per period of one tenant, read straight from a backend: an oracle for the tests.

governor itself never reads past periods (the status page reads buckets, the flusher the
current totals), so this is not part of the Store protocol; it goes through each
backend's own connection so a closed or unreachable store fails it as it fails any call.
"""

from __future__ import annotations

from typing import Any

from governor.store.base import Store
from governor.store.memory import MemoryStore
from governor.store.redis import RedisStore
from governor.store.redis_scripts import tenant_prefix
from governor.store.sqlite import SQLiteStore


async def history(store: Store, tenant: str, since_period: str) -> dict[str, int]:
    """Bytes per period key for ``tenant``, for periods ``>= since_period``, in order."""
    if isinstance(store, MemoryStore):
        store._check_open()
        return {
            period: n
            for (t, period), n in sorted(store._usage.items())
            if t == tenant and period >= since_period
        }
    if isinstance(store, SQLiteStore):

        def rows() -> dict[str, int]:
            found = store._db().execute(
                "SELECT period, bytes FROM usage WHERE tenant = ? AND period >= ? ORDER BY period",
                (tenant, since_period),
            )
            return {period: n for period, n in found}

        return await store._call(rows)
    if isinstance(store, RedisStore):
        client = store._require_open()
        prefix = tenant_prefix(tenant)

        async def read() -> dict[str, int]:
            periods: list[Any] = await client.zrangebylex(
                prefix + "periods", "[" + since_period, "+"
            )
            if not periods:
                return {}
            names = [p.decode() for p in periods]
            values = await client.mget([prefix + p for p in names])
            return {p: int(v) for p, v in zip(names, values, strict=True) if v is not None}

        return await store._call(read)
    raise TypeError(f"no history reader for {type(store).__name__}")
