"""On TLS, counted bytes are the bytes that cross the socket, records and handshake included.

Every test puts a byte-counting TCP relay (:mod:`tests.support.relay`) between a real TLS
client (Python's ssl, curl, headless Chromium, aiohttp's WebSocket) and governor's TLS
listener, and the tenant (counting both directions) must be charged exactly what the
relay saw cross, to the byte: the handshake, each request's records, the close_notify.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from governor.process.instance import Governor
from tests.functional.chromium import CHROMIUM, dump_dom, needs_chromium
from tests.functional.conftest import GovernorFactory
from tests.functional.tls_site import TLSSite, start_tls_site
from tests.functional.upstream_app import Seen, pattern
from tests.support import RawClient, eventually, request
from tests.support.relay import Relay


def used(gov: Governor, tenant: str = "site") -> int:
    site = gov.runtime.snapshot.tenants[tenant]
    key = (tenant, site.periods.current(gov.runtime.clock()).key)
    return gov.runtime.ledger.used(key)


@pytest.fixture
async def tls(make_governor: GovernorFactory, tmp_path: Path) -> TLSSite:
    return await start_tls_site(make_governor, tmp_path, defaults={"count": "both"})


@pytest.fixture
async def relay(tls: TLSSite) -> AsyncIterator[Relay]:
    relay = Relay(tls.tls_port)
    await relay.start()
    yield relay
    await relay.close()


async def relayed(tls: TLSSite, relay: Relay, server_name: str = "site.test") -> RawClient:
    """A byte-counting HTTP client over TLS, through the relay."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", relay.port, ssl=tls.context(), server_hostname=server_name
    )
    return RawClient(reader, writer)


async def charged_as_relayed(gov: Governor, relay: Relay, tenant: str = "site") -> None:
    """Every relayed connection ended, and the tenant is charged what crossed, to the byte."""
    await relay.settled()
    try:
        await eventually(lambda: used(gov, tenant) == relay.up + relay.down)
    except AssertionError:
        crossed = f"{relay.up} up + {relay.down} down = {relay.up + relay.down}"
        raise AssertionError(f"{tenant} charged {used(gov, tenant)}; crossed {crossed}") from None


async def test_keep_alive_requests_over_tls(tls: TLSSite, relay: Relay) -> None:
    client = await relayed(tls, relay)
    for path in ("/bytes/10", "/chunked/3000", "/bytes/70000", "/status/204"):
        await client.send(request("GET", path, "site.test"))
        resp = await client.response()
        assert resp.status in (200, 204)
    await client.close()
    await charged_as_relayed(tls.gov, relay)
    assert relay.down > client.received  # records, handshake and close_notify on top


async def test_head_and_chunked_over_tls(tls: TLSSite, relay: Relay) -> None:
    client = await relayed(tls, relay)
    await client.send(request("HEAD", "/bytes/5000", "site.test"))
    head = await client.response(method="HEAD")
    await client.send(request("GET", "/chunked/50000", "site.test"))
    chunked = await client.response()
    await client.close()
    assert head.header("Content-Length") == "5000"
    assert chunked.body == pattern(50000)
    await charged_as_relayed(tls.gov, relay)


async def test_upload_over_tls(tls: TLSSite, relay: Relay) -> None:
    client = await relayed(tls, relay)
    body = pattern(3 * 2**20)
    await client.send(request("POST", "/upload", "site.test", body=body))
    resp = await client.response()
    await client.close()
    assert resp.status == 200
    await charged_as_relayed(tls.gov, relay)
    assert relay.up > len(body)


async def test_two_connections_and_a_client_that_closes_without_close_notify(
    tls: TLSSite, relay: Relay
) -> None:
    first = await relayed(tls, relay)
    second = await relayed(tls, relay)
    await first.send(request("GET", "/bytes/1000", "site.test"))
    await second.send(request("GET", "/bytes/2000", "site.test"))
    assert (await first.response()).status == 200
    assert (await second.response()).status == 200
    await first.close()
    raw = second.writer.transport.get_extra_info("socket")
    raw.shutdown(socket.SHUT_RDWR)  # a plain TCP close, no close_notify
    await charged_as_relayed(tls.gov, relay)


