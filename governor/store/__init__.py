"""Usage stores, and :func:`open_store`, the one place a store URL is turned into a backend.

Invariant: the rest of governor sees only the :class:`Store` protocol; which
backend serves it is decided here from the configured URL.
"""

from __future__ import annotations

from pathlib import Path

from governor.errors import StoreError
from governor.store.base import Store
from governor.store.redis import SCHEMES as REDIS_SCHEMES
from governor.store.redis import RedisStore, mask_password
from governor.store.sqlite import SQLiteStore

__all__ = ["Store", "mask_password", "open_store", "store_url_problem"]

_SQLITE = "sqlite:///"


def open_store(url: str, *, timeout: float = 0.5, history_days: int = 35) -> Store:
    """The store for ``url``, not yet opened (await its ``open()``).

    ``sqlite:////abs/path.db`` (four slashes: an absolute path) gives a
    :class:`~governor.store.sqlite.SQLiteStore`; ``redis://``, ``rediss://``,
    ``unix://``, ``redis+sentinel://`` and ``redis+cluster://`` give a
    :class:`~governor.store.redis.RedisStore` whose round trips last at most
    ``timeout`` seconds and whose keys expire ``history_days`` + 2 days after
    their last write. Other schemes, and malformed URLs, raise
    :class:`~governor.errors.StoreError`.
    """
    if url.startswith(_SQLITE):
        path = Path(url[len(_SQLITE) :])
        if not path.is_absolute() or path == Path("/"):
            raise StoreError(f"store {url!r}: the sqlite path must be absolute (sqlite:////...)")
        return SQLiteStore(path)
    scheme = url.partition(":")[0]
    if scheme.lower() in REDIS_SCHEMES:
        return RedisStore(url, timeout=timeout, history_days=history_days)
    raise StoreError(f"store {mask_password(url)!r}: the {scheme!r} store is not implemented yet")


def store_url_problem(url: str) -> str | None:
    """What :func:`open_store` would refuse in ``url``, or None; opens nothing.

    Building a store object only parses its URL (the scheme, a Redis host, port range and
    database number, a SQLite path); connecting waits for ``open()``. So the config loader
    refuses exactly the URLs that ``serve`` would (password masked in the message).
    """
    try:
        open_store(url)
    except StoreError as exc:
        return str(exc).removeprefix("store ")
    return None
