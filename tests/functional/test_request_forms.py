"""Request forms, over real sockets, against an upstream that records the bytes it gets.

The tenant a request is charged to must be the site the upstream serves: an
absolute-form target is checked against Host and rewritten to origin-form, Host
always reaches the upstream (whatever Connection names), and the request forms
nginx and HAProxy both accept without ambiguity are served, forwarded in
canonical form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.raw_upstream import RawUpstream
from tests.functional.test_metering import used
from tests.support import RawClient, RawResponse


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


async def two_sites(make_governor: GovernorFactory, upstream: RawUpstream) -> Governor:
    """Tenants ``a`` (a.test) and ``b`` (b.test, blocked) behind one upstream."""
    gov = await make_governor(
        upstream=upstream.url,
        tenant={"hosts": ["a.test"]},
        others={"b": {"hosts": ["b.test"], "upstream": upstream.url, "daily_cap": "1 KiB"}},
    )
    assert (await exchange(gov, b"GET /size/4000 HTTP/1.1\r\nHost: b.test\r\n\r\n")).status == 200
    assert (await exchange(gov, b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n")).status == 503
    return gov


async def exchange(gov: Governor, data: bytes, method: str = "GET") -> RawResponse:
    client = await RawClient.connect(gov.port)
    await client.send(data)
    resp = await client.response(method=method)
    await client.close()
    return resp


async def test_an_absolute_form_target_names_the_host_it_is_charged_to(
    make_governor: GovernorFactory, raw_upstream: RawUpstream
) -> None:
    gov = await two_sites(make_governor, raw_upstream)
    seen = len(raw_upstream.received)
    before = used(gov, "b")
    # Charged to a.test (open), aimed at b.test (blocked): refused, as HAProxy does.
    for scheme in (b"HTTP", b"http", b"hTTp", b"HTTPS"):
        resp = await exchange(
            gov, b"GET " + scheme + b"://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n"
        )
        assert resp.status == 400, scheme
    # Only http and https; a target that is neither a path nor an absolute URI.
    for target in (b"ftp://a.test/", b"a.test/", b"*", b"http://u@a.test/", b"http:///"):
        resp = await exchange(gov, b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert resp.status == 400, target
    assert len(raw_upstream.received) == seen  # none of them reached the upstream
    assert used(gov, "b") == before

    # The authority matches Host (any case, default port or none): forwarded in
    # origin-form, Host as sent, and served as the site it was charged to.
    for target, path in [
        (b"HTTP://a.test/x?q=1", "/x?q=1"),
        (b"hTTpS://A.TEST:443/y", "/y"),
        (b"http://a.test:80", "/"),
        (b"http://a.test?z", "/?z"),
    ]:
        resp = await exchange(gov, b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\n\r\n")
        got = raw_upstream.received[-1]
        assert resp.status == 200, target
        assert resp.body == f"site=a.test path={path}".encode()
        assert got.line == f"GET {path} HTTP/1.1"
        assert got.header("host") == ["a.test"]
    # HTTP/1.0 without Host: the target names the tenant, and the upstream gets it as Host.
    resp = await exchange(gov, b"GET http://b.test/ HTTP/1.0\r\n\r\n")
    assert resp.status == 503  # b.test's cap, not a.test's
    resp = await exchange(gov, b"GET http://a.test/z HTTP/1.0\r\n\r\n")
    assert resp.status == 200
    assert raw_upstream.received[-1].header("host") == ["a.test"]
    assert resp.body == b"site=a.test path=/z"
    resp = await exchange(gov, b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert resp.status == 200
    assert raw_upstream.received[-1].line == "OPTIONS * HTTP/1.1"
    assert used(gov, "b") == before


@pytest.mark.parametrize(
    "connection", [b"host", b"Host", b"keep-alive, HOST, x-drop", b"x-drop,\thost"]
)
async def test_connection_never_removes_host(
    make_governor: GovernorFactory, raw_upstream: RawUpstream, connection: bytes
) -> None:
    gov = await make_governor(upstream=raw_upstream.url)
    resp = await exchange(
        gov,
        b"GET /x HTTP/1.1\r\nHost: site.test\r\nConnection: "
        + connection
        + b"\r\nX-Drop: 1\r\n\r\n",
    )
    assert resp.status == 200
    got = raw_upstream.received[-1]
    assert got.header("host") == ["site.test"]
    assert resp.body == b"site=site.test path=/x"
    if b"x-drop" in connection:
        assert got.header("x-drop") == []  # what Connection names still goes


@pytest.mark.parametrize(
    "host", ["SITE.TEST", "site.test.", "Site.Test:80", "site.test:", "a.site.test:8080"]
)
async def test_the_tenant_charged_is_the_host_the_upstream_sees(
    make_governor: GovernorFactory, raw_upstream: RawUpstream, host: str
) -> None:
    """governor folds a Host the way every server does (case, port, one final dot) and
    forwards it unchanged; anything that does not fold to a host name is refused."""
    gov = await make_governor(upstream=raw_upstream.url, tenant={"count": "both"})
    client = await RawClient.connect(gov.port)
    await client.send(f"GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    assert raw_upstream.received[-1].header("host") == [host]
    assert used(gov) == client.sent + client.received  # charged to the tenant it names


H = b"Host: site.test\r\n"


@pytest.mark.parametrize(
    ("data", "line", "body"),
    [
        # RFC 9112 §2.6: a higher minor version is served (and forwarded) as HTTP/1.1.
        (b"GET /a HTTP/1.2\r\n" + H + b"\r\n", "GET /a HTTP/1.1", b""),
        (b"GET /a HTTP/1.9\r\n" + H + b"\r\n", "GET /a HTTP/1.1", b""),
        # RFC 9112 §2.2: empty lines before the request line.
        (b"\r\nGET /a HTTP/1.1\r\n" + H + b"\r\n", "GET /a HTTP/1.1", b""),
        (b"\r\n\r\n\r\nGET /a HTTP/1.1\r\n" + H + b"\r\n", "GET /a HTTP/1.1", b""),
        # RFC 9112 §3: runs of SP between the request line's parts.
        (b"GET  /a   HTTP/1.1\r\n" + H + b"\r\n", "GET /a HTTP/1.1", b""),
        # Content-Length with leading zeros, to any length.
        (
            b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: " + b"0" * 40 + b"5\r\n\r\nhello",
            "POST /a HTTP/1.1",
            b"hello",
        ),
        (
            b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: " + b"0" * 40 + b"\r\n\r\n",
            "POST /a HTTP/1.1",
            b"",
        ),
        # Chunk sizes with leading zeros, the last chunk too.
        (
            b"POST /a HTTP/1.1\r\n"
            + H
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"0" * 30
            + b"5\r\nhello\r\n"
            + b"0" * 30
            + b"\r\n\r\n",
            "POST /a HTTP/1.1",
            b"hello",
        ),
    ],
    ids=[
        "http-1.2",
        "http-1.9",
        "empty-line-first",
        "three-empty-lines-first",
        "runs-of-sp",
        "content-length-zero-padded",
        "content-length-all-zeros",
        "chunk-sizes-zero-padded",
    ],
)
async def test_unambiguous_requests_nginx_and_haproxy_accept_are_served(
    make_governor: GovernorFactory,
    raw_upstream: RawUpstream,
    data: bytes,
    line: str,
    body: bytes,
) -> None:
    gov = await make_governor(upstream=raw_upstream.url, tenant={"count": "both"})
    client = await RawClient.connect(gov.port)
    await client.send(data)
    resp = await client.response()
    assert resp.status == 200
    assert resp.head.startswith(b"HTTP/1.1 200 ")
    assert [r.line for r in raw_upstream.received] == [line]
    assert raw_upstream.received[0].body == body
    # The connection stays usable: the request was read to its exact end.
    await client.send(b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
    assert (await client.response()).body == b"site=site.test path=/next"
    await client.close()
    assert used(gov) == client.sent + client.received
