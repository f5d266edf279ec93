"""governor's build backend (PEP 517): setuptools, plus mypyc for the hot modules.

``pyproject.toml`` names it, so ``pip install .`` (a wheel, as the Dockerfile does) and
``pip install -e .`` (in place, as ``make install`` does) both come here. When a C compiler
and Python's headers are present it compiles the modules :data:`governor.build.COMPILED`
names with mypyc (mypy's compiler: the code is already checked by ``mypy --strict``); when
they are not, it builds the same package as pure Python and says why. Which build is
running, ``governor --version`` and the ``governor_build_info`` metric tell.

``GOVERNOR_COMPILE`` chooses: ``auto`` (the default: compile when it can), ``0`` (never),
``1`` (compile, or fail the install saying why).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any, Final

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - the hooks this backend leaves as they are
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

from governor.build import sources

# mypyc ships with mypy, and it type-checks what it compiles against governor's own
# dependencies and the stubs of PyYAML, as `mypy --strict` does (Black builds alike).
MYPYC: Final = ("mypy>=2.0", "types-PyYAML")
VARIABLE: Final = "GOVERNOR_COMPILE"


def cannot_compile() -> str:
    """Why mypyc cannot build here ("" when it can)."""
    # As setuptools chooses it: $CC, or the compiler Python was built with.
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler} not found)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers ({include}/Python.h not found)"
    return ""


def _mode() -> str:
    mode = os.environ.get(VARIABLE, "auto")
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"{VARIABLE}={mode!r}: use auto, 0 or 1")
    return mode


def wanted() -> bool:
    """Whether to compile: asked for (or left to auto) and possible."""
    mode = _mode()
    if mode == "0":
        return False
    why = cannot_compile()
    if why and mode == "1":
        raise SystemExit(f"{VARIABLE}=1, but mypyc cannot build here: {why}")
    if why:
        print(f"governor: building pure Python: {why}", file=sys.stderr)
    return not why


def _extensions() -> list[Any]:
    if not wanted():
        return []
    from mypyc.build import mypycify  # in the build environment: see _requires

    # group_name: one shared library, governor/native__mypyc.*.so, beside the package's
    # modules rather than at the top of site-packages.
    here = Path.cwd()
    paths = [p.relative_to(here).as_posix() for p in sources(here / "governor")]
    return list(mypycify(paths, opt_level="3", group_name="governor.native"))


class _Backend(_setuptools._BuildMetaBackend):  # type: ignore[misc]
    asking = False  # in a get_requires hook: setuptools runs setup() to learn what it needs

    def run_setup(self, setup_script: str = "setup.py") -> None:
        from setuptools import setup

        setup(ext_modules=[] if self.asking else _extensions())


def _requires(ask: Any, config_settings: dict[str, Any] | None) -> list[str]:
    _BACKEND.asking = True
    try:
        base: list[str] = ask(config_settings)
    finally:
        _BACKEND.asking = False
    if _mode() == "0" or cannot_compile():
        return base
    with open("pyproject.toml", "rb") as f:
        runtime: list[str] = tomllib.load(f)["project"]["dependencies"]
    return [*base, *MYPYC, *runtime]


_BACKEND: Final = _Backend()


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires(_BACKEND.get_requires_for_build_wheel, config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return _requires(_BACKEND.get_requires_for_build_editable, config_settings)


build_wheel = _BACKEND.build_wheel
build_editable = _BACKEND.build_editable


def main() -> None:
    """``python -m governor.backend``: compile in place, as ``make install`` and ``make test``
    do in a checkout (with the mypy of the dev tools, no build environment)."""
    package = Path("governor").resolve()
    extensions = _extensions()
    if extensions:
        from setuptools import setup

        setup(ext_modules=extensions, script_args=["build_ext", "--inplace", "--quiet"])
    compiled = {path.with_suffix("") for path in sources(package)} if extensions else set()
    for path in package.rglob("*.so"):
        module = path.with_name(path.name.split(".", 1)[0])
        if (module.name == "native__mypyc" and compiled) or module in compiled:
            # Built from the sources as they are now, even where nothing had to be compiled
            # again (governor.build.stale compares these times with the sources').
            path.touch()
        else:
            path.unlink()  # compiled once, no longer: the .py beside it is what runs now


if __name__ == "__main__":
    main()
