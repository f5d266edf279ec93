"""The exhaustion forecast over real sockets and an injected clock: a steady rate, the
gauge, the status page's line, and the ``forecast`` event once per period."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_metrics import scrape
from tests.functional.test_warnings import Receiver, receiver  # noqa: F401 (a fixture)
from tests.support import FakeClock, RawClient, free_port, request

MINUTE = 60.0


async def get(gov: Governor, path: str) -> int:
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", path, "site.test"))
    assert (await client.response()).status == 200
    await client.close()
    return client.received


async def steady(gov: Governor, clock: FakeClock, path: str, minutes: int) -> int:
    """One download a minute for ``minutes`` minutes, a flush after each; the last's bytes."""
    received = 0
    for _ in range(minutes):
        received = await get(gov, path)
        await gov.flusher.flush()
        clock.advance(MINUTE)
    await gov.flusher.flush()
    return received


async def test_a_steady_rate_forecasts_now_plus_what_is_left_over_the_rate(
    make_governor: GovernorFactory,
    clock: FakeClock,
    receiver: Receiver,  # noqa: F811
) -> None:
    gov = await make_governor(
        cap="1 MiB", admin_listen=f"127.0.0.1:{free_port()}", webhook_url=receiver.url
    )
    each = await steady(gov, clock, "/bytes/20000", 6)
    usage = gov.runtime.usage("site")
    assert usage is not None
    at = gov.forecasts.of("site", usage.period)
    assert at is not None
    rate = each / MINUTE
    expected = (usage.cap_bytes - usage.used_bytes) / rate
    assert abs((at - clock()) - expected) <= 0.1 * expected
    assert gov.admin_port is not None
    got = await scrape(gov.admin_port)
    gauge = got.get("governor_quota_exhaustion_forecast_timestamp_seconds", tenant="site")
    assert gauge == pytest.approx(at, abs=1)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gov.admin_port}/status") as resp,
    ):
        page = await resp.text()
    assert "At this rate it runs out at 1" in page  # in the afternoon, Seoul time
    assert "before the reset." in page
    async with asyncio.timeout(10):
        await gov.warner._queue.join()
    forecasts = [e for e in receiver.events if e["event"] == "forecast"]
    assert len(forecasts) == 1  # once per period, however many flushes see it
    assert forecasts[0]["runs_out_at"].startswith("2024-02-21T1")
    assert forecasts[0]["before_reset_seconds"] > 3600


async def test_a_slow_tenant_is_not_forecast_to_run_out(
    make_governor: GovernorFactory, clock: FakeClock
) -> None:
    gov = await make_governor(cap="1 GiB", admin_listen=f"127.0.0.1:{free_port()}")
    await steady(gov, clock, "/bytes/1000", 3)
    usage = gov.runtime.usage("site")
    assert usage is not None
    assert gov.forecasts.of("site", usage.period) is None
    assert gov.admin_port is not None
    got = await scrape(gov.admin_port)
    gauge = got.get("governor_quota_exhaustion_forecast_timestamp_seconds", tenant="site")
    assert math.isinf(gauge)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gov.admin_port}/status") as resp,
    ):
        assert "At this rate it lasts until the reset." in await resp.text()
