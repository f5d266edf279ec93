"""Forwarding: headers both ways, upstream failures, and bodies that stream."""

from __future__ import annotations

import asyncio
import json
import time

from tests.functional.conftest import GovernorFactory
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, free_port, request


async def test_hop_by_hop_headers_are_stripped_and_forwarding_headers_set(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(trusted_proxies=["10.0.0.0/8"])
    client = await RawClient.connect(gov.port)
    await client.send(
        request(
            "GET",
            "/headers",
            "www.site.test:8443",
            "Connection: keep-alive, X-Private",
            "X-Private: secret",
            "Keep-Alive: timeout=5",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "TE: trailers",
            "X-Forwarded-For: 6.6.6.6",
            "X-End-To-End: yes",
        )
    )
    resp = await client.response()
    await client.close()
    got = {k.lower(): v for k, v in json.loads(resp.body)["headers"]}
    assert got["host"] == "www.site.test:8443"  # unchanged
    assert got["x-end-to-end"] == "yes"
    for hop in ("x-private", "keep-alive", "proxy-authorization", "te"):
        assert hop not in got, hop
    assert got["x-forwarded-for"] == "127.0.0.1"  # the client's own claim is not trusted
    assert got["x-forwarded-proto"] == "http"
    assert got["x-forwarded-host"] == "www.site.test:8443"
    assert got["via"] == "1.1 governor"
    # and on the way back
    assert resp.header("X-Secret-Hop") is None
    assert resp.header("Keep-Alive") is None
    assert resp.header("X-End-To-End") == "kept"


async def test_fields_with_underscores_do_not_reach_the_upstream(
    make_governor: GovernorFactory,
) -> None:
    """As in nginx: a CGI-style upstream would read Transfer_Encoding as Transfer-Encoding."""
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(
        request(
            "GET",
            "/headers",
            "site.test",
            "Transfer_Encoding: chunked",
            "Content_Length: 5",
            "X-Kept-Field: yes",
        )
    )
    resp = await client.response()
    await client.close()
    names = [k.lower() for k, _ in json.loads(resp.body)["headers"]]
    assert "x-kept-field" in names
    assert not [n for n in names if "_" in n], names


async def test_x_forwarded_for_from_a_trusted_proxy_is_extended(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor(trusted_proxies=["127.0.0.0/8"])
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/headers", "site.test", "X-Forwarded-For: 198.51.100.7"))
    resp = await client.response()
    await client.close()
    got = {k.lower(): v for k, v in json.loads(resp.body)["headers"]}
    assert got["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"


async def test_refused_upstream_gives_502(make_governor: GovernorFactory) -> None:
    gov = await make_governor(upstream=f"http://127.0.0.1:{free_port()}")
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/", "site.test"))
    resp = await client.response()
    await client.close()
    assert resp.status == 502
    assert b"could not be reached" in resp.body
    assert b"127.0.0.1" not in resp.body  # the upstream's address stays in the log
    assert gov.runtime.ledger.pending_bytes() == resp.received  # governor's 502 is charged


async def test_silent_upstream_gives_504(make_governor: GovernorFactory, seen: Seen) -> None:
    gov = await make_governor(timeouts={"upstream_response": "200ms"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/hang", "site.test"))
    resp = await client.response()
    seen.release.set()
    await client.close()
    assert resp.status == 504


async def test_a_pooled_connection_carries_no_deadline_from_its_last_exchange(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    """Each exchange has its own response deadline, also on a reused upstream connection.

    The first answer comes 0.4 s into its 1 s deadline; the second, on the same pooled
    connection, runs from 0.4 s to 1.2 s: past the first deadline, inside its own.
    """
    gov = await make_governor(timeouts={"upstream_response": "1s"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/delay/400", "site.test"))
    first = await client.response()
    await client.send(request("GET", "/delay/800", "site.test"))
    second = await client.response()
    await client.close()
    assert (first.status, second.status) == (200, 200)
    assert second.body == b"slow but sure"
    assert len(set(seen.peers)) == 1  # one upstream connection carried both


async def test_large_upload_and_download_stream_through(make_governor: GovernorFactory) -> None:
    gov = await make_governor(tenant={"count": "both"})
    size = 32 * 2**20
    client = await RawClient.connect(gov.port)
    await client.send(
        b"POST /echo HTTP/1.1\r\nHost: site.test\r\nContent-Length: %d\r\n\r\n" % size
    )
    block = pattern(2**20)

    async def upload() -> None:
        for _ in range(size // len(block)):
            await client.send(block)

    import asyncio

    sender = asyncio.get_running_loop().create_task(upload())
    resp = await client.response()
    await sender
    await client.close()
    assert resp.status == 200
    assert len(resp.body) == size
    assert resp.body[: 2**20] == block
    site = gov.runtime.snapshot.tenants["site"]
    key = ("site", site.periods.current(gov.runtime.clock()).key)
    assert gov.runtime.ledger.used(key) == client.sent + client.received


async def test_bodies_stream_in_bounded_memory(make_governor: GovernorFactory) -> None:
    """128 MiB down and 128 MiB up never hold more than a few buffers in memory."""
    import tracemalloc

    gov = await make_governor()
    size = 128 * 2**20
    block = pattern(2**20)
    tracemalloc.start()
    try:
        client = await RawClient.connect(gov.port)
        await client.send(request("GET", f"/stream/{size // 65536}", "site.test"))
        head = await client.reader.readuntil(b"\r\n\r\n")
        got = 0
        while got < size:
            data = await client.reader.read(2**20)
            assert data
            got += len(data)
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: site.test\r\nContent-Length: %d\r\n\r\n" % size
        )
        for _ in range(size // len(block)):
            await client.send(block)
        resp = await client.response()
        await client.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert b"200 OK" in head
    assert got == size
    assert json.loads(resp.body) == {"received": size}
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB for 256 MiB streamed"


async def test_upstream_connections_are_pooled_and_kept_alive(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    gov = await make_governor()
    for _ in range(5):  # five client connections, one after another
        client = await RawClient.connect(gov.port)
        await client.send(request("GET", "/bytes/100", "site.test"))
        assert (await client.response()).status == 200
        await client.close()
    assert len(seen.peers) == 5
    assert len(set(seen.peers)) == 1  # all over one upstream connection


async def test_reload_lets_in_flight_requests_finish_under_the_old_config(
    make_governor: GovernorFactory, seen: Seen, tmp_path: object
) -> None:
    import asyncio
    from pathlib import Path

    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/hang", "site.test"))
    await asyncio.wait_for(seen.hanging.wait(), timeout=5)
    path = Path(str(tmp_path)) / "governor.yaml"
    path.write_text(path.read_text().replace("site.test", "moved.test"))
    assert await gov.reload()
    seen.release.set()
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    assert resp.body == b"late"
    fresh = await RawClient.connect(gov.port)
    await fresh.send(request("GET", "/bytes/1", "site.test"))
    assert (await fresh.response()).status == 421  # new requests see the new config
    await fresh.close()


async def test_a_slow_first_byte_does_not_hold_back_the_headers(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    """Headers usually leave with the first body bytes; an event stream's must not wait."""
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/slow-body", "site.test"))
    async with asyncio.timeout(5):
        head = await client.reader.readuntil(b"\r\n\r\n")  # before the body is released
    assert head.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in head
    seen.release.set()
    body = await client.reader.readuntil(b"0\r\n\r\n")
    await client.close()
    assert b"data: late" in body


async def test_an_upstream_silent_mid_body_is_cut_off_after_upstream_response(
    make_governor: GovernorFactory, seen: Seen
) -> None:
    """The head came, then nothing: after upstream_response of silence the visitor's
    connection closes without a clean end, so the truncation shows; the count is exact."""
    gov = await make_governor(timeouts={"upstream_response": "300ms"})
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/slow-body", "site.test"))
    async with asyncio.timeout(5):
        head = await client.reader.readuntil(b"\r\n\r\n")
        started = time.monotonic()
        rest = await client.reader.read()  # to EOF: governor closes
    elapsed = time.monotonic() - started
    seen.release.set()
    await client.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"0\r\n\r\n" not in rest  # no last chunk: the visitor knows it is truncated
    assert 0.25 <= elapsed < 2.0, elapsed
    usage = gov.runtime.usage("site")
    assert usage is not None
    assert usage.used_bytes == len(head) + len(rest)  # egress: what the visitor got, exactly


async def test_a_client_that_half_closes_gets_its_response_then_the_close(
    make_governor: GovernorFactory,
) -> None:
    """A request followed by the client's FIN: answered in full, then the connection ends
    at once (nothing more can come), not after the keep-alive timeout."""
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/5000", "site.test"))
    client.writer.write_eof()
    async with asyncio.timeout(5):
        resp = await client.response()
        rest = await client.reader.read()  # EOF from governor
    await client.close()
    assert resp.status == 200
    assert len(resp.body) == 5000
    assert resp.header("Connection") == "close"
    assert rest == b""
