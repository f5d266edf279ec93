"""``workers: N``: a supervisor and N worker processes on one port, as an operator runs them.

Real processes, real signals, real loopback sockets, a real upstream. Readiness and
restarts are awaited on the processes' log lines (one stderr shared by the supervisor
and its workers), never on sleeps. Linux only: SO_REUSEPORT spreading and /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.functional.processes import governor, listen_port, spawn_serve
from tests.functional.upstream_app import Seen
from tests.support import RawClient, eventually, request, write_config

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreading and /proc are Linux's"
)

WORKER_PID = re.compile(r"worker (\d+) (?:started|restarted) \(pid (\d+)\)")


async def stored(config: Path) -> int:
    """The tenant's bytes today, as ``governor usage --json`` reads them from the store."""
    code, out, err = await governor("usage", "-c", str(config), "--json")
    assert code == 0, err
    return int(json.loads(out)[0]["used_bytes"])


async def until_stored(config: Path, expected: int) -> None:
    """Wait until every worker has flushed: the store holds exactly ``expected``."""

    async def holds() -> bool:  # other processes: nothing to await
        return await stored(config) == expected

    await eventually(holds, timeout=10, what=f"{expected} bytes in the store")


class Supervised:
    """A ``governor serve`` supervisor; its stderr carries its workers' lines too."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.log: list[str] = []

    async def wait_for(self, text: str, count: int = 1) -> list[str]:
        """The next ``count`` lines that contain ``text``."""
        assert self.proc.stderr is not None
        found: list[str] = []
        async with asyncio.timeout(20):
            while len(found) < count:
                line = (await self.proc.stderr.readline()).decode()
                assert line, f"governor exited before logging {text!r}: {''.join(self.log)}"
                self.log.append(line)
                if text in line:
                    found.append(line)
        return found

    async def until_eof(self) -> None:
        """Read the rest of the log, until every process writing it has exited."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(20):
            while line := (await self.proc.stderr.readline()).decode():
                self.log.append(line)

    def workers(self) -> dict[int, int]:
        """Worker index → pid, as the supervisor last logged them."""
        pids: dict[int, int] = {}
        for line in self.log:
            if m := WORKER_PID.search(line):
                pids[int(m[1])] = int(m[2])
        return pids

    async def get(self, path: str) -> int:
        """Bytes received for one request on a new connection (-status unless 200)."""
        client = await RawClient.connect(self.port)
        await client.send(request("GET", path, "site.test"))
        resp = await client.response()
        await client.close()
        return client.received if resp.status == 200 else -resp.status


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``, from /proc/*/stat."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def accepted_connections(pid: int, port: int) -> int:
    """How many established connections to local ``port`` process ``pid`` holds.

    The kernel's table of TCP sockets (/proc/net/tcp: local address, state, inode)
    joined with the process's descriptors (/proc/PID/fd: socket:[inode]).
    """
    inodes = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    held = 0
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            held += os.readlink(fd) in inodes
    return held


Start = Callable[[Path], Awaitable[Supervised]]


@pytest.fixture
async def supervise() -> AsyncIterator[Start]:
    """Start supervisors; each is ready once it logged every worker ready."""
    started: list[Supervised] = []

    async def start(config: Path) -> Supervised:
        proc = await spawn_serve(config)
        port = listen_port(config)
        sup = Supervised(proc, port)
        started.append(sup)
        (line,) = await sup.wait_for("supervising")
        n = int(line.split("supervising ")[1].split()[0])
        await sup.wait_for(" ready (pid ", count=n)  # the supervisor got each one's ready byte
        return sup

    yield start
    for sup in started:
        workers = set(sup.workers().values())
        if sup.proc.returncode is None:
            # SIGTERM lets the supervisor remove its metrics directory; SIGKILL if it hangs.
            sup.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await sup.proc.wait()
            except TimeoutError:
                sup.proc.kill()  # its workers see their channel close and stop by themselves
                await sup.proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while any(alive(pid) for pid in workers):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # teardown, best effort: other processes
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_two_workers_share_the_port_and_both_serve(
    supervise: Start, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, workers=2)
    sup = await supervise(path)
    pids = sup.workers()
    assert sorted(pids) == [0, 1]
    assert set(pids.values()) == children(sup.proc.pid)  # the supervisor's children, no others
    # 32 keep-alive connections, each with a request answered, all left open: each one
    # was accepted and served by exactly one worker, which still holds it. The kernel
    # spreads connections by a hash of the address pair, so every one landing on the
    # same worker would happen with probability 2 * 2**-32.
    clients = []
    try:
        for _ in range(32):
            client = await RawClient.connect(sup.port)
            clients.append(client)
            await client.send(request("GET", "/bytes/100", "site.test"))
            assert (await client.response()).status == 200
        held = {i: accepted_connections(pid, sup.port) for i, pid in pids.items()}
    finally:
        for client in clients:
            await client.close()
    assert sum(held.values()) == 32, held
    assert min(held.values()) >= 1, held
    assert sum("worker 0 governor: governor listening" in line for line in sup.log) == 1
    assert sum("worker 1 governor: governor listening" in line for line in sup.log) == 1


async def test_a_killed_worker_is_replaced_and_every_byte_is_counted(
    supervise: Start, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, workers=2, flush_interval="100ms")
    sup = await supervise(path)
    before = sup.workers()
    received = 0
    for _ in range(16):
        n = await sup.get("/bytes/5000")
        assert n > 5000
        received += n
    # Every worker has written its counts and nothing is in flight: the kill loses nothing.
    await until_stored(path, received)
    victim = before[1]
    os.kill(victim, signal.SIGKILL)
    (died,) = await sup.wait_for(f"worker 1 (pid {victim}) died")
    assert "killed by SIGKILL" in died
    (restarted,) = await sup.wait_for("worker 1 restarted (pid")
    await sup.wait_for(f"worker 1 ready (pid {sup.workers()[1]})")
    since = sup.log[sup.log.index(restarted) :]
    assert any("worker 1 governor: governor listening on" in line for line in since)
    after = sup.workers()
    assert after[0] == before[0]
    assert after[1] != victim
    assert str(after[1]) in restarted
    assert children(sup.proc.pid) == {after[0], after[1]}
    for _ in range(16):
        n = await sup.get("/bytes/5000")
        assert n > 5000
        received += n
    sup.proc.send_signal(signal.SIGTERM)
    assert await sup.proc.wait() == 0  # both drained and flushed
    assert await stored(path) == received


async def test_a_crash_looping_worker_backs_off_more_each_time(
    supervise: Start, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, workers=2)
    sup = await supervise(path)
    good = path.read_text()
    path.write_text(good.replace("daily_cap: 1 GiB", "daily_cap: lots"))  # restarts fail
    os.kill(sup.workers()[1], signal.SIGKILL)
    await sup.wait_for("(crash loop: 3 quick deaths in a row)")
    deaths = [line for line in sup.log if "worker 1 (pid" in line and " died: " in line]
    assert "killed by SIGKILL" in deaths[0]
    assert all("exit status 1" in line for line in deaths[1:])
    delays = [float(line.split("restarting in ")[1].split()[0]) for line in deaths]
    assert delays == [0.1, 0.2, 0.4]
    assert await sup.get("/bytes/1") > 0  # worker 0 serves meanwhile
    path.write_text(good)
    await sup.wait_for("worker 1 ready (pid")
    sup.proc.send_signal(signal.SIGTERM)
    assert await sup.proc.wait() == 0


async def test_sighup_reloads_every_worker(
    supervise: Start, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, workers=2, cap="10 KiB")
    sup = await supervise(path)
    assert await sup.get("/bytes/20000") > 20000
    # Both workers learn the shared total at their next flush: then every request is refused.

    async def all_refused() -> bool:
        return [await sup.get("/bytes/1") for _ in range(8)] == [-503] * 8

    await eventually(all_refused, timeout=10, what="both workers refusing")
    text = path.read_text()
    path.write_text(text.replace("daily_cap: 10 KiB", "daily_cap: 10 MiB"))
    sup.proc.send_signal(signal.SIGHUP)
    lines = await sup.wait_for("governor: reloaded", count=2)
    assert any("worker 0 " in line for line in lines)
    assert any("worker 1 " in line for line in lines)
    for _ in range(8):
        assert await sup.get("/bytes/1") > 0  # the raised cap, in whichever worker
    sup.proc.send_signal(signal.SIGTERM)
    assert await sup.proc.wait() == 0


async def test_a_port_in_use_is_refused_with_a_clear_message(
    supervise: Start, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, workers=2)
    sup = await supervise(path)
    listen = f"127.0.0.1:{sup.port}"
    for name, workers in (("single", 1), ("supervisor", 2)):
        other = tmp_path / name
        other.mkdir()
        config = write_config(other, upstream=upstream_url, listen=listen, workers=workers)
        code, _out, err = await governor("serve", "-c", str(config))
        assert code == 1, err
        message = f"listen: cannot listen on {listen}: Address already in use"
        assert f"{config}:1: {message}" in err.splitlines()  # the file, the line, the key
        assert "Traceback" not in err
    assert await sup.get("/bytes/1") > 0  # the running workers kept the port to themselves
    sup.proc.send_signal(signal.SIGTERM)
    assert await sup.proc.wait() == 0


async def test_workers_stop_and_flush_when_the_supervisor_is_killed(
    supervise: Start, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, workers=2, flush_interval="10s")
    sup = await supervise(path)
    pids = set(sup.workers().values())
    received = 0
    for _ in range(8):
        received += await sup.get("/bytes/5000")
    sup.proc.kill()
    await sup.until_eof()  # the workers hold the pipe open until they exit
    assert sum("governor: the supervisor is gone: stopping" in line for line in sup.log) == 2
    assert sum("governor: stopped" in line for line in sup.log) == 2
    await eventually(
        lambda: not any(alive(pid) for pid in pids), timeout=10, what="every worker gone"
    )
    assert await sup.proc.wait() == -signal.SIGKILL
    assert await stored(path) == received  # no orphans, and their final flush (not the 10 s one)
