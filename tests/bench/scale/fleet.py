"""Four governors x N tenants on one redis-server, traffic spread over 1,000 tenants: does
every byte the clients received reach Redis, and do the flushes keep within the interval?

Every instance has ``flush_interval`` 1 s and ``store_timeout`` 500 ms; they share both cores.
Clients are exact (every byte off the sockets is counted) and run for a fixed time; then the
Redis totals (the usage keys of the current period, by SCAN) are polled until they equal
what the clients received, or for at most ``10 x flush_interval``. The flushes are read from
each instance's ``governor_store_flush_seconds`` histogram (its /metrics page) and the log.
"""

from __future__ import annotations

import asyncio
import http.client
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from tests.bench.scale import gen
from tests.bench.scale.common import Lab, get, log_count, timeout_note, wait_for
from tests.bench.scale.governor import (
    FLUSH_FAILED,
    FLUSH_INTERVAL,
    Governor,
    flush_stats,
    ready,
    start_governor,
)
from tests.support import RawClient, request

SYSTEM = "fleet"
CONNECTIONS = 4  # per instance


async def _client(port: int, first: int, active: int, until: float) -> tuple[int, int, int]:
    """Sequential requests on one connection, each to the next tenant, until ``until``:
    (bytes received, responses, responses not 200)."""
    client = await RawClient.connect(port)
    n = bad = 0
    try:
        while time.monotonic() < until:
            await client.send(request("GET", "/1k.bin", gen.host((first + n) % active)))
            resp = await client.response()
            n += 1
            bad += resp.status != 200 or not resp.complete
    finally:
        await client.close()
    return client.received, n, bad


async def _traffic(ports: list[int], active: int, seconds: float) -> tuple[int, int, int]:
    until = time.monotonic() + seconds
    parts = await asyncio.gather(
        *(
            _client(port, (i * CONNECTIONS + c) * 97, active, until)
            for i, port in enumerate(ports)
            for c in range(CONNECTIONS)
        )
    )
    return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def stored(lab: Lab) -> int:
    """The sum of every tenant's usage key (``governor:{t}:<period>``) in Redis."""
    total = 0
    client = lab.redis.client(timeout=30)
    for key in client.scan_iter(match="governor:{t*}:*", count=10000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        rest = name.rpartition("}:")[2]
        if rest[:1].isdigit() and ":" not in rest:  # a period: not periods, flushes, ...
            value = client.get(name)
            total += int(value) if value is not None else 0
    return total


def _settle(lab: Lab, received: int) -> tuple[int, float | None]:
    """Poll Redis until it holds ``received``: (what it holds, seconds, or None at the bound)."""
    started = time.monotonic()
    now = stored(lab)
    while now != received and time.monotonic() - started < 10 * FLUSH_INTERVAL:
        time.sleep(FLUSH_INTERVAL / 4)
        now = stored(lab)
    return now, (time.monotonic() - started) if now == received else None


def _flushes(lab: Lab, servers: list[Governor], tenants: int) -> None:
    failed = sum(log_count(s, FLUSH_FAILED) for s in servers)

    def scrape(server: Governor) -> dict[str, float]:
        try:
            page = get(server.admin, "/metrics", timeout=lab.settings.timeout)
            return flush_stats(page.body.decode(errors="replace"), FLUSH_INTERVAL)
        except (OSError, http.client.HTTPException) as exc:
            print(f"    fleet: /metrics of {server.name}: {type(exc).__name__}: {exc}")
            return {"error": 1.0}

    with ThreadPoolExecutor(len(servers)) as pool:  # the four scrapes at once: they are slow
        stats = list(pool.map(scrape, servers))
    ok = [s for s in stats if "flushes" in s]
    flushes = sum(s["flushes"] for s in ok)
    within = sum(s.get("within", 0.0) for s in ok)
    note = "" if len(ok) == len(stats) else f"{len(stats) - len(ok)} /metrics pages missing"
    lab.rec.add(
        tenants,
        SYSTEM,
        "fleet_within_pct",
        100 * within / flushes if flushes else None,
        note,
        per_instance=stats,
    )
    mean = 1000 * sum(s["flush_sum_s"] for s in ok) / flushes if flushes else None
    lab.rec.add(tenants, SYSTEM, "fleet_flush_mean_ms", mean, note)
    errors = sum(s.get("store_errors", 0.0) for s in ok)
    lab.rec.add(tenants, SYSTEM, "fleet_failed_flushes", errors, note, log_lines=failed)


def measure_fleet(lab: Lab, tenants: int) -> None:
    """The fleet rows for ``tenants``."""
    s = lab.settings
    lab.redis.client().flushall()
    active = min(s.active, tenants)
    with ExitStack() as stack:
        cores = lab.cores
        # every core, not only the load core the benchmark itself is pinned to
        cpus = cores.proxy | cores.load if cores.proxy and cores.load else None
        servers = [
            start_governor(lab, stack, f"fleet-{tenants}-{i}", tenants, cpus)
            for i in range(s.fleet_instances)
        ]
        took = wait_for(list(servers), [ready(sv) for sv in servers], s.timeout)
        if took is None:
            up = sum(ready(sv)() for sv in servers)
            note = f"{timeout_note(s.timeout)}: {up} of {len(servers)} ready"
            lab.rec.add(tenants, SYSTEM, "fleet_startup_s", None, note)
            return
        lab.rec.add(tenants, SYSTEM, "fleet_startup_s", took)
        received, responses, bad = asyncio.run(
            _traffic([sv.port for sv in servers], active, s.fleet_seconds)
        )
        now, settled = _settle(lab, received)
        info: dict[str, Any] = {"received": received, "stored": now, "responses": responses}
        note = "" if settled is not None else f"Redis holds {now:,} of {received:,} B"
        note += f"; {bad} responses not 200" if bad else ""
        lab.rec.add(tenants, SYSTEM, "fleet_stored_pct", 100 * now / max(received, 1), note, **info)
        bound = f"not within {10 * FLUSH_INTERVAL:g} s" if settled is None else ""
        lab.rec.add(tenants, SYSTEM, "fleet_settle_s", settled, bound)
        _flushes(lab, servers, tenants)
