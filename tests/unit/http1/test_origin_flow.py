"""The upstream connection's flow control, through the shared Flow, with a fake transport."""

from __future__ import annotations

import asyncio

import pytest

from governor.errors import UpstreamBroken
from governor.http1.client import BUDGET, OriginConnection
from tests.unit.http1.fakes import FakeTransport


class StubPool:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.read_buffer = memoryview(bytearray(BUDGET))
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
    assert len(conn.read_nowait()) == BUDGET + 10
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
