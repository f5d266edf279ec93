"""A reload at 20,000 tenants never stalls the requests being served meanwhile.

The new config is loaded, checked and indexed in a worker thread; only the swap runs
on the event loop. Held as a ratio measured in the same run, never a fixed time: the
longest wait of a steady stream of requests while the reload runs, against the
longest wait of the same stream with no reload. Built on the loop, the reload would
hold one request for the whole build (seconds here), hundreds of times the baseline.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from governor.config import load_config
from governor.process.instance import Governor
from tests.support import free_port, write_config

TENANTS = 20_000
STREAM = 150  # requests in the baseline; the reload's stream runs until it is done
FACTOR = 25  # generous: the 2-core machine is shared, and threads take turns at the GIL


def write_fleet(folder: Path, upstream: str, cap: str, listen: str) -> Path:
    """``site`` (served) and 19,999 others, written as text (tenants is the last key)."""
    path = write_config(folder, upstream=upstream, cap=cap, listen=listen)
    others = "".join(
        f"  t{i}:\n    hosts: [t{i}.example, www.t{i}.example]\n"
        f"    upstream: {upstream}\n    daily_cap: {cap}\n"
        for i in range(1, TENANTS)
    )
    with path.open("a") as f:
        f.write(others)
    return path


async def longest_wait(
    session: aiohttp.ClientSession, url: str, *, count: int, until: asyncio.Future[bool] | None
) -> tuple[float, int]:
    """Sequential requests: ``count`` of them, or (with ``until``) until it is done."""
    longest, sent = 0.0, 0
    while sent < count if until is None else not until.done() or sent < 5:
        start = time.perf_counter()
        async with session.get(url, headers={"Host": "site.test"}) as response:
            await response.read()
            assert response.status == 200
        longest = max(longest, time.perf_counter() - start)
        sent += 1
    return longest, sent


@pytest.mark.xfail(
    strict=False,  # it holds on a quiet machine (CI, alone) and not on a busy one: not yet kept
    reason="issue 13, open: the reload's work is off the loop, yet on a busy machine one request "
    "waits ~100 ms (25-60x the stream's own longest wait): gen-2 collections of 50-120 ms each "
    "(seen with gc.callbacks) during and after it, walking a heap the new config has grown",
)
async def test_a_reload_of_20000_tenants_holds_no_request_up(
    tmp_path: Path, upstream_url: str
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    path = write_fleet(tmp_path, upstream_url, "1 GiB", listen)
    gov = Governor(load_config(path))
    await gov.start()
    try:
        assert len(gov.config.tenants) == TENANTS
        url = f"http://127.0.0.1:{gov.port}/"
        async with aiohttp.ClientSession() as session:
            await longest_wait(session, url, count=20, until=None)  # warm: pools, caches
            baseline, _ = await longest_wait(session, url, count=STREAM, until=None)
            write_fleet(tmp_path, upstream_url, "2 GiB", listen)
            started = time.perf_counter()
            reload = asyncio.ensure_future(gov.reload())
            during, sent = await longest_wait(session, url, count=0, until=reload)
            assert await reload
            took = time.perf_counter() - started
        # The new config serves: every tenant's cap was raised.
        assert gov.runtime.snapshot.tenants["t19999"].config.daily_cap == 2 * 2**30
        assert sent >= 5
        assert during <= FACTOR * baseline, (
            f"a request waited {during * 1000:.1f} ms during the reload ({took:.2f} s, "
            f"{sent} requests), {during / baseline:.0f}x the {baseline * 1000:.1f} ms "
            "of the same stream without one"
        )
    finally:
        await gov.stop()
