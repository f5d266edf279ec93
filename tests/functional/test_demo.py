"""`make run` as a newcomer meets it: the demo site behind governor on the shipped config.

Each test runs what ``make run`` runs: ``deploy/demo-site/serve.py --port SITE_PORT --
governor serve`` with ``SITE_PORT`` in the environment, on a copy of ``config/`` whose
``listen`` and ``admin_listen`` are moved to free ports (nothing else changes: the cap,
the notice, the token and the ``"${SITE_PORT-8000}"`` upstream are the shipped ones).
The demo must block by reloading, in a real browser and in a client that revalidates as
browsers do, at the count the demo page and the README give; a port already in use must
stop everything with one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.functional.chromium import browser, needs_chromium
from tests.support import RawClient, free_port, held_port, request

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / "deploy" / "demo-site" / "serve.py"
PAGE = REPO / "deploy" / "demo-site" / "www" / "index.html"
DEMO_RELOADS = 14  # the reload that shows the notice, as the demo page and the README say
START_TIMEOUT = 20.0


@dataclass
class Demo:
    """A running ``serve.py -- governor serve`` and the ports it uses."""

    proc: asyncio.subprocess.Process
    config: Path
    port: int
    admin_port: int
    site_port: int
    log: list[str] = field(default_factory=list)
    governor_pid: int | None = None  # the launcher's child, in a process group of its own

    async def wait_for(self, text: str) -> str:
        """The next log line holding ``text`` (the demo site's and governor's stderr)."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                assert line, f"exited before logging {text!r}: {self.log}"
                self.log.append(line)
                if text in line:
                    return line

    async def finish(self) -> tuple[int, str]:
        """Exit status and the rest of the log, once the process ends."""
        async with asyncio.timeout(START_TIMEOUT):
            _, rest = await self.proc.communicate()
        assert self.proc.returncode is not None
        self.log.append(rest.decode() if rest else "")
        return self.proc.returncode, "".join(self.log)


def demo_config(folder: Path, *, port: int, admin_port: int) -> Path:
    """The shipped config/, copied, with only listen and admin_listen moved."""
    shutil.copytree(REPO / "config", folder)
    path = folder / "governor.yaml"
    text = path.read_text(encoding="utf-8")
    for old, new in (
        ("\nlisten: 127.0.0.1:8080\n", f"\nlisten: 127.0.0.1:{port}\n"),
        ("\nadmin_listen: 127.0.0.1:9090\n", f"\nadmin_listen: 127.0.0.1:{admin_port}\n"),
    ):
        assert old in text, f"config/governor.yaml no longer has {old.strip()!r}"
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


async def start_demo(config: Path, *, port: int, admin_port: int, site_port: int) -> Demo:
    """``make run``'s last command, SITE_PORT in the environment as make sets it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SERVE),
        "--port",
        str(site_port),
        "--",
        sys.executable,
        "-m",
        "governor",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SITE_PORT": str(site_port)},
        cwd=REPO,
        start_new_session=True,  # a process group of its own, as make's in a terminal
    )
    return Demo(proc, config, port, admin_port, site_port)


async def stop_demo(demo: Demo) -> None:
    if demo.proc.returncode is None:
        demo.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await demo.proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.proc.pid, signal.SIGKILL)
            await demo.proc.wait()
    # A launcher that died (a test that fails by killing it) leaves governor behind, in its
    # own process group: never let it outlive the test.
    if demo.governor_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.governor_pid, signal.SIGKILL)


def launched(demo: Demo) -> int:
    """The pid of governor, the launcher's one child."""
    (pid,) = map(
        int, Path(f"/proc/{demo.proc.pid}/task/{demo.proc.pid}/children").read_text().split()
    )
    return pid


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    port, admin_port, site_port = free_port(), free_port(), free_port()
    config = demo_config(tmp_path / "config", port=port, admin_port=admin_port)
    running = await start_demo(config, port=port, admin_port=admin_port, site_port=site_port)
    try:
        await running.wait_for("governor listening on")
        running.governor_pid = launched(running)
        yield running
    finally:
        await stop_demo(running)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# -- the count ---------------------------------------------------------------------------------


def test_the_page_and_the_readme_give_the_same_count() -> None:
    said = f"the {DEMO_RELOADS}th reload"
    page = re.sub(r"\s+", " ", PAGE.read_text(encoding="utf-8"))
    readme = re.sub(r"\s+", " ", (REPO / "README.md").read_text(encoding="utf-8"))
    assert said in page.lower()
    opening = readme.split("---", 1)[0]
    assert said in opening.lower()


async def test_a_client_that_revalidates_like_a_browser_is_blocked_at_the_stated_reload(
    demo: Demo,
) -> None:
    """Each reload sends the validators of the last full response, as a browser does, so a
    site that answers 304 would cost a few hundred bytes a reload and never reach the cap."""
    validators: dict[str, str] = {}
    statuses: list[int] = []
    for _ in range(3 * DEMO_RELOADS):
        headers = [f"{name}: {value}" for name, value in validators.items()]
        client = await RawClient.connect(demo.port)
        await client.send(request("GET", "/", f"localhost:{demo.port}", *headers))
        resp = await client.response()
        await client.close()
        statuses.append(resp.status)
        if resp.status == 503:
            break
        assert resp.status in (200, 304), statuses
        if resp.status == 200:
            for sent, received in (
                ("If-Modified-Since", "Last-Modified"),
                ("If-None-Match", "ETag"),
            ):
                value = resp.header(received)
                if value is not None:
                    validators[sent] = value
    reload = len(statuses) - 1  # the first view is a load, not a reload
    assert statuses[-1] == 503, f"never blocked in {len(statuses)} views: {statuses}"
    assert reload == DEMO_RELOADS, statuses
    assert statuses[:-1] == [200] * DEMO_RELOADS
    assert b"cache-control: no-store" in resp.head.lower()  # the notice


