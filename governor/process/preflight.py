"""What ``serve`` would refuse at start-up, found without starting it.

:func:`~governor.config.load_config` checks the file; :func:`preflight` checks what the
file names on this machine: every file governor will create or write can be (its folder
exists, or can be made where governor makes folders, and is writable), every file it
will read back is readable, every address it will listen on can be bound. So:

* ``governor check`` runs both and passes exactly what ``serve`` accepts (``nginx -t``
  likewise opens the logs it names);
* ``serve`` runs it before it starts, so its refusals read the same as ``check``'s;
* a reload runs it for the keys a reload applies (``access_log``, ``spool``) and is
  rejected, old config kept, when one of them cannot be used.

Every problem reads ``FILE:LINE: key: what``, like the loader's.

Invariant: preflight only looks (stat, access, a bind that never listens, the first 16
bytes of an existing SQLite file, Python's own probe of the temporary folder): it leaves
nothing behind and holds nothing.

What it leaves to ``serve``: an address already in use may be this very governor,
running, so "address in use" is reported by ``serve``'s own bind, which names the key
as well (see :class:`~governor.errors.StartError`).
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final

from governor.config import Config
from governor.errors import ConfigError, Problem
from governor.tls.certificates import load_certificates

__all__ = ["preflight"]

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_STREAMS: Final = ("off", "stderr", "stdout")
_SQLITE: Final = "sqlite:///"


def preflight(
    config: Config, *, skip: Collection[str] = (), warnings: list[str] | None = None
) -> list[Problem]:
    """Every problem ``serve`` would meet with ``config`` on this machine (none: []).

    ``warnings`` collects what serve would only warn about (a certificate that expires
    within 14 days).
    """
    several = len(config.listeners) > 1
    checks: list[tuple[str, Callable[[], str | None]]] = [
        (
            f"listen[{i}]" if several else "listen",
            functools.partial(_bindable, listener.host, listener.port),
        )
        for i, listener in enumerate(config.listeners)
    ]
    checks += [
        ("store", lambda: _store(config.store)),
        ("spool", lambda: None if config.spool is None else _spool(config.spool)),
        ("access_log", lambda: _access_log(config.access_log)),
        ("workers", lambda: _temp_folder() if config.workers > 1 else None),
    ]
    if config.admin_listen is not None:
        host, port = config.admin_listen
        checks.append(("admin_listen", lambda: _bindable(host, port)))
    problems = []
    for key, check in checks:
        if key.partition("[")[0] not in skip and (found := check()) is not None:
            problems.append(config.problem(key, found))
    if "tls" not in skip and any(listener.tls is not None for listener in config.listeners):
        try:
            _, soon = load_certificates(config, now=time.time())
        except ConfigError as exc:
            problems += exc.problems
        else:
            if warnings is not None:
                warnings += soon
    return problems


def _store(url: str) -> str | None:
    """A SQLite store: its folder made (as the store does) or writable, the file usable."""
    if not url.startswith(_SQLITE):
        return None  # a Redis store is reached lazily; serve does not refuse one that is down
    path = Path(url[len(_SQLITE) :])
    # SQLite in WAL mode writes -wal and -shm files next to the database: the folder too.
    problem = _creatable(path, make_folders=True)
    if problem is not None:
        return problem
    if not _exists(path):
        return _try_create(path)
    if not os.access(path, os.R_OK | os.W_OK):
        return f"the SQLite file {path} is not readable and writable"
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        return f"cannot read the SQLite file {path}: {exc.strerror or exc}"
    if head and head != SQLITE_MAGIC:
        return f"{path} is not a SQLite database"
    return None


def _spool(path: Path) -> str | None:
    """Written at a stop (folders made, then a rename into place), read back at start."""
    problem = _creatable(path, make_folders=True)
    if problem is None and _exists(path) and not os.access(path, os.R_OK):
        return f"the spool file {path} is not readable"
    return problem


def _access_log(target: str) -> str | None:
    """Opened for appending at start, created if missing; its folder is not made (as nginx)."""
    if target in _STREAMS:
        return None
    path = Path(target)
    problem = _creatable(path, make_folders=False)
    if problem is None and _exists(path):
        if not os.access(path, os.W_OK):
            return f"the file {path} is not writable"
        try:
            if stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would wait for its reader
                with open(path, "a", encoding="utf-8"):  # as the access log opens it
                    pass
        except OSError as exc:  # e.g. a file of /proc, which root may "write"
            return f"cannot open {path} for appending: {exc.strerror or exc}"
    return problem


def _try_create(path: Path) -> str | None:
    """Whether a file can be made where ``path`` (or the folder it needs) would be: one is
    made and removed at once, in the nearest folder that exists (a folder of /proc, or of
    a read-only mount, passes every permission check and takes no file)."""
    folder = _nearest_folder(path)
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".governor-check-")
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror or exc} (in {folder})"
    os.close(fd)
    os.unlink(name)
    return None


def _creatable(path: Path, *, make_folders: bool) -> str | None:
    """Why governor could not create (or replace) the file ``path``, or None.

    Its folder must exist and be writable; with ``make_folders``, the nearest folder
    that exists must be, and everything between is made.
    """
    try:
        if path.is_dir():
            return f"{path} is a folder, not a file"
        if not make_folders and not path.parent.exists():
            return f"cannot create {path}: the folder {path.parent} does not exist"
        folder = _nearest_folder(path)
        if not folder.is_dir():
            return f"cannot create {path}: {folder} is not a folder"
    except OSError as exc:  # e.g. a folder on the way that may not be looked into
        return f"cannot look at {path}: {exc.strerror or exc}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create {path}: the folder {folder} is not writable"
    return None


def _nearest_folder(path: Path) -> Path:
    """The folder ``path`` would go in, or the nearest one above it that exists."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    return folder


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _bindable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None (in use is left to serve: see above)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return None
        return f"cannot listen on {where}: {exc.strerror or exc}"
    return None


def _temp_folder() -> str | None:
    """With workers, the supervisor keeps their metrics in a fresh temporary folder."""
    try:
        tempfile.gettempdir()
    except OSError as exc:  # no usable temporary folder: $TMPDIR, /tmp, ... all refused
        return f"the workers' metrics need a writable temporary folder ($TMPDIR): {exc}"
    return None
