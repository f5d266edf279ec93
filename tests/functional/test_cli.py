"""The ``governor`` command as an operator runs it: a real process, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.functional.processes import ServeFactory, governor
from tests.functional.upstream_app import Seen
from tests.support import eventually, free_port, held_port, write_config


async def test_check_accepts_the_shipped_example() -> None:
    code, out, err = await governor("check", "--config", "config/governor.yaml")
    assert code == 0, err
    assert "ok (1 tenant)" in out


async def test_check_lists_every_problem_with_file_line_and_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", cap="two gigs")
    text = path.read_text().replace("timezone: Asia/Seoul", "timezone: Mars/Olympus")
    path.write_text(text)
    code, _out, err = await governor("check", "-c", str(path))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:")
    assert "defaults.timezone" in lines[0]
    assert "Mars/Olympus" in lines[0]
    assert "tenants.site.daily_cap" in lines[1]
    assert "Traceback" not in err


async def test_missing_file_and_bad_arguments_are_clear(tmp_path: Path) -> None:
    code, _, err = await governor("check", "-c", str(tmp_path / "nope.yaml"))
    assert code == 1
    assert "nope.yaml" in err
    assert "Traceback" not in err
    code, _, err = await governor("serve")
    assert code == 2
    assert "--config" in err
    code, out, _ = await governor("--version")
    assert code == 0
    assert out.startswith("governor ")


async def test_serve_counts_survives_sigterm_and_usage_reports_it(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, cap="50 KiB", flush_interval="10s")
    served = await serve(path)
    received = 0
    for _ in range(3):
        received += await served.get("/bytes/20000")
    assert await served.get("/bytes/1") == -503
    served.proc.send_signal(signal.SIGTERM)
    assert await served.proc.wait() == 0  # drained, flushed (long before the 10 s interval)
    code, out, err = await governor("usage", "-c", str(path), "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["tenant"] == "site"
    assert row["used_bytes"] == received
    assert row["cap_bytes"] == 50 * 1024
    assert row["blocked"] is True
    assert row["resets_at"].endswith("+09:00")
    assert len(row["period"]) == 10
    code, out, _ = await governor("usage", "-c", str(path))
    assert code == 0
    assert "BLOCKED" in out
    assert "site" in out


async def test_sighup_reloads_a_valid_file_and_rejects_an_invalid_one(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, cap="10 KiB")
    served = await serve(path)
    await served.get("/bytes/20000")
    assert await served.get("/bytes/1") == -503
    text = path.read_text()
    path.write_text(text.replace("daily_cap: 10 KiB", "daily_cap: 10 MiB"))
    served.proc.send_signal(signal.SIGHUP)
    await served.wait_for("reloaded")
    assert await served.get("/bytes/1") > 0
    path.write_text(text.replace("daily_cap: 10 KiB", "daily_cap: [1]"))
    served.proc.send_signal(signal.SIGHUP)
    line = await served.wait_for("reload rejected")
    problem = await served.wait_for("daily_cap")
    assert "ERROR" in line
    assert str(path) in problem
    assert await served.get("/bytes/1") > 0  # the old (raised) cap stays


async def test_kill_9_loses_at_most_one_flush_interval(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, flush_interval="200ms")
    served = await serve(path)
    flushed = 0
    for _ in range(5):
        flushed += await served.get("/bytes/10000")

    async def stored() -> int:
        code, out, _ = await governor("usage", "-c", str(path), "--json")
        assert code == 0
        return int(json.loads(out)[0]["used_bytes"])

    async def all_flushed() -> bool:  # another process: nothing to await
        return await stored() == flushed

    await eventually(all_flushed, timeout=10, what="the counts flushed")
    unflushed = await served.get("/bytes/10000")
    os.kill(served.proc.pid, signal.SIGKILL)
    await served.proc.wait()
    after = await stored()
    assert flushed <= after <= flushed + unflushed
    again = await serve(path)
    assert await again.get("/bytes/1") > 0
    again.proc.send_signal(signal.SIGTERM)
    assert await again.proc.wait() == 0
    assert await stored() > after


# -- check passes exactly what serve accepts, and both say FILE:LINE: key: what --------------


def line_of(path: Path, key: str) -> int:
    return next(
        n
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if line.startswith(f"{key}:")
    )


async def check_and_serve(path: Path) -> tuple[tuple[int, str], tuple[int, str]]:
    """(exit status, stderr) of ``check`` and of ``serve``, run side by side."""
    (c, _, check_err), (s, _, serve_err) = await asyncio.gather(
        governor("check", "-c", str(path)), governor("serve", "-c", str(path))
    )
    return (c, check_err), (s, serve_err)


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        (
            "redis://127.0.0.1:notaport/0",
            "the port must be an integer from 1 to 65535, not 'notaport'",
        ),
        ("redis://127.0.0.1:6379/abc", "the database must be a non-negative integer, not 'abc'"),
    ],
)
async def test_check_refuses_a_store_url_that_serve_refuses(
    tmp_path: Path, store: str, problem: str
) -> None:
    path = write_config(tmp_path, upstream="http://127.0.0.1:1", store=store)
    line = f"{path}:{line_of(path, 'store')}: store: {store!r}: {problem}"
    for code, err in await check_and_serve(path):
        assert (code, err.strip()) == (1, line)


async def test_check_and_serve_refuse_what_the_machine_cannot_give_in_the_same_words(
    tmp_path: Path,
) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "spool.json").mkdir()
    path = write_config(
        tmp_path,
        upstream="http://127.0.0.1:1",
        store="sqlite:///blocker/usage.db",
        access_log="/nonexistent/dir/access.log",
        spool="spool.json",
        admin_listen="192.0.2.1:9090",
    )
    (check_code, check_err), (serve_code, serve_err) = await check_and_serve(path)
    assert (check_code, serve_code) == (1, 1)
    assert check_err == serve_err
    keys = ["store", "spool", "access_log", "admin_listen"]
    lines = check_err.strip().splitlines()
    assert [line.split(": ")[1] for line in lines] == keys
    for line, key in zip(lines, keys, strict=True):
        assert line.startswith(f"{path}:{line_of(path, key)}: {key}: "), line
    assert lines[2].endswith(
        "cannot create /nonexistent/dir/access.log: the folder /nonexistent/dir does not exist"
    )
    assert "Traceback" not in check_err + serve_err
    assert not (tmp_path / "blocker.db").exists()


async def test_serve_names_the_key_of_a_port_in_use(tmp_path: Path) -> None:
    with held_port() as port:
        path = write_config(tmp_path, upstream="http://127.0.0.1:1", listen=f"127.0.0.1:{port}")
        (check_code, _), (serve_code, serve_err) = await check_and_serve(path)
        # check cannot tell another program from this governor, running: it passes
        assert check_code == 0
        assert serve_code == 1
        line = f"{path}:{line_of(path, 'listen')}: listen: cannot listen on 127.0.0.1:{port}"
        assert f"{line}: Address already in use" in serve_err.splitlines()
        assert "Traceback" not in serve_err
        admin = write_config(
            tmp_path,
            upstream="http://127.0.0.1:1",
            admin_listen=f"127.0.0.1:{port}",
            listen=f"127.0.0.1:{free_port()}",
        )
        code, _, err = await governor("serve", "-c", str(admin))
        assert code == 1
        line = f"{admin}:{line_of(admin, 'admin_listen')}: admin_listen: cannot listen on"
        assert f"{line} 127.0.0.1:{port}: Address already in use" in err.splitlines()


def test_the_console_script_runs_the_command() -> None:
    """``governor`` as installed (the README's `.venv/bin/governor`), not `python -m`."""
    script = Path(sys.executable).parent / "governor"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable}: governor is not installed here")
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("governor ")
    done = subprocess.run([str(script), "nonsense"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid choice: 'nonsense'" in done.stderr
