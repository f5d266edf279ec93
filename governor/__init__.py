"""governor: a streaming reverse proxy that meters each tenant's daily data transfer."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader

from governor import build as _build


class _SourceOnly:
    """A finder for ``governor.*`` that sees only ``.py`` files, never an extension module
    compiled beside one: the pure-Python build (see governor.build)."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: object = None
    ) -> ModuleSpec | None:
        if not name.startswith(__name__ + ".") or not path:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(name)
            if spec is not None:
                return spec
        return None


if _SourceOnly not in sys.meta_path and (_build.pure_requested() or _build.stale()):
    sys.meta_path.insert(0, _SourceOnly)
