"""A ``/metrics`` scrape at 20,000 configured tenants (200 of them busy) stalls no request.

``governor serve`` runs as its own process with a 20,000-tenant config. One keep-alive
client sends a steady stream of requests over the 200 busy tenants and times each one
(send to the last byte of the response). The stream runs in windows that alternate:
with nobody scraping, and with a scraper fetching ``/metrics`` back to back. The promise
is a ratio measured in the same run, not a time: the longest wait while scraping stays
within :data:`FACTOR` times the longest wait without. Rendering every configured
tenant on the event loop (what governor did before) made one scrape of 47 MB here a
wait of 39 s, 3,700 times the baseline, on a loaded 2-core machine; now the ratio
measures 2.7x to 6.9x on the same machine.

The scrape itself must also hold only the busy tenants' series: 200, not 20,000.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.processes import Served, listen_port, spawn_serve
from tests.functional.upstream_app import Seen
from tests.support import RawClient, free_port, request, write_config

TENANTS = 20_000
ACTIVE = 200
ROUNDS = 3  # windows of each kind, interleaved; the medians of their longest waits compare
REQUESTS = 200  # per window
FACTOR = 10.0  # a scrape may make the longest wait this many times the baseline's, no more


@pytest.fixture
async def served(tmp_path: Path, upstream_url: str, seen: Seen) -> AsyncIterator[Served]:
    admin = free_port()
    path = write_config(
        tmp_path,
        upstream=upstream_url,
        admin_listen=f"127.0.0.1:{admin}",
        flush_interval="60s",  # no flush inside the windows: the scrape is what is measured
    )
    port = listen_port(path)
    doc = yaml.safe_load(path.read_text())
    for i in range(1, TENANTS):
        doc["tenants"][f"t{i}"] = {
            "hosts": [f"t{i}.test"],
            "upstream": upstream_url,
            "daily_cap": "1 GiB",
        }
    path.write_text(json.dumps(doc))  # JSON is YAML, and much quicker to write
    proc = await spawn_serve(path)
    served = Served(proc, port)
    served.admin = admin  # type: ignore[attr-defined]
    try:
        assert proc.stderr is not None
        waiting = {"governor listening on", "admin listening on"}
        async with asyncio.timeout(150):  # loading 20,000 tenants on a busy machine
            while waiting:
                line = (await proc.stderr.readline()).decode()
                assert line, f"governor exited before it was ready: {served.log}"
                served.log.append(line)
                waiting = {w for w in waiting if w not in line}
        yield served
    finally:
        proc.terminate()
        await proc.wait()


async def stream(port: int, hosts: list[str], n: int) -> list[float]:
    """``n`` requests on one keep-alive connection, round robin over ``hosts``: each's wait."""
    client = await RawClient.connect(port)
    waits: list[float] = []
    try:
        for i in range(n):
            started = time.perf_counter()
            await client.send(request("GET", "/bytes/1024", hosts[i % len(hosts)]))
            resp = await client.response()
            waits.append(time.perf_counter() - started)
            assert resp.status == 200
    finally:
        await client.close()
    return waits


async def scrape(admin: int) -> str:
    client = await RawClient.connect(admin)
    try:
        await client.send(request("GET", "/metrics", f"127.0.0.1:{admin}"))
        resp = await client.response()
        assert resp.status == 200
        return resp.body.decode()
    finally:
        await client.close()


@pytest.mark.timeout(240)
async def test_a_scrape_at_20000_tenants_stalls_no_request(served: Served) -> None:
    admin: int = served.admin  # type: ignore[attr-defined]
    hosts = [f"t{i}.test" for i in range(1, ACTIVE + 1)]
    await stream(served.port, hosts, ACTIVE)  # every busy tenant once: now active

    text = await scrape(admin)
    usage = {
        s.labels["tenant"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "governor_usage_bytes"
    }
    assert usage == {f"t{i}" for i in range(1, ACTIVE + 1)}  # the busy ones, not 20,000

    quiet: list[float] = []
    busy: list[float] = []
    scrapes = 0

    async def scraper(done: asyncio.Event) -> None:
        nonlocal scrapes
        while not done.is_set():
            await scrape(admin)
            scrapes += 1

    for _ in range(ROUNDS):
        quiet.append(max(await stream(served.port, hosts, REQUESTS)))
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(scraper(done))
            try:
                busy.append(max(await stream(served.port, hosts, REQUESTS)))
            finally:
                done.set()
    assert scrapes >= ROUNDS
    baseline, scraping = statistics.median(quiet), statistics.median(busy)
    print(  # shown with -s: the figures behind the ratio
        f"\nlongest wait, median of {ROUNDS} windows of {REQUESTS} requests: "
        f"{baseline * 1000:.1f} ms without a scrape, {scraping * 1000:.1f} ms while "
        f"scraping ({scrapes} scrapes of {len(text)} bytes): {scraping / baseline:.2f}x"
    )
    assert scraping <= FACTOR * baseline, (quiet, busy)