@needs_chromium
async def test_chromium_reloading_the_demo_shows_the_notice_at_the_stated_reload(
    demo: Demo, tmp_path: Path
) -> None:
    # The status of the document the browser shows (200: the site, 503: the notice).
    shows = (
        "[performance.getEntriesByType('navigation')[0].responseStatus,"
        " document.documentElement.lang, document.title]"
    )
    url = f"http://localhost:{demo.port}/"
    async with browser(url, tmp_path / "profile") as page:
        seen = [await page.evaluate(shows)]
        for _ in range(3 * DEMO_RELOADS):
            if seen[-1][0] != 200:
                break
            await page.load("Page.reload")  # F5: a normal reload, the cache allowed
            seen.append(await page.evaluate(shows))
    statuses = [status for status, _, _ in seen]
    assert statuses[-1] == 503, f"still the site after {len(seen) - 1} reloads: {statuses}"
    assert statuses[:-1] == [200] * (len(seen) - 1), statuses
    assert len(seen) - 1 == DEMO_RELOADS, statuses
    _, lang, title = seen[-1]
    assert lang == "en"  # the notice, in the browser's language
    assert "daily data limit reached" in title


# -- ports in use ------------------------------------------------------------------------------


async def test_a_site_port_in_use_is_one_clear_line_and_nothing_starts(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with held_port() as taken:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SERVE),
            "--port",
            str(taken),
            "--",
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w')",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(START_TIMEOUT):
            out, err = await proc.communicate()
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert lines == [
        f"demo site: 127.0.0.1:{taken} is already in use by another program. If it is "
        "another `make run`, stop that one (it holds governor's ports too); otherwise run "
        f"the demo site on another port: make run SITE_PORT={taken + 1}"
    ]
    assert out == b""
    assert not marker.exists()  # governor never started in front of the other program


@pytest.mark.parametrize("which", ["listen", "admin_listen"])
async def test_a_governor_port_in_use_stops_the_site_with_a_clear_error(
    tmp_path: Path, which: str
) -> None:
    site_port = free_port()
    with held_port() as taken:
        ports = {"listen": free_port(), "admin_listen": free_port(), which: taken}
        config = demo_config(
            tmp_path / "config", port=ports["listen"], admin_port=ports["admin_listen"]
        )
        demo = await start_demo(
            config, port=ports["listen"], admin_port=ports["admin_listen"], site_port=site_port
        )
        try:
            code, log = await demo.finish()
        finally:
            await stop_demo(demo)
    assert code == 1
    assert f": {which}: cannot listen on 127.0.0.1:{taken}: Address already in use" in log
    assert f"the demo site on http://127.0.0.1:{site_port}/ is stopped too" in log
    assert "Traceback" not in log
    assert "ERROR" not in log  # nothing left half-open behind the message
    assert port_is_free(site_port)


async def test_ctrl_c_stops_governor_gracefully_and_then_the_site(demo: Demo) -> None:
    client = await RawClient.connect(demo.port)  # a page was seen: governor is serving
    await client.send(request("GET", "/", f"localhost:{demo.port}"))
    assert (await client.response()).status == 200
    await client.close()
    # Ctrl-C must reach governor once: a second SIGINT while it drains means "stop now"
    # and loses the final flush. So governor is not in the group the terminal signals,
    # and serve.py passes the one signal on.
    assert demo.governor_pid is not None
    assert os.getpgid(demo.governor_pid) != os.getpgid(demo.proc.pid)
    os.killpg(demo.proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
    code, log = await demo.finish()
    assert code == 0, log
    assert "governor: stopped" in log, log  # drained and flushed, not killed mid-way
    assert port_is_free(demo.site_port)
    assert port_is_free(demo.port)


async def test_sighup_to_the_demo_launcher_reloads_governor_and_both_keep_serving(
    demo: Demo,
) -> None:
    """The README's reload under make run, `pkill -HUP -f demo-site/serve.py`: the launcher
    passes SIGHUP on (its default action would end the launcher, and the site with it)."""
    text = demo.config.read_text(encoding="utf-8")
    assert "daily_cap: 200 KiB" in text
    demo.config.write_text(text.replace("daily_cap: 200 KiB", "daily_cap: 10 KiB"), "utf-8")
    os.kill(demo.proc.pid, signal.SIGHUP)
    await demo.wait_for("reloaded")
    client = await RawClient.connect(demo.port)
    await client.send(request("GET", "/", f"localhost:{demo.port}"))
    resp = await client.response()
    await client.close()
    assert resp.status == 503  # the 14 KB page no longer fits the new 10 KiB cap
    assert demo.proc.returncode is None
    assert not port_is_free(demo.site_port)
