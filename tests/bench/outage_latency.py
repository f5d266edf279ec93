"""Request latency through governor before, during and after a Redis outage (SIGSTOP).

Run on purpose, not in the suite:  .venv/bin/python -m tests.bench.outage_latency
It starts a real upstream, a real redis-server on a free port and one governor
on it, then measures sequential requests for a few seconds in each phase.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiohttp import web

from governor.config import load_config
from governor.process.instance import Governor
from tests.functional.upstream_app import make_upstream
from tests.redis_servers import RedisServer
from tests.support import RawClient, request, write_config


async def fetch(port: int) -> int:
    client = await RawClient.connect(port)
    await client.send(request("GET", "/bytes/2000", "site.test"))
    resp = await client.response()
    await client.close()
    return resp.status


async def phase(port: int, seconds: float) -> str:
    latencies: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        status = await fetch(port)
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"a request failed with {status}")
    latencies.sort()
    n = len(latencies)
    return (
        f"n={n} p50={latencies[n // 2]:.2f}ms p99={latencies[int(n * 0.99)]:.2f}ms "
        f"max={latencies[-1]:.2f}ms"
    )


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    runner = web.AppRunner(make_upstream())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with RedisServer(tmp / "redis") as redis_server:
        path = write_config(
            tmp,
            upstream=f"http://127.0.0.1:{port}",
            store=redis_server.url,
            flush_interval="100ms",
            store_timeout="200ms",
        )
        gov = Governor(load_config(path))
        await gov.start()
        print("redis up      ", await phase(gov.port, 3))
        redis_server.pause()
        print("redis stopped ", await phase(gov.port, 3))
        redis_server.resume()
        print("redis back    ", await phase(gov.port, 2))
        await gov.stop()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
