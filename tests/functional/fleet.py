"""A fleet-sized ``governor serve`` process and a timed request stream against it.

The scale tests run governor as a process of its own, so that what they time is
governor's event loop alone: not the test's client, and not a heap shared with pytest.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.functional.processes import Served, spawn_serve
from tests.support import RawClient, request, write_config


def write_fleet(folder: Path, *, upstream: str, tenants: int, cap: str, **top: Any) -> Path:
    """A config of ``site`` and ``tenants - 1`` others, ``t1`` … (hosts ``tI.test``)."""
    path = write_config(folder, upstream=upstream, cap=cap, **top)
    doc = yaml.safe_load(path.read_text())
    for i in range(1, tenants):
        doc["tenants"][f"t{i}"] = {"hosts": [f"t{i}.test"], "upstream": upstream, "daily_cap": cap}
    path.write_text(json.dumps(doc))  # JSON is YAML, and much quicker to write
    return path


def with_cap(path: Path, cap: str) -> None:
    """Give every tenant of the fleet at ``path`` a new daily_cap."""
    doc = json.loads(path.read_text())
    for tenant in doc["tenants"].values():
        tenant["daily_cap"] = cap
    path.write_text(json.dumps(doc))


@asynccontextmanager
async def serve_fleet(path: Path, *, admin: bool = False) -> AsyncIterator[Served]:
    """``governor serve`` on ``path``, once it listens (and its admin listener, if asked)."""
    port = int(json.loads(path.read_text())["listen"].rsplit(":", 1)[1])
    proc = await spawn_serve(path)
    served = Served(proc, port)
    try:
        assert proc.stderr is not None
        waiting = {"governor listening on"} | ({"admin listening on"} if admin else set())
        async with asyncio.timeout(150):  # loading a fleet on a busy machine
            while waiting:
                line = (await proc.stderr.readline()).decode()
                assert line, f"governor exited before it was ready: {served.log}"
                served.log.append(line)
                waiting = {w for w in waiting if w not in line}
        yield served
    finally:
        proc.terminate()
        await proc.wait()


async def stream(
    port: int, hosts: list[str], *, count: int, until: asyncio.Event | None = None
) -> list[float]:
    """Requests on one keep-alive connection, round robin over ``hosts``: each one's wait.

    ``count`` requests, or (with ``until``) at least ``count`` and on until it is set.
    """
    client = await RawClient.connect(port)
    waits: list[float] = []
    try:
        while len(waits) < count or (until is not None and not until.is_set()):
            started = time.perf_counter()
            await client.send(request("GET", "/bytes/1024", hosts[len(waits) % len(hosts)]))
            resp = await client.response()
            waits.append(time.perf_counter() - started)
            assert resp.status == 200
    finally:
        await client.close()
    return waits