async def test_a_handshake_alone_is_charged_to_the_tenant_its_sni_names(
    tls: TLSSite, relay: Relay
) -> None:
    client = await relayed(tls, relay, "www.site.test")  # a wildcard host
    await client.close()
    await charged_as_relayed(tls.gov, relay)
    assert relay.up + relay.down > 500


async def test_an_aborted_download_over_tls(tls: TLSSite, relay: Relay, seen: Seen) -> None:
    """The client stops reading, then resets: what governor's socket transmitted is charged,
    not what it still held (dropped with the connection)."""
    client = await relayed(tls, relay)
    await client.send(request("GET", "/forever", "site.test"))
    got = 0
    while got < 1_000_000:
        data = await client.reader.read(65536)
        assert data
        got += len(data)
    # Stop reading: the buffers fill all the way to governor, which stops sending.
    server = tls.gov._server
    assert server is not None
    await eventually(
        lambda: any(c.flow.writing_paused for c in server.connections),
        what="governor paused writing to the relay",
    )
    sock = client.writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()
    await asyncio.wait_for(seen.stream_cancelled.wait(), timeout=5)
    await charged_as_relayed(tls.gov, relay)


async def test_websocket_over_tls(tls: TLSSite, relay: Relay) -> None:
    port = relay.port
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"wss://127.0.0.1:{port}/ws",
            ssl=tls.context(),
            server_hostname="site.test",
            headers={"Host": "site.test"},
        ) as ws,
    ):
        for i in range(20):
            await ws.send_str(f"message {i} " + "x" * i * 100)
            reply = await ws.receive_str()
            assert reply.startswith(f"echo:message {i}")
        await ws.send_bytes(pattern(200_000))
        assert await ws.receive_bytes() == pattern(200_000)
    await charged_as_relayed(tls.gov, relay)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_over_tls(tls: TLSSite, relay: Relay, tmp_path: Path) -> None:
    port = relay.port
    base = f"https://site.test:{port}"
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--cacert",
        str(tls.ca.path),
        "--resolve",
        f"site.test:{port}:127.0.0.1",
        "-o",
        str(tmp_path / "a"),
        f"{base}/bytes/100000",
        "-o",
        str(tmp_path / "b"),
        f"{base}/chunked/20000",
        "-o",
        str(tmp_path / "c"),
        "--data-binary",
        "@" + str(tls.site.cert),
        f"{base}/upload",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert (tmp_path / "a").read_bytes() == pattern(100000)
    await charged_as_relayed(tls.gov, relay)


def spki_hash(pem: Path) -> str:
    cert = x509.load_pem_x509_certificates(pem.read_bytes())[0]
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@needs_chromium
async def test_chromium_over_tls(tls: TLSSite, relay: Relay, tmp_path: Path) -> None:
    """A real browser, trusting the test certificate's key, loads a page through the relay."""
    assert CHROMIUM is not None
    port = relay.port
    html = await dump_dom(
        f"https://site.test:{port}/page.html",
        tmp_path / "profile",
        extra=[
            "--host-resolver-rules=MAP site.test 127.0.0.1",
            f"--ignore-certificate-errors-spki-list={spki_hash(tls.site.cert)}",
        ],
    )
    assert "/page.html" in html  # the upstream's JSON echo, rendered
    await charged_as_relayed(tls.gov, relay)


async def test_a_request_half_closed_without_close_notify_is_answered(
    tls: TLSSite, relay: Relay
) -> None:
    """A client that sends its request, then a FIN without close_notify, gets its response."""
    client = await relayed(tls, relay)
    await client.send(request("GET", "/bytes/5000", "site.test"))
    sock = client.writer.transport.get_extra_info("socket")
    sock.shutdown(socket.SHUT_WR)
    resp = await client.response()
    assert resp.status == 200
    assert resp.body == pattern(5000)
    await client.close()
    await charged_as_relayed(tls.gov, relay)


async def test_a_failed_handshake_that_names_a_tenant_is_charged_to_it(
    tls: TLSSite, relay: Relay
) -> None:
    """A client that does not trust the certificate gives up mid-handshake: what crossed
    was the site's traffic all the same."""
    untrusting = ssl.create_default_context()  # the system's CAs: not the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(
            "127.0.0.1", relay.port, ssl=untrusting, server_hostname="site.test"
        )
    await charged_as_relayed(tls.gov, relay)
    assert relay.up + relay.down > 500
