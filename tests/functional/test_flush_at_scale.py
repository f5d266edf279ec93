"""Flushes follow traffic at fleet scale: two instances of a 20,000-tenant config on one
real Redis, 200 tenants active. Every byte reaches Redis exactly, and after the first
flush (the one that resumes the day) a flush sends only the keys this instance served:
counted in keys sent, never timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from governor.config.loader import load_config
from governor.config.model import ListenConfig
from governor.core.ledger import Batch, Key
from governor.process.instance import Governor
from governor.store.base import Store
from tests.redis_servers import RedisServer, have_redis
from tests.support import FakeClock, RawClient, eventually, free_port, request, write_config

pytestmark = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")

TENANTS = 20_000
ACTIVE = 200
PERIOD = "2024-02-21"  # the clock fixture's day in Seoul


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


class Sent:
    """What one governor's store was asked for: the keys of each flush and grants read."""

    def __init__(self, store: Store) -> None:
        self.flushes: list[set[Key]] = []
        self.grants: list[set[Key]] = []
        flush, grants = store.flush, store.grants

        async def recorded_flush(batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
            keys = list(read)
            self.flushes.append(set(keys) | set(batch.deltas if batch is not None else ()))
            return await flush(batch, keys)

        async def recorded_grants(keys: Iterable[Key]) -> dict[Key, int]:
            keys = list(keys)
            self.grants.append(set(keys))
            return await grants(keys)

        store.flush = recorded_flush  # type: ignore[method-assign]
        store.grants = recorded_grants  # type: ignore[method-assign]


def name(i: int) -> str:
    return f"t{i:05d}"


async def fetch(port: int, host: str, size: int) -> int:
    """Bytes received for one 200 response of ``size`` body bytes."""
    client = await RawClient.connect(port)
    await client.send(request("GET", f"/bytes/{size}", host))
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    return client.received


# Building 20,000 tenants' per-tenant metrics takes most of this test's time (helper S3
# makes them lazy); the flushes themselves are a small part.
@pytest.mark.timeout(300)
async def test_two_instances_of_20000_tenants_flush_only_what_they_served(
    tmp_path: Path, upstream_url: str, redis_server: RedisServer, clock: FakeClock
) -> None:
    # The YAML path is tested elsewhere; 20,000 tenants are built here in code (loading
    # them is helper S2's part, with its own test).
    path = write_config(tmp_path, upstream=upstream_url, store=redis_server.url)
    base = load_config(path)
    (site,) = base.tenants
    tenants = tuple(
        dataclasses.replace(site, name=name(i), hosts=(f"{name(i)}.test",)) for i in range(TENANTS)
    )
    # A flush interval far beyond the test: every flush but the first is the test's.
    config = dataclasses.replace(base, tenants=tenants, flush_interval=3600.0)
    govs = [
        Governor(
            dataclasses.replace(
                config, listeners=(ListenConfig(host="127.0.0.1", port=free_port()),)
            ),
            clock=clock,
        )
        for _ in range(2)
    ]
    for gov in govs:
        await gov.start()  # its first flush reads every tenant once: a restart resumes the day
    try:
        sent = [Sent(gov.runtime.store) for gov in govs]
        # Tenants 0..199 are active: even ones on instance 0, odd ones on 1, and the
        # first 20 on both (their fleet totals are shared through Redis).
        served: list[set[int]] = [set(), set()]
        for i in range(ACTIVE):
            served[i % 2].add(i)
            if i < 20:
                served[(i + 1) % 2].add(i)
        received: dict[str, int] = {}

        async def drive(which: int) -> None:
            for i in sorted(served[which]):
                n = await fetch(govs[which].port, f"{name(i)}.test", 1000 + i)
                received[name(i)] = received.get(name(i), 0) + n

        await asyncio.gather(drive(0), drive(1))

        async def settled() -> bool:
            for gov in govs:
                await gov.flusher.flush()
            return all(g.runtime.store_ok and g.runtime.ledger.pending_bytes() == 0 for g in govs)

        await eventually(settled, timeout=20, what="every count in Redis")
        for gov in govs:
            await gov.flusher.flush()  # both learn what the other sent last

        # Exact: every byte is in Redis once, and each instance knows the fleet's total
        # of every tenant it serves.
        r = redis_server.client()
        try:
            for i in range(ACTIVE):
                key = f"governor:{{{name(i)}}}:{PERIOD}"
                assert int(r.get(key) or 0) == received[name(i)], name(i)
            assert r.get(f"governor:{{{name(ACTIVE)}}}:{PERIOD}") is None  # an idle one
        finally:
            r.close()
        for which, gov in enumerate(govs):
            for i in served[which]:
                assert gov.runtime.ledger.used((name(i), PERIOD)) == received[name(i)]

        # Proportional to traffic: each flush after the first sent or read only the keys
        # its instance served, a few hundred of 20,000.
        for which in (0, 1):
            mine = {(name(i), PERIOD) for i in served[which]}
            assert sent[which].flushes, "no flush after the start"
            for keys in [*sent[which].flushes, *sent[which].grants]:
                assert keys <= mine
            assert sent[which].flushes[-1] == mine
            assert sent[which].grants[-1] == mine
            assert len(mine) <= ACTIVE
    finally:
        for gov in govs:
            await gov.stop()
