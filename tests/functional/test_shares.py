"""A fair share per visitor and a crawler budget, over real sockets.

``client_share``: a visitor (an address) past its share of the cap gets 429 and the
"client_share" notice, and everyone else goes on. ``crawlers``: crawler traffic (by
User-Agent or address) gets its own budget, past which it gets 503, and from
``large.from`` on crawlers are refused before people are. Counted against what the
raw clients received; the fleet-wide count of a heavy visitor on a real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_metering import used
from tests.functional.test_metrics import scrape_until
from tests.functional.upstream_app import Seen, pattern
from tests.redis_servers import RedisServer, have_redis
from tests.support import RawClient, free_port, request

MiB = 2**20
SHARE = int(MiB * 0.1)  # client_share: 10% of a 1 MiB cap
BROWSER = "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36"
GOOGLEBOT = "User-Agent: Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


async def fetch(
    gov: Governor, path: str, *headers: str, source: str = "127.0.0.1"
) -> tuple[int, bytes, int, dict[str, str]]:
    """(status, body, bytes received, headers) of one GET from ``source``."""
    client = await RawClient.connect(gov.port, source=source)
    try:
        await client.send(request("GET", path, "site.test", *headers))
        resp = await client.response()
    finally:
        await client.close()
    names = ("Retry-After", "Content-Type", "Content-Language")
    found = {name: resp.header(name) for name in names}
    return resp.status, resp.body, resp.received, {k: v for k, v in found.items() if v}


async def test_a_visitor_past_its_share_gets_429_and_the_others_go_on(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(
        cap="1 MiB", tenant={"client_share": "10%"}, admin_listen=f"127.0.0.1:{free_port()}"
    )
    heavy = 0
    for _ in range(2):  # 2 x 60,000 bytes: past 10% of the cap with the second
        status, body, received, _ = await fetch(gov, "/bytes/60000", source="127.0.0.2")
        assert (status, body) == (200, pattern(60_000))
        heavy += received
    book = gov.runtime.shares.peek("site")
    assert book is not None
    assert book.visitor_used("127.0.0.2") == heavy > SHARE  # exact: fewer visitors than counters
    hits = seen.hits
    status, body, _, headers = await fetch(
        gov, "/bytes/100", "Accept-Language: ko", source="127.0.0.2"
    )
    assert status == 429
    assert "오늘 이용하실 수 있는 전송량을 모두 사용하셨습니다" in body.decode()
    assert int(headers["Retry-After"]) > 0
    assert seen.hits == hits  # the upstream never saw it
    status, body, _, _ = await fetch(
        gov, "/bytes/100", "Accept: application/json", source="127.0.0.2"
    )
    assert status == 429
    assert b'"client_share_exceeded"' in body
    # Someone else: served, and the site's count is everything that crossed.
    status, body, received, _ = await fetch(gov, "/bytes/60000", source="127.0.0.3")
    assert (status, body) == (200, pattern(60_000))
    assert used(gov) == heavy + received
    assert gov.admin_port is not None
    got = await scrape_until(
        gov.admin_port,
        lambda s: s.get("governor_requests_total", tenant="site", outcome="client_share") == 2,
    )
    assert got.get("governor_requests_total", tenant="site", outcome="proxied") == 3


async def test_a_download_larger_than_the_visitors_share_leaves_is_refused_up_front(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(cap="1 MiB", tenant={"client_share": "10%", "admission": "on"})
    status, _, first, _ = await fetch(gov, "/bytes/60000", source="127.0.0.2")
    assert status == 200
    left = SHARE - first  # about 44 KB of the visitor's share left; the site has 980 KB
    status, body, _, _ = await fetch(
        gov, "/bytes/60000", "Accept: application/json", source="127.0.0.2"
    )
    assert status == 503
    assert b'"response_exceeds_remaining_allowance"' in body
    assert f'"remaining_bytes": {left}'.encode() in body
    status, _, _, _ = await fetch(gov, "/bytes/60000", source="127.0.0.3")  # not for others
    assert status == 200


async def test_crawlers_share_a_budget_and_people_go_on(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    crawlers = {
        "share": "10%",
        "agents": ["Googlebot", "facebookexternalhit"],
        "clients": ["127.0.0.9/32"],
    }
    gov = await make_governor(cap="1 MiB", tenant={"crawlers": crawlers})
    crawled = 0
    for source, agent in (("127.0.0.4", GOOGLEBOT), ("127.0.0.9", BROWSER)):  # UA, then address
        status, body, received, _ = await fetch(gov, "/bytes/60000", agent, source=source)
        assert (status, body) == (200, pattern(60_000))
        crawled += received
    book = gov.runtime.shares.peek("site")
    assert book is not None
    assert book.crawlers_used() == crawled > SHARE
    hits = seen.hits
    ua = "User-Agent: facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
    status, body, _, headers = await fetch(gov, "/bytes/100", ua, source="127.0.0.5")
    assert status == 503
    assert "Automated crawling is paused" in body.decode()
    assert int(headers["Retry-After"]) > 0
    assert seen.hits == hits
    status, body, received, _ = await fetch(gov, "/bytes/60000", BROWSER, source="127.0.0.6")
    assert (status, body) == (200, pattern(60_000))
    assert used(gov) == crawled + received


async def test_from_large_from_on_crawlers_go_before_people(make_governor: GovernorFactory) -> None:
    tenant = {"large": {"size": "100 KiB", "from": "50%"}, "crawlers": {}}  # the built-in agents
    gov = await make_governor(cap="1 MiB", tenant=tenant)
    status, _, _, _ = await fetch(gov, "/bytes/50000", GOOGLEBOT)  # before 50%: served
    assert status == 200
    status, _, _, _ = await fetch(gov, "/bytes/600000", BROWSER)
    assert status == 200
    status, body, _, _ = await fetch(
        gov, "/bytes/100", "User-Agent: GPTBot/1.2", "Accept-Language: ko"
    )
    assert status == 503
    assert "자동 수집(크롤러)은 초기화 시각까지 멈춰 두었습니다" in body.decode()
    status, body, _, _ = await fetch(gov, "/bytes/5000", BROWSER)  # a page: served
    assert (status, body) == (200, pattern(5000))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis") as server:
        yield server


async def test_a_heavy_visitor_is_counted_across_the_fleet(
    make_governor: GovernorFactory, redis_server: RedisServer
) -> None:
    options = {"store": redis_server.url, "cap": "1 MiB", "tenant": {"client_share": "10%"}}
    one = await make_governor(**options)
    two = await make_governor(**options)
    visitor = "127.0.0.7"
    status, _, on_one, _ = await fetch(one, "/bytes/90000", source=visitor)
    assert status == 200
    await one.flusher.flush()
    # On the second instance the visitor is not heavy yet: its first request is served on
    # this instance's own count (the stated bound), and makes it heavy here.
    status, _, on_two, _ = await fetch(two, "/bytes/20000", source=visitor)
    assert status == 200
    await two.flusher.flush()
    book = two.runtime.shares.peek("site")
    assert book is not None
    assert book.visitor_used(visitor) == on_one + on_two > SHARE
    status, _, _, _ = await fetch(two, "/bytes/100", source=visitor)
    assert status == 429
    await one.flusher.flush()
    status, _, _, _ = await fetch(one, "/bytes/100", source=visitor)
    assert status == 429
    status, _, _, _ = await fetch(one, "/bytes/100", source="127.0.0.8")
    assert status == 200


async def test_behind_a_trusted_proxy_each_forwarded_visitor_has_its_own_share(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(
        cap="1 MiB", tenant={"client_share": "10%"}, trusted_proxies=["127.0.0.0/8"]
    )
    one, two = "X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 2001:db8:1:2::9"
    for _ in range(2):
        status, _, _, _ = await fetch(gov, "/bytes/60000", one)
        assert status == 200
    status, _, _, _ = await fetch(gov, "/bytes/100", one)
    assert status == 429
    status, _, _, _ = await fetch(gov, "/bytes/60000", two)  # another visitor: served
    assert status == 200
    status, _, _, _ = await fetch(gov, "/bytes/60000", "X-Forwarded-For: 2001:db8:1:2:ffff::1")
    assert status == 200  # the same /64 as the one before: 120 KB together
    status, _, _, _ = await fetch(gov, "/bytes/100", "X-Forwarded-For: 2001:db8:1:2:aaaa::5")
    assert status == 429  # one visitor: the /64
    book = gov.runtime.shares.peek("site")
    assert book is not None
    assert book.visitor_used("2001:db8:1:2::/64") > SHARE
