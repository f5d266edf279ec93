"""Usage stores, and :func:`open_store`, the one place a store URL is turned into a backend.

Invariant: the rest of governor sees only the :class:`Store` protocol; which
backend serves it is decided here from the configured URL.
"""

from __future__ import annotations

from pathlib import Path

from governor.errors import StoreError
from governor.store.base import Store
from governor.store.sqlite import SQLiteStore

__all__ = ["Store", "open_store"]

_SQLITE = "sqlite:///"


def open_store(url: str, *, timeout: float = 0.5) -> Store:
    """The store for ``url``, not yet opened (await its ``open()``).

    ``sqlite:////abs/path.db`` (four slashes: an absolute path) gives a
    :class:`~governor.store.sqlite.SQLiteStore`. Other schemes raise
    :class:`~governor.errors.StoreError`.
    """
    if url.startswith(_SQLITE):
        path = Path(url[len(_SQLITE) :])
        if not path.is_absolute() or path == Path("/"):
            raise StoreError(f"store {url!r}: the sqlite path must be absolute (sqlite:////...)")
        return SQLiteStore(path)
    scheme = url.partition(":")[0]
    raise StoreError(f"store {url!r}: the {scheme!r} store is not implemented yet")
