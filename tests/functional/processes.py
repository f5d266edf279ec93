"""Governor as a real process: the CLI run to completion, and ``serve`` waited on by its log."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from tests.support import RawClient, request

REPO = Path(__file__).resolve().parents[2]


async def governor(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "governor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def spawn_serve(config: Path) -> asyncio.subprocess.Process:
    """``governor serve --config CONFIG`` as a child whose stderr the test reads."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "governor",
        "serve",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )


def listen_port(config: Path) -> int:
    """The proxy port a config written by ``write_config`` listens on (its first listener's)."""
    listen = yaml.safe_load(config.read_text())["listen"]
    first = listen[0] if isinstance(listen, list) else listen
    address = first["address"] if isinstance(first, dict) else first
    return int(str(address).rsplit(":", 1)[1])


class Served:
    """A ``governor serve`` process whose log lines the test waits on."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.log: list[str] = []

    async def wait_for(self, text: str) -> str:
        assert self.proc.stderr is not None
        async with asyncio.timeout(20):
            while True:
                line = (await self.proc.stderr.readline()).decode()
                assert line, f"governor exited before logging {text!r}: {self.log}"
                self.log.append(line)
                if text in line:
                    return line

    async def get(self, path: str) -> int:
        client = await RawClient.connect(self.port)
        await client.send(request("GET", path, "site.test"))
        resp = await client.response()
        await client.close()
        return client.received if resp.status == 200 else -resp.status


ServeFactory = Callable[[Path], Awaitable[Served]]
