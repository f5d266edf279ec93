"""governor.build: which modules mypyc compiles, which build runs, and a stale build noticed.

The suite runs twice (``make test``): against the compiled build and, with
``GOVERNOR_PURE=1``, against the same modules as Python source. These tests check the
switch itself in fresh interpreters, whichever build the suite runs on.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import governor
from governor import build

PACKAGE = Path(governor.__file__).parent
ROOT = PACKAGE.parent
VERSION = "import sys; sys.argv = ['governor', '--version']; import governor.cli as c; c.main()"


def run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != build.PURE_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def compiled_here() -> bool:
    return (
        any((PACKAGE / f"native__mypyc{suffix}").exists() for suffix in EXTENSION_SUFFIXES)
        and not build.stale()
    )


def test_the_request_path_is_compiled_and_the_rest_is_not() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in build.sources()}
    for hot in ("http1/connection.py", "http1/wire.py", "proxy/forward.py", "core/meter.py"):
        assert hot in names
    assert not {"observe/webhooks.py", "core/alerts.py", "errors.py", "cli.py"} & names
    assert not any(name.endswith("__init__.py") for name in names)
    assert all((PACKAGE / name).exists() for name in names)


# Constants of compiled modules a test sets (a Final one is compiled in, so setting it
# would change nothing there).
SET_BY_TESTS = frozenset({"accounts/flusher.py:LEARN_SLICE"})
_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*|log")


def constants(tree: ast.Module) -> Iterator[tuple[str, ast.stmt]]:
    """A module's top-level constants (UPPER_CASE names, and its logger), with the
    statement that binds each; type variables aside."""
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not isinstance(node, ast.Assign | ast.AnnAssign) or not isinstance(target, ast.Name):
            continue
        call = node.value.func if isinstance(node.value, ast.Call) else None
        if _CONSTANT.fullmatch(target.id) and not (
            isinstance(call, ast.Name) and call.id == "TypeVar"
        ):
            yield target.id, node


def test_the_compiled_modules_constants_are_final() -> None:
    """mypyc reads a Final module constant as a C static (or inlines it); any other module
    global is a dict lookup by name each time it is read: 45 a request, ~6% of a 1 KiB
    request's instructions, when the hot constants were not Final."""
    loose = []
    for path in build.sources():
        name = path.relative_to(PACKAGE).as_posix()
        for constant, node in constants(ast.parse(path.read_text())):
            final = isinstance(node, ast.AnnAssign) and "Final" in ast.unparse(node.annotation)
            if not final and f"{name}:{constant}" not in SET_BY_TESTS:
                loose.append(f"{name}:{node.lineno} {constant}")
    assert loose == []
    tree = ast.parse("X = 1\nY: Final = 2\nT = TypeVar('T')\nlog: Final = getLogger()")
    assert [(n, isinstance(s, ast.AnnAssign)) for n, s in constants(tree)] == [
        ("X", False),
        ("Y", True),
        ("log", True),
    ]


def test_governor_pure_imports_the_python_source_whatever_is_compiled() -> None:
    probe = "import governor.http1.wire as w, governor.build as b; "
    probe += "print(type(w.__loader__).__name__, b.running().describe())"
    out = run(probe, GOVERNOR_PURE="1")
    assert out == "SourceFileLoader pure Python: GOVERNOR_PURE=1"


def test_version_says_which_build_runs() -> None:
    out = run(VERSION)
    if compiled_here():
        assert "(compiled with mypyc: " in out, out
        assert f"{len(build.sources())} modules)" in out
    else:
        assert "(pure Python: " in out, out
    pure = run(VERSION, GOVERNOR_PURE="1")
    assert pure.endswith("(pure Python: GOVERNOR_PURE=1)")


def fake_checkout(tmp_path: Path, *, source_newer: bool) -> Path:
    package = tmp_path / "governor"
    (package / "http1").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")
    source = package / "http1" / "connection.py"
    lib = package / f"native__mypyc{EXTENSION_SUFFIXES[0]}"
    source.write_text("")
    lib.write_bytes(b"")
    older, newer = (lib, source) if source_newer else (source, lib)
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (2_000_000, 2_000_000))
    return package


def test_a_source_changed_after_compiling_runs_pure_python_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build.stale(fake_checkout(tmp_path, source_newer=True))
    err = capsys.readouterr().err
    assert "running pure Python: governor/http1/connection.py changed after" in err


def test_a_fresh_build_or_an_installed_one_is_not_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not build.stale(fake_checkout(tmp_path / "fresh", source_newer=False))
    installed = fake_checkout(tmp_path / "wheel", source_newer=True)
    (installed.parent / "pyproject.toml").unlink()  # site-packages: no checkout around it
    assert not build.stale(installed)
    assert capsys.readouterr().err == ""


def test_without_a_compiler_the_install_builds_pure_python_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from governor import backend

    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc or anything else on it
    assert backend.cannot_compile().startswith("no C compiler (")
    monkeypatch.setenv("GOVERNOR_COMPILE", "auto")
    assert not backend.wanted()
    assert "governor: building pure Python: no C compiler" in capsys.readouterr().err
    monkeypatch.setenv("GOVERNOR_COMPILE", "1")
    with pytest.raises(SystemExit, match="GOVERNOR_COMPILE=1, but mypyc cannot build here"):
        backend.wanted()
    monkeypatch.setenv("GOVERNOR_COMPILE", "yes")
    with pytest.raises(SystemExit, match="GOVERNOR_COMPILE='yes': use auto, 0 or 1"):
        backend.wanted()
    monkeypatch.setenv("GOVERNOR_COMPILE", "0")
    assert not backend.wanted()


def test_the_readme_gives_the_number_of_modules_that_are_compiled() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The compiled build", 1)[1].split("\n### ", 1)[0]
    said = {int(n) for n in re.findall(r"(\d+) modules\b", section)}
    assert said == {len(build.sources())}, (said, len(build.sources()))
