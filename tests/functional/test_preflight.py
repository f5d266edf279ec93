"""What ``serve`` refuses at start, found by ``check`` first, and named by key either way.

In-process: the preflight (what the file names on this machine) one problem at a time,
and the start path itself, which names the key of whatever it cannot use even when the
preflight did not run or the machine changed since (the CLI's agreement between
``check`` and ``serve`` is in test_cli.py). Tests run as root here, so they break
paths with folders and files in the way rather than with permissions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from governor.config import load_config
from governor.errors import StartError
from governor.process.instance import Governor
from governor.process.preflight import preflight
from tests.support import free_port, held_port, write_config


def line_of(path: Path, key: str) -> int:
    """The line of the top-level ``key`` in a written config."""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith(f"{key}:"):
            return n
    raise AssertionError(f"no {key} in {path}")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with held_port() as port:
        yield port


def a_file(tmp: Path) -> Path:
    (tmp / "blocker").write_text("a file where a folder should be")
    return tmp / "blocker"


def a_folder(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


def not_sqlite(tmp: Path) -> str:
    (tmp / "usage.db").write_text("not a database")
    return "sqlite:///usage.db"


# (key, the value written for it given tmp_path, a fragment of the problem)
CASES: list[tuple[str, Callable[[Path], Any], str]] = [
    (
        "access_log",
        lambda tmp: str(tmp / "missing" / "access.log"),
        "the folder {tmp}/missing does not exist",
    ),
    ("access_log", lambda tmp: str(a_folder(tmp, "logs")), "{tmp}/logs is a folder, not a file"),
    ("access_log", lambda tmp: str(a_file(tmp) / "access.log"), "{tmp}/blocker is not a folder"),
    (
        "store",
        lambda tmp: f"sqlite:///{a_file(tmp).name}/state/usage.db",
        "{tmp}/blocker is not a folder",
    ),
    ("store", lambda tmp: f"sqlite:///{a_folder(tmp, 'db').name}", "{tmp}/db is a folder"),
    ("store", not_sqlite, "{tmp}/usage.db is not a SQLite database"),
    ("spool", lambda tmp: str(a_folder(tmp, "spool")), "{tmp}/spool is a folder, not a file"),
    ("spool", lambda tmp: f"{a_file(tmp).name}/spool.json", "{tmp}/blocker is not a folder"),
    # Paths every permission check passes that still take no file (root may "write" /proc).
    ("access_log", lambda tmp: "/proc/version", "cannot open /proc/version for appending"),
    ("store", lambda tmp: "sqlite:////proc/governor-check.db", "cannot create /proc/governor"),
    ("listen", lambda tmp: f"192.0.2.1:{free_port()}", "cannot listen on 192.0.2.1:"),
    ("admin_listen", lambda tmp: "192.0.2.1:9090", "cannot listen on 192.0.2.1:9090"),
]


@pytest.mark.parametrize(("key", "value", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_preflight_names_the_key_and_its_line(
    tmp_path: Path, key: str, value: Callable[[Path], Any], fragment: str
) -> None:
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", **{key: value(tmp_path)})
    (problem,) = preflight(load_config(path))
    assert (problem.file, problem.line, problem.key) == (str(path), line_of(path, key), key)
    assert fragment.format(tmp=tmp_path) in problem.message, problem


def test_a_config_serve_accepts_passes_and_nothing_is_left_behind(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        upstream="http://127.0.0.1:1",
        access_log=str(tmp_path / "access.log"),
        spool="state/deep/spool.json",
        admin_listen=f"127.0.0.1:{free_port()}",
        workers=2,
    )
    before = set(tmp_path.rglob("*"))
    assert preflight(load_config(path)) == []
    assert set(tmp_path.rglob("*")) == before  # no state/, no access.log: it only looked


def test_an_address_in_use_is_left_to_serve(tmp_path: Path, taken_port: int) -> None:
    """It may be this very governor, running: ``check`` beside a live instance passes."""
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", listen=f"127.0.0.1:{taken_port}")
    assert preflight(load_config(path)) == []


# -- the start path names the key itself (no preflight ran: a race, or a Config in code) --


async def start_error(path: Path) -> StartError:
    gov = Governor(load_config(path))
    with pytest.raises(StartError) as info:
        await gov.start()
    await gov.stop()  # releases what the start had opened
    return info.value


async def test_a_port_in_use_at_start_names_listen(tmp_path: Path, taken_port: int) -> None:
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", listen=f"127.0.0.1:{taken_port}")
    problem = (await start_error(path)).problem
    assert (problem.line, problem.key) == (line_of(path, "listen"), "listen")
    assert problem.message == f"cannot listen on 127.0.0.1:{taken_port}: Address already in use"


async def test_an_admin_port_in_use_at_start_names_admin_listen(
    tmp_path: Path, taken_port: int
) -> None:
    path = write_config(
        tmp_path, upstream="http://127.0.0.1:1", admin_listen=f"127.0.0.1:{taken_port}"
    )
    problem = (await start_error(path)).problem
    assert (problem.line, problem.key) == (line_of(path, "admin_listen"), "admin_listen")
    assert "Address already in use" in problem.message


async def test_an_access_log_that_cannot_be_opened_names_access_log(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "access.log"
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", access_log=str(target))
    with pytest.raises(StartError) as info:
        Governor(load_config(path))
    problem = info.value.problem
    assert (problem.line, problem.key) == (line_of(path, "access_log"), "access_log")
    assert problem.message == f"cannot open {target}: No such file or directory"


async def test_a_store_that_cannot_be_opened_names_store(tmp_path: Path) -> None:
    a_file(tmp_path)
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", store="sqlite:///blocker/u.db")
    problem = (await start_error(path)).problem
    assert (problem.line, problem.key) == (line_of(path, "store"), "store")
    assert f"{tmp_path}/blocker/u.db" in problem.message


async def test_a_spool_that_cannot_be_read_names_spool(tmp_path: Path) -> None:
    a_folder(tmp_path, "spool.json")
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", spool="spool.json")
    problem = (await start_error(path)).problem
    assert (problem.line, problem.key) == (line_of(path, "spool"), "spool")
    assert f"{tmp_path}/spool.json: Is a directory" in problem.message
