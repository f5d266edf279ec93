"""A ``/metrics`` scrape at 20,000 configured tenants (200 of them busy) stalls no request.

``governor serve`` runs as its own process with a 20,000-tenant config. One keep-alive
client sends a steady stream of requests over the 200 busy tenants and times each one
(send to the last byte of the response). The stream runs in windows that alternate:
with a scraper fetching ``/metrics`` back to back, and with the same scraper fetching
``/healthz`` back to back (the control: the same client process and admin traffic, no
rendering). The scraper is a process of its own, so that reading the scrapes costs the
test's loop nothing. The promise is a ratio measured in the same run, not a time: the
longest wait while scraping (the median of the windows') stays within :data:`FACTOR`
times the longest wait of all the control windows. (The control windows used to have no
scraper at all. On this 2-core machine the scraper process then weighed on the scrape
windows only, and a quiet window's longest wait went from 0.5 ms to 5 ms at the
scheduler's whim: the ratio failed in CI at 11.7x, with the pure build's scrapes waiting
8 ms, and the build before this test's change measured 1.8x to 8.6x in four runs.)
Measured on the 2-core machine against that control: rendered in a thread at governor's
0.5 ms switch interval, 1.6x to 4.8x (6 runs, both builds; 8.0x once with 3 windows of
each kind, hence 5); rendered on the event loop, 35x and 36x (the test fails); in a
thread at CPython's default 5 ms interval, 4.1x and 5.7x, which this ratio cannot tell
from noise: ``tests/unit/process/test_interpreter.py``
holds that setting itself. (Before only the busy tenants were rendered, a scrape on the
event loop was a wait of 39 s, 3,700 times the baseline.)

The scrape itself must also hold only the busy tenants' series: 200, not 20,000.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.fleet import serve_fleet, stream, write_fleet
from tests.functional.processes import REPO, Served
from tests.functional.upstream_app import Seen
from tests.support import RawClient, free_port, request

TENANTS = 20_000
ACTIVE = 200
ROUNDS = 5  # windows of each kind, interleaved
REQUESTS = 400  # per window
FACTOR = 10.0  # a scrape may make the longest wait this many times the worst control one


@pytest.fixture
async def served(tmp_path: Path, upstream_url: str, seen: Seen) -> AsyncIterator[Served]:
    admin = free_port()
    path = write_fleet(
        tmp_path,
        upstream=upstream_url,
        tenants=TENANTS,
        cap="1 GiB",
        flush_interval="60s",  # no flush inside the windows: the scrape is what is measured
        admin_listen=f"127.0.0.1:{admin}",
    )
    async with serve_fleet(path, admin=True) as served:
        served.admin = admin  # type: ignore[attr-defined]
        yield served


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
    await stream(served.port, hosts, count=ACTIVE)  # every busy tenant once: now active

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
    scrapes = controls = 0

    for _ in range(ROUNDS):
        longest, done = await _window(served.port, hosts, admin, "/healthz")
        quiet.append(longest)
        controls += done
        longest, done = await _window(served.port, hosts, admin, "/metrics")
        busy.append(longest)
        scrapes += done
    assert scrapes >= ROUNDS
    assert controls >= ROUNDS
    baseline, scraping = max(quiet), statistics.median(busy)
    print(  # shown with -s: the figures behind the ratio
        f"\nlongest wait in {ROUNDS} windows of {REQUESTS} requests: "
        f"{baseline * 1000:.1f} ms beside /healthz fetches (the longest, {controls} of them), "
        f"{scraping * 1000:.1f} ms while scraping ({scrapes} scrapes of {len(text)} bytes): "
        f"{scraping / baseline:.2f}x"
    )
    assert scraping <= FACTOR * baseline, (quiet, busy)


async def _window(port: int, hosts: list[str], admin: int, path: str) -> tuple[float, int]:
    """One window of the stream beside a scraper of ``path``: the longest wait, and how
    many fetches the scraper made (the first before the stream starts)."""
    scraper = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.functional.scraper",
        str(admin),
        path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert scraper.stdin is not None
    assert scraper.stdout is not None
    try:
        assert int(await scraper.stdout.readline()) > 0  # fetching from here on
        longest = max(await stream(port, hosts, count=REQUESTS))
    finally:
        scraper.stdin.close()
        out, _ = await scraper.communicate()
    assert scraper.returncode == 0
    return longest, 1 + len(out.split())
