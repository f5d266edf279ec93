"""Pacing over real sockets: from ``pacing.from`` on, a large response is sent at the rate
that makes what is left last until the reset; pages are not slowed, nothing is refused,
and every byte that crossed is counted."""

from __future__ import annotations

import time

from tests.functional.conftest import GovernorFactory
from tests.functional.test_metering import used
from tests.functional.test_metrics import scrape_until
from tests.functional.test_shares import fetch
from tests.functional.upstream_app import pattern
from tests.support import free_port
from tests.support.clock import FakeClock, seoul

CAP = 2 * 2**20
TENANT = {
    "pacing": {"from": "50%", "floor": "16 KiB/s"},
    "large": {"size": "100 KiB", "from": "99%"},  # large from 100 KiB; refused only at 99%
}


async def test_a_large_download_is_paced_to_last_until_the_reset(
    make_governor: GovernorFactory, clock: FakeClock
) -> None:
    gov = await make_governor(cap="2 MiB", tenant=TENANT, admin_listen=f"127.0.0.1:{free_port()}")
    status, body, before, _ = await fetch(gov, "/bytes/1000000")  # all before 50%: not paced
    assert (status, body) == (200, pattern(1_000_000))
    # Two seconds before the reset, what is left (about 1 MiB) may go at about 520 KiB/s at
    # first (the rate falls as what is left does, the clock standing still).
    clock.set(seoul(2024, 2, 21, 23, 59, 58))
    left = CAP - used(gov)
    rate = left / 2
    started = time.monotonic()
    status, body, paced, _ = await fetch(gov, "/bytes/600000")
    took = time.monotonic() - started
    assert (status, body) == (200, pattern(600_000))  # slowed, never refused
    # At the rate, less the quarter second a paced response may send ahead.
    assert took >= (600_000 / rate - 0.25) * 0.9
    status, body, page, _ = await fetch(gov, "/bytes/5000")  # a page: not paced
    assert (status, body) == (200, pattern(5000))
    assert used(gov) == before + paced + page
    assert gov.admin_port is not None
    got = await scrape_until(
        gov.admin_port,
        lambda s: s.get("governor_requests_total", tenant="site", outcome="paced") == 1,
    )
    assert got.get("governor_requests_total", tenant="site", outcome="proxied") == 2
