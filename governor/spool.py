"""The spool: counts a stopping governor could not hand to its store, kept on disk.

A graceful stop with the store unreachable writes what the ledger still holds (the
in-flight batch with its flush id, and the pending counts) to a small JSON file,
atomically; the next start reads it back into the ledger before serving, and the
file is removed only once a flush has carried those counts to the store. So no
count is lost to an outage that spans a restart, and none is counted twice.

Invariant: a spool file is either absent or complete; a file that cannot be read
back is moved aside (``.corrupt``), never silently dropped or overwritten.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

from governor.ledger import Batch, Key

log = logging.getLogger("governor.spool")

VERSION = 1


def _rows(deltas: dict[Key, int] | Any) -> list[list[Any]]:
    return [[tenant, period, n] for (tenant, period), n in deltas.items() if n > 0]


def _deltas(rows: Any) -> dict[Key, int]:
    out: dict[Key, int] = {}
    if not isinstance(rows, list):
        raise ValueError("deltas must be a list")
    for row in rows:
        if not (
            isinstance(row, list)
            and len(row) == 3
            and isinstance(row[0], str)
            and isinstance(row[1], str)
            and isinstance(row[2], int)
            and row[2] >= 0
        ):
            raise ValueError(f"bad delta row {row!r}")
        key = (row[0], row[1])
        out[key] = out.get(key, 0) + row[2]
    return out


def save(path: Path, inflight: Batch | None, pending: dict[Key, int]) -> None:
    """Write the counts to ``path`` atomically (write, fsync, rename)."""
    doc = {
        "version": VERSION,
        "inflight": None
        if inflight is None
        else {"flush_id": inflight.flush_id, "deltas": _rows(inflight.deltas)},
        "pending": _rows(pending),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> tuple[Batch | None, dict[Key, int]] | None:
    """The counts spooled at ``path``, or None when there is no spool file.

    A file that cannot be parsed is renamed to ``<name>.corrupt`` and reported.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError("not a governor spool file of a known version")
        raw = doc.get("inflight")
        inflight = None
        if raw is not None:
            if not isinstance(raw, dict) or not isinstance(raw.get("flush_id"), str):
                raise ValueError("bad in-flight batch")
            inflight = Batch(raw["flush_id"], MappingProxyType(_deltas(raw.get("deltas"))))
        return inflight, _deltas(doc.get("pending", []))
    except ValueError as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.error("spool %s could not be read (%s); moved to %s", path, exc, aside)
        return None


def remove(path: Path) -> None:
    """Delete the spool file once its counts are in the store."""
    path.unlink(missing_ok=True)
