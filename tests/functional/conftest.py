"""Fixtures for functional tests: a real upstream and governors on loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from governor.config import load_config
from governor.process.instance import Governor
from tests.functional.processes import Served, ServeFactory, listen_port, spawn_serve
from tests.functional.upstream_app import SEEN, Seen, make_upstream
from tests.support import FakeClock, seoul, write_config


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    """A real aiohttp site on a loopback port."""
    return await aiohttp_server(make_upstream(), host="127.0.0.1")


@pytest.fixture
def seen(upstream: TestServer) -> Seen:
    """What the upstream saw."""
    return upstream.app[SEEN]


@pytest.fixture
def upstream_url(upstream: TestServer) -> str:
    return f"http://127.0.0.1:{upstream.port}"


@pytest.fixture
def clock() -> FakeClock:
    """Midday in Seoul on 2024-02-21, moved by hand."""
    return FakeClock(seoul(2024, 2, 21, 12, 0))


GovernorFactory = Callable[..., Awaitable[Governor]]


@pytest.fixture
async def make_governor(
    tmp_path: Path, upstream_url: str, clock: FakeClock
) -> AsyncIterator[GovernorFactory]:
    """Start governors in-process on port 0; every one is stopped at teardown."""
    started: list[Governor] = []

    async def make(path: Path | None = None, **options: Any) -> Governor:
        options.setdefault("upstream", upstream_url)
        config_path = path or write_config(tmp_path, **options)
        gov = Governor(load_config(config_path), clock=clock)
        await gov.start()
        started.append(gov)
        return gov

    yield make
    for gov in started:
        await gov.stop()


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(config: Path) -> Served:
        proc = await spawn_serve(config)
        procs.append(proc)
        served = Served(proc, listen_port(config))
        await served.wait_for("governor listening on")
        return served

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
