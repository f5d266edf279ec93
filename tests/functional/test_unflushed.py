"""When counts are not reaching the store, governor says so and since when: ``/readyz``,
a gauge, and the log, once when it starts and once when it is over (a real Redis, paused).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.conftest import GovernorFactory
from tests.functional.test_admin import admin_options, call, fetch
from tests.functional.test_metrics import scrape
from tests.redis_servers import RedisServer, have_redis
from tests.support import FakeClock, eventually

pytestmark = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")

GAUGE = "governor_store_unflushed_since_timestamp_seconds"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


async def test_readyz_the_gauge_and_the_log_say_since_when_counts_wait(
    make_governor: GovernorFactory,
    redis_server: RedisServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gov = await make_governor(
        store=redis_server.url, flush_interval="100ms", store_timeout="200ms", **admin_options(None)
    )
    assert gov.admin_port is not None
    status, doc, _ = await call(gov, "GET", "/readyz")
    assert (status, doc["store"], doc["unflushed_since"]) == (200, "ok", None)
    assert (await scrape(gov.admin_port)).get(GAUGE) == 0
    outage_began = clock.now
    with caplog.at_level(logging.WARNING, logger="governor.accounts"):
        with redis_server.paused():
            assert await fetch(gov.port) == 200  # counted, and it cannot be flushed

            async def waiting() -> bool:
                doc = (await call(gov, "GET", "/readyz"))[1]
                return bool(doc["unflushed_since"] is not None and doc["pending_bytes"] > 0)

            await eventually(waiting, timeout=10, what="/readyz saying counts wait")
            status, doc, _ = await call(gov, "GET", "/readyz")
            assert status == 200  # still serving (on_store_failure: open), as before
            assert doc["store"] == "degraded"
            assert doc["unflushed_since"] == outage_began  # the governor's clock: Unix time
            assert doc["pending_bytes"] == gov.runtime.ledger.pending_bytes() > 0
            assert (await scrape(gov.admin_port)).get(GAUGE) == outage_began

        async def recovered() -> bool:
            doc = (await call(gov, "GET", "/readyz"))[1]
            return bool(doc["unflushed_since"] is None and doc["pending_bytes"] == 0)

        await eventually(recovered, timeout=10, what="/readyz saying counts reach the store")
    assert (await scrape(gov.admin_port)).get(GAUGE) == 0
    said = [r.getMessage() for r in caplog.records]
    assert sum("not reaching the store since" in m for m in said) == 1, said
    assert sum("reach the store again" in m for m in said) == 1, said
