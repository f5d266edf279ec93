"""Which build of governor is running: mypyc-compiled hot modules, or pure Python.

The same modules run either way: ``pip install`` (and so ``make install``) compiles the
modules in :data:`COMPILED` with mypyc when a C compiler and the Python headers are there
(see :mod:`governor.backend`), and leaves them as Python source when not. An extension
module sits next to its ``.py`` file and Python imports it first. ``GOVERNOR_PURE=1``
imports the ``.py`` files even where a compiled module sits next to them (the package's
``__init__`` sees to it), which is how the suite runs against both builds.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final

# What mypyc compiles, as paths under the package: the request path, from the bytes on
# the socket to the charge and the event. The rest (config, store, admin, process, CLI)
# runs at start, on reload or once per flush, where compiling buys nothing. Never errors.py:
# a native class cannot inherit from ConnectionError, as two of governor's errors do.
COMPILED: Final = (
    "http1/",
    "proxy/",
    "core/",
    "observe/",
    "accounts/",
    "tls/channel.py",
    "config/model.py",
    "sizes.py",
    "tasks.py",
)
# Left out of those: off the request path (once per flush), and written in ways mypyc does
# not compile (a break inside try/finally; a generic frozen dataclass).
NOT_COMPILED: Final = ("observe/webhooks.py", "core/alerts.py")

# The variable that makes governor import its Python source even when compiled.
PURE_VARIABLE: Final = "GOVERNOR_PURE"

# A module that is always compiled when anything is: it tells which build is running.
_PROBE: Final = "governor.http1.connection"
_PACKAGE: Final = Path(__file__).parent


@dataclass(frozen=True)
class Build:
    """What is running: ``kind`` is ``"mypyc"`` or ``"python"``."""

    kind: str
    modules: int  # modules compiled (each with its extension module beside its source)
    why: str  # for a pure build: why not compiled

    def describe(self) -> str:
        if self.kind == "mypyc":
            return f"compiled with mypyc: {self.modules} modules"
        return f"pure Python: {self.why}"


def governor_version() -> str:
    try:
        return version("governor")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def pure_requested() -> bool:
    return os.environ.get(PURE_VARIABLE, "") not in ("", "0")


def _compiled_files(package: Path) -> list[Path]:
    return [
        path for suffix in EXTENSION_SUFFIXES for path in package.glob(f"native__mypyc{suffix}")
    ]


def stale(package: Path = _PACKAGE) -> bool:
    """In a checkout (pyproject.toml above the package): whether a source that mypyc
    compiled changed after it did. Then the package runs as pure Python, with a warning,
    rather than run code older than what is on disk; ``make install`` compiles again."""
    if not (package.parent / "pyproject.toml").exists():
        return False  # installed from a wheel: what was built is what runs
    built = _compiled_files(package)
    if not built:
        return False
    when = min(path.stat().st_mtime for path in built)
    changed = sorted(
        path.relative_to(package.parent).as_posix()
        for path in sources(package)
        if path.stat().st_mtime > when
    )
    if changed:
        sys.stderr.write(
            f"governor: running pure Python: {', '.join(changed[:3])}"
            f"{' and more' if len(changed) > 3 else ''} changed after it was compiled "
            "(make install compiles it again)\n"
        )
    return bool(changed)


def sources(package: Path = _PACKAGE) -> list[Path]:
    """The files mypyc compiles."""
    found: list[Path] = []
    for entry in COMPILED:
        paths = sorted((package / entry).glob("*.py")) if entry.endswith("/") else [package / entry]
        # Never a package's __init__: an extension module there is no package to every
        # import system (the editable install's finder among them).
        found += [
            p
            for p in paths
            if p.name != "__init__.py"
            and p.relative_to(package).as_posix() not in NOT_COMPILED
            and p.is_file()
        ]
    return found


def running() -> Build:
    """Which build runs: the one :data:`_PROBE` was imported from."""
    probe = __import__(_PROBE, fromlist=["_"])
    if isinstance(getattr(probe, "__loader__", None), ExtensionFileLoader):
        built = sum(
            1
            for path in sources()
            if any(path.with_suffix(suffix).exists() for suffix in EXTENSION_SUFFIXES)
        )
        return Build("mypyc", built, "")
    if pure_requested():
        return Build("python", 0, f"{PURE_VARIABLE}=1")
    if _compiled_files(_PACKAGE):
        return Build("python", 0, "the compiled modules are older than their source")
    return Build("python", 0, "not compiled (no C compiler at install, or GOVERNOR_COMPILE=0)")
