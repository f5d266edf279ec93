"""``Type=notify``: governor serve tells a real sd_notify socket it is ready, reloading, stopping.

The test plays systemd: it binds an AF_UNIX datagram socket, starts ``governor serve`` with
``NOTIFY_SOCKET`` pointing at it, and reads the datagrams with the sender's credentials
(``SO_PASSCRED``), so it knows which process sent each one.
"""

from __future__ import annotations

import array
import asyncio
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.functional.processes import REPO, Served, listen_port
from tests.support import write_config

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_PASSCRED and abstract sockets are Linux's"
)


@dataclass(frozen=True)
class Message:
    pid: int
    fields: dict[str, str]


class Notifications:
    """The service manager's end: a datagram socket that learns each sender's pid."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # what NOTIFY_SOCKET says

    async def next(self) -> Message:
        """The next datagram; the socket's own timeout (20 s) bounds the wait."""
        self.sock.settimeout(20)
        data, ancdata, _, _ = await asyncio.to_thread(
            self.sock.recvmsg, 4096, socket.CMSG_SPACE(struct.calcsize("3i"))
        )
        return self._message(data, ancdata)

    def rest(self) -> list[Message]:
        """Whatever is still queued, without waiting."""
        self.sock.setblocking(False)
        out: list[Message] = []
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(struct.calcsize("3i"))
                )
            except BlockingIOError:
                return out
            out.append(self._message(data, ancdata))

    @staticmethod
    def _message(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> Message:
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[: struct.calcsize("3i")])[0]
        lines = data.decode().splitlines()
        return Message(pid, dict(line.split("=", 1) for line in lines))


def _receiver(address: str, bind_to: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(bind_to)
    return sock


@pytest.fixture
def by_path() -> Iterator[Notifications]:
    folder = tempfile.mkdtemp(prefix="gov-sd-")  # short: AF_UNIX paths are limited
    path = os.path.join(folder, "notify")
    with _receiver(path, path) as sock:
        yield Notifications(sock, path)
    os.unlink(path)
    os.rmdir(folder)


@pytest.fixture
def abstract() -> Iterator[Notifications]:
    name = f"governor-test-{os.getpid()}-{time.monotonic_ns()}"
    with _receiver("@" + name, "\0" + name) as sock:
        yield Notifications(sock, "@" + name)


async def spawn(config: Path, notify_socket: str) -> Served:
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "governor",
        "serve",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    return Served(proc, listen_port(config))


async def port_answers(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def finish(served: Served) -> int:
    """Read the log to its end (the pipe must not fill) and reap the process."""
    assert served.proc.stderr is not None
    async with asyncio.timeout(30):
        while line := (await served.proc.stderr.readline()).decode():
            served.log.append(line)
        return await served.proc.wait()


async def test_one_process_ready_reloading_stopping(
    tmp_path: Path, upstream_url: str, by_path: Notifications
) -> None:
    served = await spawn(write_config(tmp_path, upstream=upstream_url), by_path.address)
    try:
        ready = await by_path.next()
        assert ready.fields.get("READY") == "1", ready
        assert ready.pid == served.proc.pid
        assert await port_answers(served.port), "READY=1 came before the port answered"

        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        served.proc.send_signal(signal.SIGHUP)
        reloading = await by_path.next()
        assert reloading.fields.get("RELOADING") == "1", reloading
        assert int(reloading.fields["MONOTONIC_USEC"]) >= before
        assert (await by_path.next()).fields.get("READY") == "1"
        await served.wait_for("reloaded")

        served.proc.send_signal(signal.SIGTERM)
        stopping = await by_path.next()
        assert stopping.fields.get("STOPPING") == "1", stopping
        assert await finish(served) == 0
        assert by_path.rest() == []
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()


async def test_workers_only_the_supervisor_notifies(
    tmp_path: Path, upstream_url: str, abstract: Notifications
) -> None:
    config = write_config(tmp_path, upstream=upstream_url, workers=2)
    served = await spawn(config, abstract.address)
    try:
        ready = await abstract.next()
        assert ready.fields.get("READY") == "1", ready
        assert ready.pid == served.proc.pid, "READY=1 must come from the supervisor"
        assert await port_answers(served.port)
        ready_lines = [line for line in served.log if " ready (pid " in line]
        ready_lines += await served_ready_lines(served, 2 - len(ready_lines))
        assert len(ready_lines) == 2, "READY=1 before both workers were ready"

        served.proc.send_signal(signal.SIGTERM)
        stopping = await abstract.next()
        assert stopping.fields.get("STOPPING") == "1", stopping
        assert stopping.pid == served.proc.pid
        assert await finish(served) == 0
        rest = abstract.rest()
        assert rest == [], f"workers (or the supervisor) sent more: {rest}"
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()


async def served_ready_lines(served: Served, count: int) -> list[str]:
    """The next ``count`` "worker N ready" lines; they were logged before READY=1 was sent."""
    return [await served.wait_for(" ready (pid ") for _ in range(count)]
