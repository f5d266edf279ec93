"""Top consumers over real sockets: three instances on one real Redis, a known mix of
traffic, and the admin API, ``governor top``, the status page and a webhook event saying
who used the allowance, each within the stated bound (here, where fewer items than
counters are seen, exactly what the raw clients received)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import governor
from tests.redis_servers import RedisServer, have_redis
from tests.support import RawClient, free_port, request

pytestmark = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")

BOT = "User-Agent: facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
BROWSER = "User-Agent: Mozilla/5.0 Chrome/131.0"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


async def fetch(gov: Governor, path: str, source: str, *headers: str) -> int:
    """Bytes the client received for one GET from ``source``."""
    client = await RawClient.connect(gov.port, source=source)
    await client.send(request("GET", path, "site.test", *headers))
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    return client.received


async def test_three_instances_agree_on_who_used_the_allowance(
    make_governor: GovernorFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    options = {"store": redis_server.url, "cap": "100 MiB", "flush_interval": "10s"}
    admin = f"127.0.0.1:{free_port()}"
    fleet = [await make_governor(**options, admin_listen=admin)]
    fleet += [await make_governor(**options) for _ in range(2)]
    heavy = light = 0
    for i, gov in enumerate(fleet):  # the crawler on every instance; people on each
        for _ in range(3):
            heavy += await fetch(
                gov,
                "/bytes/200000?part=1",
                f"127.0.9.{i + 1}",
                BOT,
                "Referer: https://m.social.example/p/1",
            )
        for j in range(5):
            light += await fetch(gov, f"/bytes/{1000 + j}", f"127.0.{i + 1}.{j + 1}", BROWSER)
    for gov in [*fleet, fleet[0]]:  # the first again: it learns the fleet's total
        await gov.flusher.flush()
    port = fleet[0].admin_port
    assert port is not None
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/api/v1/tenants/site/top"
        docs = {}
        for by in ("client", "path", "agent", "referrer"):
            async with session.get(url, params={"by": by, "limit": "3"}) as resp:
                assert resp.status == 200
                docs[by] = await resp.json()
        async with session.get(url, params={"by": "size"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["field"] == "by"
        async with session.get(f"http://127.0.0.1:{port}/status?tenant=site") as resp:
            page = await resp.text()
    total = heavy + light
    assert docs["client"]["total_bytes"] == total
    bound = docs["client"]["error_bytes"]
    assert bound == total // 100
    first = docs["client"]["items"][0]
    assert first["item"] == "127.0.9.0/24"  # truncated: the crawler's network, all three
    assert abs(first["bytes"] - heavy) <= bound
    assert first["requests"] == 9
    assert docs["path"]["items"][0]["item"] == "/bytes/200000"  # no query string
    assert abs(docs["path"]["items"][0]["bytes"] - heavy) <= bound
    assert docs["agent"]["items"][0]["item"].startswith("facebookexternalhit/1.1")
    assert docs["referrer"]["items"][0]["item"] == "m.social.example"
    assert round(docs["agent"]["items"][0]["share"], 2) == round(heavy / total, 2)
    assert "What used the allowance this period" in page
    assert "127.0.9.0/24" in page
    code, out, err = await governor(
        "top",
        "site",
        "--config",
        str(tmp_path / "governor.yaml"),
        "--by",
        "path",
        "--json",
        "--period",
        docs["path"]["period"],  # the test's clock is not the command's
    )
    assert code == 0, err
    (cli,) = json.loads(out)
    assert cli["items"][0] == docs["path"]["items"][0]
    period = docs["path"]["period"]
    code, out, err = await governor(
        "top", "site", "--config", str(tmp_path / "governor.yaml"), "--period", period
    )
    assert code == 0, err
    assert "/bytes/200000" in out
    assert "facebookexternalhit" in out
