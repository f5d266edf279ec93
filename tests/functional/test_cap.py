"""The cap: the notice at the cap, exemptions, cut versus finish, the reset at
local midnight (with an injected clock), reloads and restarts."""

from __future__ import annotations

import json

import aiohttp

from governor.config import load_config
from governor.http1.request import CLAIM_STEP
from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_metering import used
from tests.functional.upstream_app import Seen, pattern
from tests.support import FakeClock, RawClient, request, seoul, write_config


async def get(
    gov: Governor, path: str, host: str = "site.test", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.get(f"http://127.0.0.1:{gov.port}{path}", headers={"Host": host, **headers}) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_unknown_host_gets_421_and_reaches_no_upstream(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor()
    status, headers, body = await get(gov, "/bytes/10", host="other.test")
    assert status == 421
    assert headers["Content-Type"].startswith("text/plain")
    assert b"other.test" in body
    assert seen.hits == 0


async def test_wildcard_host_selects_the_tenant(make_governor: GovernorFactory, seen: Seen) -> None:
    gov = await make_governor()
    status, _, body = await get(gov, "/bytes/10", host="a.b.site.test:8080")
    assert status == 200
    assert body == pattern(10)
    assert seen.hits == 1


async def test_notice_at_the_cap_until_local_midnight(
    make_governor: GovernorFactory, seen: Seen, clock: FakeClock
) -> None:
    gov = await make_governor(cap="10 KiB")
    status, _, _ = await get(gov, "/bytes/20000")
    assert status == 200  # the request that crosses the cap finishes (at_cap: finish)
    hits = seen.hits
    status, headers, body = await get(gov, "/bytes/10", **{"Accept-Language": "ko-KR,ko;q=0.9"})
    assert status == 503
    assert seen.hits == hits  # blocked requests never reach the upstream
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Retry-After"]) == 12 * 3600  # noon → midnight in Seoul
    assert "2024-02-22 00:00" in body.decode()
    assert headers["Content-Language"] == "ko"
    status, headers, body = await get(gov, "/", Accept="application/json")
    facts = json.loads(body)
    assert status == 503
    assert facts["tenant"] == "site"
    assert facts["cap_bytes"] == 10240
    assert facts["resets_at"] == "2024-02-22T00:00:00+09:00"
    assert facts["used_bytes"] == used(gov) > 10240
    charged = used(gov)
    clock.set(seoul(2024, 2, 21, 23, 59, 59))
    assert (await get(gov, "/bytes/10"))[0] == 503
    assert used(gov) == charged  # the notice is not charged
    clock.set(seoul(2024, 2, 22, 0, 0, 0))
    status, _, body = await get(gov, "/bytes/10")
    assert status == 200
    assert body == pattern(10)
    assert seen.hits == hits + 1


async def test_notice_status_and_operator_template(
    make_governor: GovernorFactory, tmp_path: object
) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "mine.html").write_text("<p>$tenant used $used of $cap; back at $resets_at</p>")
    gov = await make_governor(
        cap="1 KiB", tenant={"notice": {"status": 509, "template": "mine.html"}}
    )
    await get(gov, "/bytes/5000")
    status, _headers, body = await get(gov, "/")
    assert status == 509
    assert body.decode().startswith("<p>site used ")
    assert "2024-02-22T00:00:00+09:00" in body.decode()


async def test_exempt_paths_and_clients_pass_a_blocked_tenant_and_are_counted(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(
        cap="1 KiB", tenant={"exempt_paths": ["/robots.txt", "/.well-known/acme-challenge/"]}
    )
    await get(gov, "/bytes/5000")
    assert (await get(gov, "/bytes/1"))[0] == 503
    before = used(gov)
    status, _, _ = await get(gov, "/robots.txt")
    assert status == 200
    status, _, _ = await get(gov, "/.well-known/acme-challenge/token")
    assert status == 200
    assert used(gov) > before  # exempt traffic still counts
    status, _, _ = await get(gov, "/.well-known/acme-challenge/../../bytes/5")
    assert status == 503  # no climbing out of an exempt prefix
    gov2 = await make_governor(cap="1 KiB", tenant={"exempt_clients": ["127.0.0.0/8"]})
    await get(gov2, "/bytes/5000")
    assert (await get(gov2, "/bytes/5000"))[0] == 200


# Paths an upstream may resolve out of an exempt prefix (a WHATWG URL parser takes "\\"
# for "/", Tomcat "..;" for "..", nginx merges "//" before resolving "..", some apps
# decode "%2F"), or that only share the prefix's first characters: never exempt.
ESCAPES = [
    "/robots.txt\\..\\bytes/5000",
    "/.well-known/acme-challenge/..\\..\\bytes/5000",
    "/robots.txtbig",
    "/robots.txt%5C..%5Cbytes/5000",
    "/robots.txt/..%2Fbytes/5000",
    "/.well-known/acme-challenge/%2e%2e/%2E%2E/bytes/5000",
    "/.well-known/acme-challenge/..%2F..%2Fbytes/5000",
    "/.well-known/acme-challenge//../../bytes/5000",
    "/.well-known/acme-challenge/..;/..;/bytes/5000",
    "/.well-known/acme-challenge/x/../../../bytes/5000",
    "/.well-known/acme-challenge/%252e%252e/bytes/5000",
    "/./robots.txt/../bytes/5000",
    "/robots.txt#/../bytes/5000",
    "http://site.test/robots.txt\\..\\bytes/5000",
]
# Exempt: the prefix itself, below it, a query, encoded unreserved characters.
PASSES = [
    "/robots.txt",
    "/robots.txt?x=/../bytes/5000",
    "/robots%2Etxt",
    "/%72obots.txt",
    "/.well-known/acme-challenge/token-123_ABC",
    "/.well-known/acme-challenge/",
    "HTTP://site.test/robots.txt",
]


async def test_exempt_paths_match_a_normalised_path_on_a_segment_boundary(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(
        cap="1 KiB", tenant={"exempt_paths": ["/robots.txt", "/.well-known/acme-challenge/"]}
    )
    await get(gov, "/bytes/5000")
    hits = seen.hits
    for target in ESCAPES:
        client = await RawClient.connect(gov.port)
        await client.send(f"GET {target} HTTP/1.1\r\nHost: site.test\r\n\r\n".encode())
        resp = await client.response()
        await client.close()
        assert resp.status == 503, target
    assert seen.hits == hits  # none of them reached the upstream
    for target in PASSES:
        client = await RawClient.connect(gov.port)
        await client.send(f"GET {target} HTTP/1.1\r\nHost: site.test\r\n\r\n".encode())
        resp = await client.response()
        await client.close()
        assert resp.status == 200, target
    assert seen.hits == hits + len(PASSES)


async def test_at_cap_cut_aborts_a_response_at_the_cap(make_governor: GovernorFactory) -> None:
    gov = await make_governor(cap="100 KiB", tenant={"at_cap": "cut"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/1000000", "site.test"))
    resp = await client.response()
    assert not resp.complete
    await client.read_to_eof()
    await client.close()
    assert used(gov) == client.received
    assert 100 * 1024 <= used(gov) < 100 * 1024 + 100  # cut at the cap, not a chunk later


async def test_at_cap_cut_counts_chunk_framing_into_the_cap(make_governor: GovernorFactory) -> None:
    gov = await make_governor(cap="50000", tenant={"at_cap": "cut"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/chunked/1000000", "site.test"))
    resp = await client.response()
    await client.read_to_eof()
    await client.close()
    assert not resp.complete
    assert used(gov) == client.received
    assert 50000 - 20 <= used(gov) <= 50000


async def test_at_cap_finish_completes_the_response(make_governor: GovernorFactory) -> None:
    gov = await make_governor(cap="100 KiB")
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/chunked/1000000", "site.test"))
    resp = await client.response()
    await client.close()
    assert resp.complete
    assert resp.body == pattern(1000000)
    assert used(gov) == client.received


async def test_restart_resumes_the_days_total(
    tmp_path: object, upstream_url: str, clock: FakeClock, seen: Seen
) -> None:
    from pathlib import Path

    path = write_config(Path(str(tmp_path)), upstream=upstream_url, cap="10 KiB")
    gov = Governor(load_config(path), clock=clock)
    await gov.start()
    await get(gov, "/bytes/20000")
    total = used(gov)
    await gov.stop()  # the final flush writes every count
    again = Governor(load_config(path), clock=clock)
    await again.start()
    try:
        assert used(again) == total
        assert (await get(again, "/bytes/10"))[0] == 503
    finally:
        await again.stop()


async def test_reload_raises_the_cap_at_once_and_rejects_a_bad_file(
    make_governor: GovernorFactory, tmp_path: object, upstream_url: str
) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path))
    gov = await make_governor(cap="10 KiB")
    await get(gov, "/bytes/20000")
    assert (await get(gov, "/bytes/10"))[0] == 503
    charged = used(gov)
    good = folder / "governor.yaml"
    text = good.read_text().replace("10 KiB", "1 MiB")
    good.write_text(text)
    assert await gov.reload()
    assert (await get(gov, "/bytes/10"))[0] == 200
    assert used(gov) > charged  # counts survive the reload
    good.write_text(text.replace("daily_cap: 1 MiB", "daily_cap: lots"))
    assert not await gov.reload()
    assert (await get(gov, "/bytes/10"))[0] == 200  # the old config stays


async def test_reset_follows_the_tenants_zone_across_dst(
    make_governor: GovernorFactory, clock: FakeClock
) -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    ny = ZoneInfo("America/New_York")
    clock.set(dt.datetime(2024, 3, 9, 23, 0, tzinfo=ny))
    gov = await make_governor(cap="10 KiB", tenant={"timezone": "America/New_York"})
    await get(gov, "/bytes/20000")
    status, headers, _ = await get(gov, "/", Accept="application/json")
    assert status == 503
    assert headers["Retry-After"] == "3600"
    clock.set(dt.datetime(2024, 3, 10, 0, 0, tzinfo=ny))
    assert (await get(gov, "/bytes/20000"))[0] == 200  # a new day: open again
    status, headers, body = await get(gov, "/", Accept="application/json")
    assert status == 503
    # 2024-03-10 has 23 hours in New York: the next reset is 23 h away, at -04:00.
    assert json.loads(body)["resets_at"] == "2024-03-11T00:00:00-04:00"
    assert headers["Retry-After"] == str(23 * 3600)


async def test_a_download_across_midnight_pays_each_day_its_share(
    make_governor: GovernorFactory, clock: FakeClock
) -> None:
    clock.set(seoul(2024, 2, 21, 23, 59, 59))
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", f"/stream/{1024}", "site.test"))  # 64 MiB
    got = 0
    while got < 2**20:
        got += len(await client.reader.read(65536))
    clock.set(seoul(2024, 2, 22, 0, 0, 1))
    while got < 64 * 2**20:
        data = await client.reader.read(2**20)
        assert data
        got += len(data)
    await client.close()
    await gov.flusher.flush()
    days = await gov.store.totals([("site", "2024-02-21"), ("site", "2024-02-22")])
    old, new = days[("site", "2024-02-21")], days[("site", "2024-02-22")]
    # What the client read had crossed before midnight; a running claim takes what the
    # kernel transmitted, at most CLAIM_STEP of the response after it crossed.
    assert old >= 2**20 - CLAIM_STEP
    assert new > 0
    assert old + new == got


async def test_head_for_the_notice_has_the_get_length_and_no_body(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(cap="1 KiB")
    await get(gov, "/bytes/5000")
    client = await RawClient.connect(gov.port)
    await client.send(request("HEAD", "/", "site.test"))
    head = await client.response(method="HEAD")
    await client.send(request("GET", "/", "site.test"))
    full = await client.response()
    await client.close()
    assert head.status == full.status == 503
    assert head.body == b""
    assert head.header("Content-Length") == str(len(full.body)) != "0"
    assert head.header("Server") == "governor"
