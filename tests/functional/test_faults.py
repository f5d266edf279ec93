"""Faults on governor's links, injected by our own TCP proxy (tests/faults.py).

Between governor and the upstream: the upstream dies mid-body (a TCP reset),
stalls, is slow, or refuses. Between governor and Redis: Redis stalls. What a
visitor sees, and what is counted, must stay exact through each.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from governor.process.instance import Governor
from tests.faults import FaultProxy
from tests.functional.conftest import GovernorFactory
from tests.functional.test_metering import used
from tests.functional.upstream_app import Seen, pattern
from tests.redis_servers import RedisServer, have_redis
from tests.support import RawClient, eventually, request


@pytest.fixture
async def faults(upstream: TestServer) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the real upstream."""
    assert upstream.port is not None
    async with FaultProxy("127.0.0.1", upstream.port) as proxy:
        yield proxy


async def fetch(gov: Governor, path: str) -> tuple[RawClient, int, bool, bytes]:
    """One GET on a fresh connection: (client, status, complete, body), read to the close."""
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", path, "site.test"))
    resp = await client.response()
    if not resp.complete or resp.header("Connection") == "close":
        await client.read_to_eof()
    await client.close()
    return client, resp.status, resp.complete, resp.body


@pytest.mark.parametrize("path", ["/bytes/300000", "/chunked/300000"])
async def test_upstream_reset_mid_body_truncates_the_client_and_counts_exactly(
    make_governor: GovernorFactory, faults: FaultProxy, path: str
) -> None:
    gov = await make_governor(upstream=f"http://{faults.address}")
    faults.reset_after(100_000)  # the head and part of the body, then an RST
    client, status, complete, body = await fetch(gov, path)
    assert status == 200
    assert not complete  # no clean end of body: the visitor knows it is truncated
    assert 0 < len(body) < 300_000
    assert body == pattern(300_000)[: len(body)]  # what did arrive is the right bytes
    assert used(gov) == client.received  # every byte the visitor got, and no more
    faults.clear()  # and the next request, on a new upstream connection, is whole
    again, status, complete, body = await fetch(gov, path)
    assert (status, complete, body) == (200, True, pattern(300_000))
    assert used(gov) == client.received + again.received


async def test_a_stalled_upstream_gets_504_within_the_timeout(
    make_governor: GovernorFactory, faults: FaultProxy, seen: Seen
) -> None:
    gov = await make_governor(
        upstream=f"http://{faults.address}", timeouts={"upstream_response": "300ms"}
    )
    faults.stall()
    started = time.monotonic()
    client, status, _, body = await fetch(gov, "/bytes/10")
    elapsed = time.monotonic() - started
    assert status == 504
    assert b"did not answer in time" in body
    assert 0.3 <= elapsed < 1.3
    assert seen.hits == 0  # the stall held the request back: nothing reached the upstream
    assert used(gov) == client.received  # governor's own 504 crossed the wire: charged
    faults.resume()
    faults.reset_all()  # drop the stalled link (the request it held may still arrive)
    _, status, complete, body = await fetch(gov, "/bytes/10")
    assert (status, complete, body) == (200, True, pattern(10))


async def test_latency_is_added_not_fatal_and_a_refusing_upstream_gets_502(
    make_governor: GovernorFactory, faults: FaultProxy
) -> None:
    gov = await make_governor(upstream=f"http://{faults.address}")
    faults.latency = 0.2
    started = time.monotonic()
    _, status, complete, body = await fetch(gov, "/bytes/50000")
    assert (status, complete, body) == (200, True, pattern(50000))
    assert time.monotonic() - started >= 0.4  # held each way
    faults.clear()
    faults.reset_all()  # pooled connections go too
    await faults.refuse()
    client, status, _, body = await fetch(gov, "/bytes/10")
    assert status == 502
    assert b"could not be reached" in body
    await faults.accept()
    _, status, _, _ = await fetch(gov, "/bytes/10")
    assert status == 200
    assert client.received > 0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis") as server:
        yield server


async def test_a_stalled_redis_adds_no_request_latency(
    make_governor: GovernorFactory, redis_server: RedisServer
) -> None:
    async with FaultProxy("127.0.0.1", redis_server.port) as redis_faults:
        gov = await make_governor(
            store=f"redis://{redis_faults.address}/0",
            flush_interval="100ms",
            store_timeout="300ms",
        )
        received = 0

        async def timed_fetches(n: int) -> list[float]:
            nonlocal received
            times = []
            for _ in range(n):
                started = time.monotonic()
                client, status, complete, _ = await fetch(gov, "/bytes/10000")
                times.append(time.monotonic() - started)
                assert (status, complete) == (200, True)
                received += client.received
            return times

        await timed_fetches(20)
        errors = gov.runtime.store_errors
        redis_faults.stall()
        stalled = await timed_fetches(60)  # several flush intervals and store timeouts
        await eventually(  # at the flusher's own pace
            lambda: gov.runtime.store_errors != errors, what="the flusher hitting the stall"
        )
        stalled += await timed_fetches(20)
        assert not gov.runtime.store_ok  # the flusher did hit the stall
        # No request waits on the store: not one took as long as a store timeout.
        assert max(stalled) < 0.3, sorted(stalled)[-5:]
        redis_faults.resume()
        redis_faults.reset_all()

        async def settled() -> bool:
            await gov.flusher.flush()
            return gov.runtime.store_ok and gov.runtime.ledger.pending_bytes() == 0

        await eventually(settled, timeout=20, what="every count in the store")
        stored = redis_server.client().get("governor:{site}:2024-02-21")
        assert int(stored or 0) == received  # nothing lost, nothing counted twice
        await gov.stop()  # before the fault proxy goes (the final flush goes through it)
