"""WebSocket upgrades are tunnelled after the upstream's 101 and metered both ways."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from typing import Any

import pytest

from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_metering import used
from tests.functional.upstream_app import Seen
from tests.support import RawClient, request


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def read_frame(client: RawClient) -> tuple[int, bytes]:
    head = await client.reader.readexactly(2)
    n = head[1] & 0x7F
    extra = b""
    if n == 126:
        extra = await client.reader.readexactly(2)
        n = struct.unpack("!H", extra)[0]
    elif n == 127:
        extra = await client.reader.readexactly(8)
        n = struct.unpack("!Q", extra)[0]
    payload = await client.reader.readexactly(n)
    client.received += 2 + len(extra) + n
    return head[0] & 0x0F, payload


async def handshake(gov: Governor, path: str = "/ws") -> tuple[RawClient, bytes]:
    client = await RawClient.connect(gov.port)
    key = base64.b64encode(os.urandom(16)).decode()
    await client.send(
        request(
            "GET",
            path,
            "site.test",
            "Connection: Upgrade",
            "Upgrade: websocket",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        )
    )
    head = await client.reader.readuntil(b"\r\n\r\n")
    client.received += len(head)
    return client, head


async def test_websocket_is_tunnelled_and_counted_both_ways(make_governor: GovernorFactory) -> None:
    gov = await make_governor(tenant={"count": "both"})
    client, head = await handshake(gov)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-accept" in head.lower()
    await client.send(frame(b"hello"))
    assert await read_frame(client) == (0x1, b"echo:hello")
    big = os.urandom(300_000)
    await client.send(frame(big, opcode=0x2))
    assert await read_frame(client) == (0x2, big)
    await client.send(frame(b"", opcode=0x8))  # close
    opcode, _ = await read_frame(client)
    assert opcode == 0x8
    assert await client.read_to_eof() == 0
    await client.close()
    assert used(gov) == client.sent + client.received


async def test_websocket_refused_by_upstream_is_relayed_as_a_response(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor()
    client = await RawClient.connect(gov.port)
    await client.send(
        request("GET", "/bytes/10", "site.test", "Connection: Upgrade", "Upgrade: websocket")
    )
    resp = await client.response()
    await client.send(request("GET", "/bytes/20", "site.test"))
    after = await client.response()
    await client.close()
    assert resp.status == 200
    assert len(resp.body) == 10
    assert after.status == 200
    assert len(after.body) == 20
    assert used(gov) == client.received


async def test_websocket_closed_at_the_cap(make_governor: GovernorFactory) -> None:
    gov = await make_governor(cap="20 KiB", tenant={"count": "both"})
    client, head = await handshake(gov)
    assert head.startswith(b"HTTP/1.1 101")
    await client.send(frame(os.urandom(30_000), opcode=0x2))
    # The upstream's echo would cross the cap: the tunnel is closed instead.
    leftover = await client.read_to_eof()
    await client.close()
    assert leftover < 30_000
    assert used(gov) == client.sent + client.received


EXEMPTIONS = [
    {"exempt_paths": ["/ws"]},
    {"exempt_paths": ["/"]},
    {"exempt_clients": ["127.0.0.0/8"]},
]


@pytest.mark.parametrize("exemption", EXEMPTIONS, ids=["path", "root-path", "client"])
async def test_an_upgrade_is_never_exempt_its_tunnel_is_closed_at_the_cap(
    make_governor: GovernorFactory, exemption: dict[str, Any]
) -> None:
    gov = await make_governor(cap="20 KiB", tenant={"count": "both", **exemption})
    client, head = await handshake(gov)
    assert head.startswith(b"HTTP/1.1 101")
    await client.send(frame(os.urandom(30_000), opcode=0x2))
    async with asyncio.timeout(10):  # an exempt tunnel would echo all and stay open
        leftover = await client.read_to_eof()
    await client.close()
    assert leftover < 30_000
    assert used(gov) == client.sent + client.received


@pytest.mark.parametrize("exemption", EXEMPTIONS, ids=["path", "root-path", "client"])
async def test_an_upgrade_on_an_exempt_path_of_a_blocked_tenant_gets_the_notice(
    make_governor: GovernorFactory, seen: Seen, exemption: dict[str, Any]
) -> None:
    gov = await make_governor(cap="1 KiB", tenant=exemption)
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", "/bytes/5000", "site.test", "Connection: close"))
    await client.read_to_eof()
    await client.close()
    hits = seen.hits
    client, head = await handshake(gov)
    await client.close()
    assert head.startswith(b"HTTP/1.1 503")
    assert seen.hits == hits  # the upgrade never reached the upstream
