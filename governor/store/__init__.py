"""Usage stores, and :func:`open_store`, the one place a store URL is turned into a backend.

Invariant: the rest of governor sees only the :class:`Store` protocol; which
backend serves it is decided here from the configured URL.
"""

from __future__ import annotations

from governor.config.store_url import sqlite_path, store_kind
from governor.store.base import Store
from governor.store.redis import RedisStore
from governor.store.sqlite import SQLiteStore

__all__ = ["Store", "open_store"]


def open_store(url: str, *, timeout: float = 0.5, history_days: int = 35) -> Store:
    """The store for ``url``, not yet opened (await its ``open()``).

    ``sqlite:////abs/path.db`` (four slashes: an absolute path) gives a
    :class:`~governor.store.sqlite.SQLiteStore`; ``redis://``, ``rediss://``,
    ``unix://``, ``redis+sentinel://`` and ``redis+cluster://`` give a
    :class:`~governor.store.redis.RedisStore` whose round trips last at most
    ``timeout`` seconds and whose keys expire ``history_days`` + 2 days after
    their last write. Other schemes, and malformed URLs, raise
    :class:`~governor.errors.StoreError` (see :mod:`governor.config.store_url`).
    """
    if store_kind(url) == "sqlite":
        return SQLiteStore(sqlite_path(url))
    return RedisStore(url, timeout=timeout, history_days=history_days)
