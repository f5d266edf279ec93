"""A reload at 20,000 tenants never stalls the requests being served meanwhile.

``governor serve`` runs as its own process with a 20,000-tenant config. One keep-alive
client sends a steady stream of requests and times each one; the config is rewritten
(every cap doubled) and the process gets SIGHUP, and the stream goes on until governor
logs the reload. The new config is loaded, checked and indexed in a worker thread; only
the swap runs on the event loop. Held as a ratio measured in the same run, never a fixed
time: the longest wait of the stream while the reload runs, against the reload's own
duration (SIGHUP to the "reloaded" line, about 2 s here). Served throughout, the longest
wait is a sliver of it (0.5%: about 10 ms); built on the loop it would be all of it.

Built on the loop, a reload held one request for the whole build (2 s at 10,000
tenants). Built in a thread, with the cycle collector walking the new config mid-build
and after it, one request waited 50 to 120 ms; see :meth:`Governor.reload`.

The ratio used to be against the longest wait of a window without a reload. That
baseline is under a millisecond, so the scheduler's noise on a shared machine alone
made it fail now and then (9 ms against 0.8 ms, once in CI): a reload's duration is
the scale its stall is measured against.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import time
from pathlib import Path

from tests.functional.fleet import serve_fleet, stream, with_cap, write_fleet
from tests.support import RawClient, free_port, request

TENANTS = 20_000
ROUNDS = 5  # reloads; the medians of their longest waits and durations are compared
SHARE = 0.04  # the longest wait may be this share of the reload's duration, no more
HOSTS = ["site.test", "t1.test", "t19999.test"]


async def tenant_cap(port: int) -> int:
    """The daily cap the running config gives ``t19999``, from the admin API on ``port``."""
    client = await RawClient.connect(port)
    try:
        await client.send(request("GET", "/api/v1/tenants/t19999", f"127.0.0.1:{port}"))
        resp = await client.response()
        assert resp.status == 200, resp.body
        cap = json.loads(resp.body)["daily_cap_bytes"]
        assert isinstance(cap, int)
        return cap
    finally:
        await client.close()


async def test_a_reload_of_20000_tenants_holds_no_request_up(
    tmp_path: Path, upstream_url: str
) -> None:
    admin = free_port()
    path = write_fleet(
        tmp_path,
        upstream=upstream_url,
        tenants=TENANTS,
        cap="1 GiB",
        flush_interval="60s",  # no flush inside the windows: the reload is what is measured
        admin_listen=f"127.0.0.1:{admin}",
    )
    async with serve_fleet(path, admin=True) as served:
        assert await tenant_cap(admin) == 2**30
        await stream(served.port, HOSTS, count=20)  # warm: pools, caches
        durations: list[float] = []
        busy: list[float] = []
        for reload in range(1, ROUNDS + 1):
            with_cap(path, f"{reload + 1} GiB")
            done = asyncio.Event()

            async def reloaded(done: asyncio.Event = done) -> None:
                await served.wait_for("reloaded")
                done.set()

            async with asyncio.timeout(120), asyncio.TaskGroup() as group:
                group.create_task(reloaded())
                started = time.perf_counter()
                served.proc.send_signal(signal.SIGHUP)
                during = await stream(served.port, HOSTS, count=5, until=done)
                durations.append(time.perf_counter() - started)
            # The new config serves: the last tenant's cap was raised.
            assert await tenant_cap(admin) == (reload + 1) * 2**30
            busy.append(max(during))
            assert len(during) > 20, during  # requests were served all through the reload
    duration, reloading = statistics.median(durations), statistics.median(busy)
    print(  # shown with -s: the figures behind the ratio
        f"\nmedian of {ROUNDS} reloads of {TENANTS} tenants: {duration * 1000:.0f} ms each, "
        f"the longest wait meanwhile {reloading * 1000:.1f} ms: {reloading / duration:.1%}"
    )
    assert reloading <= SHARE * duration, (durations, busy)
