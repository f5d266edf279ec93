"""The spool: counts a stopping governor could not hand to its store, kept on disk.

A graceful stop with the store unreachable writes what the ledger still holds to a
small JSON file, as batches that each keep a flush id; the next start reads them
back into the ledger before serving, and each batch leaves the file once a flush
has carried it to the store. So no count is lost to an outage that spans a restart,
and none is counted twice: a store applies each flush id at most once.

Invariants:

* One live process per spool file. :meth:`Spool.claim` takes an exclusive ``flock``
  on ``<file>.lock`` (which names the holder's pid) and keeps it until the process
  stops; a second process with the same file refuses to start (:class:`SpoolBusy`,
  naming the file and the ``spool`` key) instead of overwriting the first one's counts
  later. The kernel drops the lock when a process dies, however it dies. Within one
  process (governors run side by side in tests), the lock is shared: their saves
  run one after the other and merge, and their batches keep their ids, so sharing
  costs nothing there.
* Nothing is replaced by something that lacks it: saving merges with what the file
  holds (the union of batches, by flush id), written whole, fsynced and renamed; so a
  file is either absent or complete, and a batch written twice is still one batch.
* Nothing is left behind: the files of other worker counts under the same ``spool``
  setting (``spool.json`` and ``spool.N.json``) that no process of this shape owns are
  taken over at the start (:func:`orphans`): merged into this process's file, then
  removed, each under its own lock.
* A file that cannot be read back is moved aside (``.corrupt``), never dropped or
  overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from governor.core.ledger import Batch, Key
from governor.errors import GovernorError

log: Final = logging.getLogger("governor.spool")

VERSION: Final = 2  # version 1 (one in-flight batch and pending counts) is still read


class SpoolBusy(GovernorError):
    """Another live process holds the spool file."""

    def __init__(self, path: Path, holder: int | None, where: str) -> None:
        self.path = path
        self.holder = holder
        who = f"pid {holder}" if holder else "another process"
        super().__init__(
            f"{where}spool: {path} is in use by another running governor ({who}); two "
            "processes must not share a spool file, or one would overwrite the other's "
            "counts: give each instance its own (set `spool` in its config)"
        )


def worker_path(base: Path, worker: int) -> Path:
    """Each worker spools to a file of its own: ``spool.json`` → ``spool.1.json``."""
    return base.with_name(f"{base.stem}.{worker}{base.suffix}")


def orphans(base: Path, worker: int | None, workers: int) -> list[Path]:
    """Spool files of the ``spool`` setting ``base`` that no process of this run owns.

    Left by a run with another number of workers: ``spool.N.json`` for ``N >= workers``
    (all of them for a single process) and ``spool.json`` (for workers). The single
    process and worker 0 take them over; the other workers take none. A file some live
    process holds is skipped when taken over (its lock is held), so a guess here that is
    too wide costs nothing.
    """
    if worker not in (None, 0):
        return []
    numbered = re.compile(rf"{re.escape(base.stem)}\.(\d+){re.escape(base.suffix)}")
    try:
        names = sorted(p.name for p in base.parent.iterdir())
    except OSError:
        return []
    found = [
        base.with_name(name)
        for name in names
        if (m := numbered.fullmatch(name)) and (worker is None or int(m[1]) >= workers)
    ]
    if worker is not None and base.name in names:
        found.append(base)
    return found


class Spool:
    """One process's spool file: locked from :meth:`claim` to :meth:`release`."""

    def __init__(
        self,
        path: Path,
        *,
        where: str = "",
        orphans: Callable[[], Iterable[Path]] = list,
    ) -> None:
        self.path = path
        self._where = where  # "<config file>: ", to name where the key is set
        self._orphans = orphans
        self._claimed = False

    def claim(self) -> None:
        """Lock the file for this process; :class:`SpoolBusy` if another one has it."""
        if not self._claimed:
            _hold(self.path, self._where)
            self._claimed = True

    def release(self) -> None:
        """Unlock (this governor is done with the file: its counts are saved or flushed)."""
        if self._claimed:
            self._claimed = False
            _let_go(self.path)

    def load(self) -> list[Batch]:
        """Every batch spooled here, after taking over the orphaned files."""
        self.claim()
        for other in self._orphans():  # an OSError is reported by the caller, naming `spool`
            if other != self.path:
                self._adopt(other)
        return _read(self.path)

    def save(self, batches: Sequence[Batch]) -> None:
        """Add ``batches`` to the file (merged by flush id with what it holds)."""
        self.claim()
        _write(self.path, _union(_read(self.path), batches))

    def settle(self, flush_id: str) -> None:
        """The batch ``flush_id`` is in the store: take it out of the file."""
        held = _read(self.path)
        rest = [b for b in held if b.flush_id != flush_id]
        if len(rest) == len(held):
            return
        if rest:
            _write(self.path, rest)
        else:
            self.path.unlink(missing_ok=True)

    def _adopt(self, other: Path) -> None:
        """Merge the orphaned file ``other`` into ours, then remove it, under its lock."""
        try:
            lock = _lock(other, self._where)
        except SpoolBusy:
            return  # a live process owns it
        except GovernorError as exc:
            log.warning("cannot take over %s: %s", other, exc)
            return
        try:
            batches = _read(other)
            if batches:
                _write(self.path, _union(_read(self.path), batches))
                log.warning(
                    "took over %d spooled bytes from %s (left by a run with other workers)",
                    sum(b.total() for b in batches),
                    other,
                )
            other.unlink(missing_ok=True)
        finally:
            os.close(lock)


