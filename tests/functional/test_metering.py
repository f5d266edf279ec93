"""Counted bytes are wire bytes: a raw-socket client counts what crosses the wire,
and governor's count for the tenant must equal it, to the byte."""

from __future__ import annotations

import asyncio

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, request


def used(gov: Governor, tenant: str = "site") -> int:
    site = gov.runtime.snapshot.tenants[tenant]
    key = (tenant, site.periods.current(gov.runtime.clock()).key)
    return gov.runtime.ledger.used(key)


async def test_content_length_response_counted_to_the_byte(make_governor: GovernorFactory) -> None:
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/100000", "site.test"))
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    assert resp.body == pattern(100000)
    assert resp.header("Content-Length") == "100000"
    assert used(gov) == resp.received
    assert resp.received > 100000  # the status line and headers are counted too


async def test_chunked_response_counted_with_its_framing(make_governor: GovernorFactory) -> None:
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/chunked/50000", "site.test"))
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    assert resp.header("Transfer-Encoding") == "chunked"
    assert resp.body == pattern(50000)
    assert used(gov) == resp.received


async def test_keep_alive_requests_all_counted(make_governor: GovernorFactory) -> None:
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    total = 0
    for path in ("/bytes/10", "/chunked/3000", "/bytes/70000", "/status/204"):
        await client.send(request("GET", path, "site.test"))
        resp = await client.response()
        total += resp.received
    await client.close()
    assert client.received == total
    assert used(gov) == total


async def test_head_204_and_304_carry_no_body_and_are_counted(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("HEAD", "/bytes/5000", "site.test"))
    head = await client.response(method="HEAD")
    await client.send(request("GET", "/status/304", "site.test"))
    not_modified = await client.response()
    await client.send(request("GET", "/status/204", "site.test"))
    no_content = await client.response()
    await client.send(request("GET", "/bytes/7", "site.test"))
    after = await client.response()
    await client.close()
    assert head.status == 200
    assert head.body == b""
    assert head.header("Content-Length") == "5000"
    assert not_modified.status == 304
    assert not_modified.body == b""
    assert no_content.status == 204
    assert no_content.body == b""
    assert after.body == pattern(7)  # the connection is still in step
    assert used(gov) == client.received


async def test_ingress_counts_request_line_headers_and_body(make_governor: GovernorFactory) -> None:
    gov = await make_governor(tenant={"count": "ingress"})
    client = await RawClient.connect(gov.port)
    body = pattern(200_000)
    raw = request("POST", "/upload", "site.test", "X-Odd-Spacing:   yes  ", body=body)
    await client.send(raw)
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    assert b'"received": 200000' in resp.body
    assert used(gov) == client.sent == len(raw)


async def test_chunked_upload_counted_with_its_framing(make_governor: GovernorFactory) -> None:
    gov = await make_governor(tenant={"count": "both"})
    client = await RawClient.connect(gov.port)
    head = b"POST /upload HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    await client.send(head)
    for size in (1, 4096, 65536, 3):
        await client.send(f"{size:x};ext=1\r\n".encode() + pattern(size) + b"\r\n")
    await client.send(b"0\r\n\r\n")
    resp = await client.response()
    await client.close()
    assert b'"received": 69636' in resp.body
    assert used(gov) == client.sent + client.received


async def test_upstream_dying_mid_body_truncates_the_client_and_counts_exactly(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor()
    received = 0
    for path in ("/die/30000", "/die-chunked/30000"):
        client = await RawClient.connect(gov.port)
        await client.send(request("GET", path, "site.test"))
        resp = await client.response()
        assert not resp.complete, path  # no clean end of body: the client sees truncation
        assert len(resp.body) >= 30000
        assert await client.read_to_eof() == 0
        await client.close()
        received += client.received
    assert used(gov) == received


async def test_client_abort_releases_upstream_and_counts_only_what_was_written(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/forever", "site.test"))
    got = 0
    while got < 1_000_000:
        data = await client.reader.read(65536)
        assert data
        got += len(data)
    client.writer.transport.abort()
    await asyncio.wait_for(seen.stream_cancelled.wait(), timeout=5)
    # Written bytes may sit in kernel buffers the client never read, but nothing
    # near the upstream's 6.5 GB is charged.
    assert got <= used(gov) < got + 16 * 2**20


async def test_upload_the_upstream_never_read_is_charged_to_its_own_request(
    make_governor: GovernorFactory, upstream_url: str
) -> None:
    other = {"hosts": ["other.test"], "upstream": upstream_url, "daily_cap": "1 GiB"}
    gov = await make_governor(defaults={"count": "both"}, others={"other": other})
    client = await RawClient.connect(gov.port)
    upload = request("POST", "/early", "site.test", body=pattern(4 * 2**20))
    await client.send(upload)
    early = await client.response()
    mark_sent, mark_received = client.sent, client.received
    await client.send(request("GET", "/bytes/10", "other.test"))  # same connection
    after = await client.response()
    await client.close()
    assert early.status == 413
    assert after.status == 200
    assert used(gov, "site") == mark_sent + mark_received
    assert used(gov, "other") == (client.sent - mark_sent) + (client.received - mark_received)


async def test_a_blocked_upload_is_not_charged_and_the_connection_stays_usable(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(cap="1 KiB", tenant={"count": "both"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/5000", "site.test"))
    await client.response()
    charged = used(gov)
    await client.send(request("POST", "/upload", "site.test", body=pattern(2**20)))
    notice = await client.response()
    await client.send(request("GET", "/", "site.test"))
    again = await client.response()
    await client.close()
    assert notice.status == again.status == 503
    assert used(gov) == charged
    assert seen.uploads == []


async def test_expect_100_continue_once_for_http_1_1_and_never_for_1_0(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(tenant={"count": "both"})
    body = pattern(5000)
    client = await RawClient.connect(gov.port)
    await client.send(
        b"POST /upload HTTP/1.1\r\nHost: site.test\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5000\r\n\r\n"
    )
    interim = await client.reader.readuntil(b"\r\n\r\n")
    client.received += len(interim)
    await client.send(body)
    resp = await client.response()
    await client.close()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert resp.status == 200
    assert b"100 Continue" not in resp.head
    assert used(gov) == client.sent + client.received
    old = await RawClient.connect(gov.port)
    await old.send(
        b"POST /upload HTTP/1.0\r\nHost: site.test\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5000\r\n\r\n" + body
    )
    first = await old.reader.readuntil(b"\r\n")
    await old.close()
    # No interim answer: the first line is the response (HTTP/1.1, as nginx answers 1.0 too).
    assert first.startswith(b"HTTP/1.1 200")
