"""The upstream connection's flow control, through the shared Flow, with a fake transport."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governor.errors import UpstreamBroken
from governor.http1.client import BUDGET, READ_MAX, OriginConnection
from tests.unit.http1.fakes import FakeTransport


class StubPool:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.read_array = bytearray(READ_MAX)
        self.read_buffer = memoryview(self.read_array)
        self.forgotten: list[OriginConnection] = []

    def forget(self, conn: OriginConnection) -> None:
        self.forgotten.append(conn)


def connect() -> tuple[OriginConnection, FakeTransport]:
    conn = OriginConnection(StubPool(), ("http", "site.test", 80))
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    return conn, transport


async def test_a_queued_body_pauses_reads_above_the_budget_and_resumes_when_taken() -> None:
    conn, transport = connect()
    conn.begin("GET", None)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * BUDGET)
    assert transport.calls == []  # at the budget, not above it
    conn.data_received(b"x" * 10)
    assert transport.calls == ["pause_reading"]
    assert conn.queued == BUDGET + 10
    assert sum(map(len, conn.read_nowait())) == BUDGET + 10
    assert transport.calls == ["pause_reading", "resume_reading"]
    assert conn.queued == 0


async def test_a_tunnel_pause_is_the_same_flag_everyone_reads() -> None:
    conn, transport = connect()
    conn.pause_reading()
    conn.pause_reading()
    assert conn.flow.reading_paused
    assert transport.calls == ["pause_reading"]  # once
    conn.resume_reading()
    conn.resume_reading()
    assert transport.calls == ["pause_reading", "resume_reading"]


async def test_a_drain_waiting_on_a_lost_upstream_fails_as_broken() -> None:
    conn, _ = connect()
    conn.pause_writing()
    waiting = asyncio.create_task(conn.drain())
    await asyncio.sleep(0)
    conn.connection_lost(None)
    with pytest.raises(UpstreamBroken, match="the upstream closed the connection"):
        await asyncio.wait_for(waiting, timeout=1)


def _read(conn: OriginConnection, data: bytes) -> None:
    """``data`` as the event loop delivers a read: into the pool's buffer, then the count."""
    buffer = conn.get_buffer(-1)
    assert len(data) <= len(buffer)
    buffer[: len(data)] = data
    conn.buffer_updated(len(data))


def _outcome(reads: list[bytes]) -> tuple[object, bytes, bool, bool]:
    conn, _ = connect()
    conn.begin("GET", None)
    for data in reads:
        if conn.closed:
            break
        _read(conn, data)
    return _outcome_of(conn)


BODY = bytes(range(256)) * 64  # 16 KiB, "\r\n\r\n" nowhere in it
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 16384\r\n\r\n" + BODY,
    b"HTTP/1.1 200 OK\r\nContent-Length: 16388\r\n\r\n" + BODY + b"\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 16384\r\n\r\n" + BODY,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n" + BODY + b"\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789" + BODY,  # stray bytes after
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n" + BODY,  # a head governor refuses
    b"HTTP/1.1 200 OK\r\n" + b"X: " + BODY[:100].replace(b"\n", b"") + b"\r\n\r\n" + BODY,
]


@pytest.mark.parametrize("response", RESPONSES)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(RESPONSES[0]) + 200), max_size=3))
async def test_a_first_read_split_after_its_head_gives_what_one_delivery_gives(
    response: bytes, cuts: list[int]
) -> None:
    """A large first read is copied out as head, then body (buffer_updated): whatever the
    reads, the head, the body, and whether the connection closes are those of the same
    bytes handed to data_received at once."""
    conn, _ = connect()
    conn.begin("GET", None)
    conn.data_received(response)
    once = _outcome_of(conn)
    bounds = sorted({0, len(response), *(c for c in cuts if c < len(response))})
    reads = [response[a:b] for a, b in itertools.pairwise(bounds)]
    assert _outcome(reads) == once
    assert _outcome([response]) == once


def _outcome_of(conn: OriginConnection) -> tuple[object, bytes, bool, bool]:
    head = conn.head
    return (
        None if head is None else (head.status, head.block, head.content_length),
        b"".join(conn.read_nowait()),
        conn.closed,
        conn.reusable,
    )


async def test_a_body_that_fits_the_budget_comes_with_its_head_in_one_read() -> None:
    """A response's first read has room for its head beyond the body's budget, so a body of
    BUDGET bytes needs no second read (nor a second write to its client); once the head is
    in, no read is larger than the budget."""
    conn, _ = connect()
    conn.begin("GET", None)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nServer: origin\r\n\r\n" % BUDGET
    _read(conn, head + b"x" * BUDGET)
    assert len(conn.get_buffer(-1)) <= BUDGET
    assert b"".join(conn.read_nowait()) == b"x" * BUDGET
    assert conn.at_eof
