"""Shadow mode (``enforce: false``): everything is counted, reported and warned about, and
nothing is refused; the API, ``governor usage``, the status page and the events say
``would_block`` and since when."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from governor.cli import usage_rows
from governor.config import load_config
from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import governor
from tests.functional.test_metering import used
from tests.functional.test_warnings import Receiver, receiver  # noqa: F401 (a fixture)
from tests.support import FakeClock, RawClient, free_port, request

SHADOW = {
    "enforce": "off",
    "admission": "on",
    "client_share": "10%",
    "large": {"size": "5 KiB", "from": "0%"},
    "at_cap": "cut",
}


async def get(gov: Governor, path: str) -> tuple[int, int]:
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", path, "site.test"))
    resp = await client.response()
    await client.close()
    return resp.status, client.received


async def test_a_shadow_tenant_is_never_refused_and_says_it_would_be(
    make_governor: GovernorFactory,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
    clock: FakeClock,
) -> None:
    admin = f"127.0.0.1:{free_port()}"
    gov = await make_governor(
        cap="10 KiB", tenant=SHADOW, admin_listen=admin, webhook_url=receiver.url
    )
    total = 0
    for path in ("/bytes/3000", "/bytes/20000", "/bytes/3000", "/bytes/3000"):
        status, received = await get(gov, path)  # large, over a visitor's share, over the cap
        assert status == 200
        total += received
    assert used(gov) == total > 10 * 1024  # every byte counted, the last response not cut
    await gov.flusher.flush()
    async with asyncio.timeout(10):
        await gov.warner._queue.join()
    (event,) = [e for e in receiver.events if e["event"] == "blocked"]
    assert (event["enforced"], event["would_block"]) == (False, True)
    assert "would_block_since" in event
    port = gov.admin_port
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/api/v1/tenants/site") as resp:
            doc = await resp.json()
        async with session.get(f"http://127.0.0.1:{port}/status") as resp:
            page = await resp.text()
    assert (doc["blocked"], doc["would_block"], doc["enforced"]) == (False, True, False)
    assert doc["would_block_since"].startswith("2024-02-21T12:00")  # the 5-minute bucket
    assert "WOULD BLOCK" in page
    assert "would be blocked since 12:00 KST" in page
    # governor usage --json, at the test's clock (the command's own is today's).
    (row,) = await usage_rows(load_config(tmp_path / "governor.yaml"), now=clock())
    assert (row["enforced"], row["blocked"], row["would_block"]) == (False, False, True)
    assert row["would_block_since"].startswith("2024-02-21T12:00")
    code, out, err = await governor("usage", "--config", str(tmp_path / "governor.yaml"))
    assert code == 0, err
    assert "site" in out
    assert gov.admin_port is not None
    from tests.functional.test_metrics import scrape

    got = await scrape(gov.admin_port)
    assert got.get("governor_requests_total", tenant="site", outcome="would_block") >= 1
    assert got.get("governor_blocked", tenant="site") == 0
