"""Several governors on one real Redis: shared totals, a shared cap, and Redis outages.

Every Redis here is a real ``redis-server`` on a loopback port of its own
(tests/redis_servers.py); outages are real: SIGSTOP, and SIGKILL then a restart
on the same port (with an fsynced AOF, as a production Redis would keep data).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import Served, ServeFactory, governor
from tests.functional.upstream_app import Seen
from tests.redis_servers import RedisServer, have_redis
from tests.support import RawClient, eventually, request, write_config

pytestmark = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")

PERIOD_KEY = "governor:{site}:2024-02-21"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", durable=True) as server:
        yield server


def stored(server: RedisServer, key: str) -> int:
    value = server.client().get(key)
    return int(value) if value is not None else 0


async def fetch(port: int, path: str = "/bytes/10000", host: str = "site.test") -> tuple[int, int]:
    """(status, bytes received) of one request on a fresh connection."""
    client = await RawClient.connect(port)
    await client.send(request("GET", path, host))
    resp = await client.response()
    await client.close()
    return resp.status, client.received


async def settle(gov: Governor) -> None:
    """Flush until everything counted is in the store (bounded)."""

    async def settled() -> bool:
        await gov.flusher.flush()
        return gov.runtime.store_ok and gov.runtime.ledger.pending_bytes() == 0

    await eventually(settled, timeout=20, what="every count in the store")


async def test_three_processes_share_one_total(
    serve: ServeFactory,
    tmp_path: Path,
    upstream_url: str,
    seen: Seen,
    redis_server: RedisServer,
) -> None:
    instances: list[Served] = []
    for i in range(3):
        folder = tmp_path / f"gov{i}"
        folder.mkdir()
        path = write_config(
            folder, upstream=upstream_url, store=redis_server.url, flush_interval="100ms"
        )
        instances.append(await serve(path))
    received = 0

    async def drive(inst: Served) -> int:
        total = 0
        for _ in range(30):
            status, n = await fetch(inst.port)
            assert status == 200
            total += n
        return total

    received = sum(await asyncio.gather(*(drive(inst) for inst in instances)))
    for inst in instances:
        inst.proc.send_signal(signal.SIGTERM)
    for inst in instances:
        assert await inst.proc.wait() == 0
    code, out, err = await governor(
        "usage", "-c", str(tmp_path / "gov0" / "governor.yaml"), "--json"
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["used_bytes"] == received


async def test_the_cap_holds_across_instances_within_one_flush_interval(
    make_governor: GovernorFactory, redis_server: RedisServer
) -> None:
    interval = 0.1
    cap = 8_000_000
    govs = [
        await make_governor(store=redis_server.url, flush_interval=f"{interval}s", cap=str(cap))
        for _ in range(3)
    ]
    served: list[tuple[float, int]] = []
    started = time.monotonic()

    async def drive(gov: Governor) -> None:
        for _ in range(2000):
            status, n = await fetch(gov.port)
            if status != 200:
                return
            served.append((time.monotonic(), n))
        raise AssertionError("never blocked")

    await asyncio.gather(*(drive(g) for g in govs))
    for gov in govs:
        await settle(gov)
    total = sum(n for _, n in served)
    assert stored(redis_server, PERIOD_KEY) == total  # exact, across the three
    rate = total / (time.monotonic() - started)
    overshoot = total - cap
    # Instances learn each other's bytes through the store; near the cap they
    # flush every tenth of an interval, so the overshoot is well within what the
    # fleet serves in one flush interval (plus the responses already in flight).
    assert 0 <= overshoot <= interval * rate + 3 * 10_400, (overshoot, rate)


@dataclass
class Load:
    """What :func:`run_load` has done so far, read by the test while it runs."""

    ok: int = 0
    failed: int = 0
    received: int = 0  # bytes received by the ok ones


async def run_load(gov: Governor, stop: asyncio.Event, load: Load) -> tuple[int, int, int]:
    """Requests until ``stop``: (ok, failed, bytes received by ok ones)."""

    async def one_client() -> None:
        for _ in range(100_000):
            if stop.is_set():
                return
            try:
                status, n = await fetch(gov.port, "/bytes/2000")
            except (ConnectionError, AssertionError):
                load.failed += 1
                continue
            if status == 200:
                load.ok += 1
                load.received += n
            else:
                load.failed += 1

    await asyncio.gather(*(one_client() for _ in range(4)))
    return load.ok, load.failed, load.received


@pytest.mark.parametrize("fault", ["sigstop", "kill"])
async def test_redis_outage_under_load_fails_no_request_and_loses_no_byte(
    make_governor: GovernorFactory, redis_server: RedisServer, fault: str
) -> None:
    gov = await make_governor(store=redis_server.url, flush_interval="100ms", store_timeout="200ms")
    stop, progress = asyncio.Event(), Load()
    load = asyncio.get_running_loop().create_task(run_load(gov, stop, progress))
    before = gov.runtime.store_errors
    if fault == "sigstop":
        redis_server.pause()
    else:
        await asyncio.to_thread(redis_server.kill)
    served = progress.ok

    def outage_under_load() -> bool:  # flushes fail again and again, requests keep flowing
        return (
            gov.runtime.store_errors >= before + 3
            and not gov.runtime.store_ok
            and progress.ok >= served + 50
        )

    await eventually(outage_under_load, timeout=20, what="3 failed flushes and 50 requests")
    assert gov.runtime.store_errors > before  # the flusher did see the outage
    assert not gov.runtime.store_ok
    if fault == "sigstop":
        redis_server.resume()
    else:
        await asyncio.to_thread(redis_server.start)
    served = progress.ok
    await eventually(  # and some load after it
        lambda: gov.runtime.store_ok and progress.ok >= served + 20,
        timeout=20,
        what="the store back and 20 requests more",
    )
    stop.set()
    ok, failed, received = await load
    assert failed == 0
    assert ok > 50
    await settle(gov)
    assert stored(redis_server, PERIOD_KEY) == received


async def test_closed_tenants_get_the_notice_while_redis_is_down(
    make_governor: GovernorFactory, redis_server: RedisServer
) -> None:
    gov = await make_governor(
        store=redis_server.url,
        flush_interval="100ms",
        store_timeout="200ms",
        tenant={"on_store_failure": "closed"},
    )
    assert (await fetch(gov.port))[0] == 200
    await asyncio.to_thread(redis_server.kill)
    await eventually(  # the flusher notices within an interval
        lambda: not gov.runtime.store_ok, timeout=10, what="the flusher seeing the outage"
    )
    assert (await fetch(gov.port))[0] == 503
    await asyncio.to_thread(redis_server.start)
    await settle(gov)
    assert (await fetch(gov.port))[0] == 200


async def test_a_stop_with_redis_down_spools_and_the_next_start_replays(
    tmp_path: Path, upstream_url: str, redis_server: RedisServer, seen: Seen
) -> None:
    from governor.config import load_config
    from tests.support import FakeClock, seoul

    clock = FakeClock(seoul(2024, 2, 21, 12, 0))
    path = write_config(
        tmp_path,
        upstream=upstream_url,
        store=redis_server.url,
        flush_interval="100ms",
        store_timeout="200ms",
    )
    gov = Governor(load_config(path), clock=clock)
    await gov.start()
    await settle(gov)
    received = 0
    for _ in range(5):
        status, n = await fetch(gov.port)
        assert status == 200
        received += n
    await asyncio.to_thread(redis_server.kill)
    await gov.stop()  # the final flush fails: the counts go to the spool
    spool = tmp_path / "state" / "spool.json"
    assert spool.exists()
    await asyncio.to_thread(redis_server.start)
    again = Governor(load_config(path), clock=clock)
    await again.start()
    try:
        assert stored(redis_server, PERIOD_KEY) == received
        assert not spool.exists()
    finally:
        await again.stop()
