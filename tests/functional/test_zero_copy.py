"""A large body the kernel moves (splice), counted to the byte as it crosses the wire.

A plain-HTTP response whose declared length leaves at least ``ZERO_COPY_MIN`` bytes to
come, with nothing that must see each piece, goes from the upstream's socket to the
client's through a pipe (:mod:`governor.http1.zerocopy`). Every test puts the
byte-counting relay (:mod:`tests.support.relay`) between a raw client and governor and
holds the tenant (counting both directions) to what the relay saw cross; and checks,
by what the kernel moved, that the body did go that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from collections.abc import AsyncIterator

import pytest

from governor.http1.zerocopy import MOVED, ZERO_COPY_MIN, available
from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.test_tls_counting import charged_as_relayed
from tests.functional.upstream_app import pattern
from tests.support import RawClient, eventually, request
from tests.support.relay import Relay

pytestmark = pytest.mark.skipif(not available(), reason="no splice(2) here")

SIZE = 8 * 2**20


@pytest.fixture
async def gov(make_governor: GovernorFactory) -> Governor:
    return await make_governor(defaults={"count": "both"}, timeouts={"send": "500ms"})


@pytest.fixture
async def relay(gov: Governor) -> AsyncIterator[Relay]:
    relay = Relay(gov.port)
    await relay.start()
    yield relay
    await relay.close()


async def relayed(relay: Relay) -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    return RawClient(reader, writer)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_large_bodies_go_by_the_kernel_and_are_counted_to_the_byte(
    gov: Governor, relay: Relay
) -> None:
    before = (MOVED.responses, MOVED.bytes)
    client = await relayed(relay)
    for n in (SIZE, 3 * 2**20 + 17, 5000):  # two by the kernel, then a page, one connection
        await client.send(request("GET", f"/bytes/{n}", "site.test"))
        resp = await client.response()
        assert resp.status == 200
        assert resp.body == pattern(n)
    await client.close()
    assert MOVED.responses - before[0] == 2
    # What came with each head went the usual way; at least the rest went by the kernel.
    assert MOVED.bytes - before[1] >= 2 * (3 * 2**20 - 65536)
    await charged_as_relayed(gov, relay)


async def test_a_client_that_stops_reading_is_reset_and_charged_what_crossed(
    gov: Governor, relay: Relay
) -> None:
    before = open_descriptors()
    client = await relayed(relay)
    await client.send(request("GET", f"/bytes/{64 * 2**20}", "site.test"))
    got = 0
    while got < 2**20:
        data = await client.reader.read(65536)
        assert data
        got += len(data)
    # It reads no more: the relay, then governor's socket fill; timeouts.send (500 ms) later
    # governor resets the connection.
    server = gov._server
    assert server is not None
    await eventually(lambda: not server.connections, timeout=10, what="governor reset it")
    await client.close()
    await charged_as_relayed(gov, relay)
    await eventually(lambda: open_descriptors() <= before, what="every descriptor closed")


async def test_a_client_that_leaves_mid_body_leaves_nothing_open(
    gov: Governor, relay: Relay
) -> None:
    before = open_descriptors()
    moved = MOVED.bytes
    client = await relayed(relay)
    await client.send(request("GET", f"/bytes/{64 * 2**20}", "site.test"))
    got = 0
    while got < 4 * 2**20:
        data = await client.reader.read(2**20)
        assert data
        got += len(data)
    assert MOVED.bytes > moved  # the kernel was moving it
    await client.close()
    await relay.settled()
    await charged_as_relayed(gov, relay)
    # The pipe, the duplicated descriptors, both sockets: all closed.
    await eventually(lambda: open_descriptors() <= before, what="every descriptor closed")


async def test_an_upstream_that_breaks_off_mid_body_is_cut_and_counted(
    gov: Governor, relay: Relay
) -> None:
    n = 2 * ZERO_COPY_MIN  # the upstream declares 2n and sends n
    client = await relayed(relay)
    await client.send(request("GET", f"/die/{n}", "site.test"))
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"content-length: {2 * n}".encode() in head.lower()
    body = await client.reader.read()  # to the end: governor closes the connection
    assert body == pattern(n)
    await client.close()
    await charged_as_relayed(gov, relay)


async def test_without_a_descriptor_to_spare_the_body_goes_the_usual_way(
    gov: Governor, relay: Relay
) -> None:
    """The kernel's relay needs a pipe and duplicates of both sockets: with no descriptor
    left (EMFILE), the body is written as any other, whole and counted."""
    client = await relayed(relay)
    await client.send(request("GET", "/bytes/100", "site.test"))  # every socket opened now
    assert (await client.response()).status == 200
    before = MOVED.bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    fillers: list[int] = []
    try:
        with contextlib.suppress(OSError):  # every free number below the limit taken
            for _ in range(highest + 1):
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        with pytest.raises(OSError, match="Too many open files"):
            os.pipe()  # none to spare
        await client.send(request("GET", f"/bytes/{SIZE}", "site.test"))
        resp = await client.response()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resp.status == 200
    assert resp.body == pattern(SIZE)
    assert MOVED.bytes == before  # not one byte by the kernel
    await client.close()
    await charged_as_relayed(gov, relay)