def holder(path: Path) -> int | None:
    """The pid of the live process holding the spool ``path``, without taking the lock.

    Read from ``/proc/locks`` (Linux); None when nobody holds it or where it cannot tell.
    """
    try:
        st = os.stat(_lock_path(path))
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF" (blocked waiters have "->")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def in_use(base: Path, workers: int) -> list[str]:
    """For ``governor check``: which files of the ``spool`` setting ``base`` live processes hold.

    Looks without taking a lock (a ``serve`` starting meanwhile must not fail for it).
    """
    paths = [base] if workers <= 1 else [worker_path(base, i) for i in range(workers)]
    notes = []
    for path in paths:
        pid = holder(path)
        if pid is not None:
            notes.append(
                f"spool: {path} is held by a running governor (pid {pid}); "
                "another `serve` with this spool file would refuse to start"
            )
    return notes


# --- the lock ------------------------------------------------------------------------


_held: dict[Path, list[int]] = {}  # spool file -> [lock descriptor, holders in this process]


def _hold(path: Path, where: str) -> None:
    entry = _held.get(path)
    if entry is not None:
        entry[1] += 1
    else:
        _held[path] = [_lock(path, where), 1]


def _let_go(path: Path) -> None:
    entry = _held.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _held[path]
        os.close(entry[0])


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _lock(path: Path, where: str) -> int:
    """An exclusive flock on ``path``'s lock file, its descriptor; it names our pid."""
    lock_path = _lock_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise GovernorError(
            f"{where}spool: cannot open the lock {lock_path}: {exc.strerror or exc}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _pid_in(fd)
        os.close(fd)
        raise SpoolBusy(path, pid, where) from None
    except OSError as exc:
        os.close(fd)
        raise GovernorError(
            f"{where}spool: cannot lock {lock_path}: {exc.strerror or exc}"
        ) from None
    with contextlib.suppress(OSError):  # the pid is for people; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# --- the file ------------------------------------------------------------------------


def _union(held: Sequence[Batch], more: Sequence[Batch]) -> list[Batch]:
    """``held`` then ``more``, each flush id once (the same id is the same batch)."""
    out = {b.flush_id: b for b in held}
    for b in more:
        out.setdefault(b.flush_id, b)
    return list(out.values())


def _write(path: Path, batches: Sequence[Batch]) -> None:
    """Write ``batches`` to ``path`` atomically (write, fsync, rename)."""
    doc = {
        "version": VERSION,
        "batches": [
            {"flush_id": b.flush_id, "at": b.at, "deltas": _rows(b.deltas)} for b in batches
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> list[Batch]:
    """The batches spooled at ``path`` ([] for no file); a bad file is moved aside."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        return _parse(text)
    except ValueError as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.error("spool %s could not be read (%s); moved to %s", path, exc, aside)
        return []


def _parse(text: str) -> list[Batch]:
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("version") not in (1, VERSION):
        raise ValueError("not a governor spool file of a known version")
    if doc["version"] == 1:
        return _parse_v1(doc, text)
    rows = doc.get("batches")
    if not isinstance(rows, list):
        raise ValueError("batches must be a list")
    return [_batch(row) for row in rows]


def _parse_v1(doc: dict[str, Any], text: str) -> list[Batch]:
    """Version 1: one in-flight batch (with its id) and pending counts (without one)."""
    out = []
    raw = doc.get("inflight")
    if raw is not None:
        out.append(_batch(raw))
    pending = _deltas(doc.get("pending", []))
    if pending:
        # An id from the file's content: read twice (a crash before it is rewritten),
        # the pending counts are still one batch.
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        out.append(Batch(flush_id=digest, deltas=MappingProxyType(pending)))
    return out


def _batch(raw: Any) -> Batch:
    if not isinstance(raw, dict) or not isinstance(raw.get("flush_id"), str):
        raise ValueError("bad batch")
    at = raw.get("at")
    if at is not None and not isinstance(at, int | float):
        raise ValueError(f"bad batch time {at!r}")
    return Batch(raw["flush_id"], MappingProxyType(_deltas(raw.get("deltas"))), at)


def _rows(deltas: Any) -> list[list[Any]]:
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
