"""ClientConnection's explicit state, driven with a fake transport and a stub listener."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from governor.http1.connection import ClientConnection
from governor.http1.heads import Limits, RequestHead
from governor.http1.request import Request
from governor.http1.state import (
    BUSY,
    CLOSED,
    FIRST_REQUEST_GRACE,
    FLUSHING,
    HEAD,
    IDLE,
    NEW,
    TUNNEL,
    State,
    check,
    deadline,
)
from governor.http1.wire import parse_request_head
from governor.observe.events import RequestSink
from tests.unit.http1.fakes import FakeTransport

GET = b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"


class StubListener:
    """What a connection needs of its listener, with a handler the test controls."""

    def __init__(self, handler: Callable[[Request], Awaitable[None]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.handler = handler
        self.sinks: Sequence[RequestSink] = ()
        self.limits = Limits()
        self.connections: set[Any] = set()
        self.draining = False
        self.stopping = False
        self.keepalive = 60.0
        self.header_timeout = 10.0
        self.body_min_rate = 0
        self.send_timeout = 60.0
        self.body_max = 0
        self.websocket_idle = 0.0
        self.https_port: int | None = None
        self.refusals: list[int] = []
        self.closed = 0

    def admit(self, peer: str | None) -> str | None:
        return None

    def release(self, peer: str | None) -> None:
        pass

    def parse(self, buf: bytes) -> RequestHead | None:
        return parse_request_head(buf, self.limits)

    def refused(
        self, status: int, reason: str, peer: str | None, raw: bytes | None, sent: int
    ) -> None:
        self.refusals.append(status)

    def connection_closed(self) -> None:
        self.closed += 1


async def answer(request: Request) -> None:
    request.respond(200, [("Content-Type", "text/plain")], b"ok")


@dataclass
class Place:
    address: str = "127.0.0.1:8080"
    scheme: str = "http"
    label: str = "http://127.0.0.1:8080"


PLAIN = Place()


def connect(
    handler: Callable[[Request], Awaitable[None]] = answer,
) -> tuple[ClientConnection, FakeTransport, StubListener]:
    listener = StubListener(handler)
    conn = ClientConnection(listener, PLAIN)
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    return conn, transport, listener


async def served(conn: ClientConnection) -> None:
    """Wait until no request is in flight: the connection's worker waits for the next head,
    or ended (a handler on a fake transport finishes within a few turns of the loop)."""
    for _ in range(1000):
        task = conn._task
        if task is None or task.done() or (conn._ready is not None and conn._request is None):
            return
        await asyncio.sleep(0)  # one turn of the loop
    raise AssertionError("a request still in flight after 1000 turns of the loop")


async def test_a_new_connection_waits_for_its_first_head() -> None:
    conn, _, listener = connect()
    assert conn.state is NEW
    assert conn in listener.connections
    assert not conn.closed


async def test_a_head_in_pieces_goes_new_head_busy_idle() -> None:
    conn, transport, _ = connect()
    conn.data_received(GET[:10])
    assert conn.state is HEAD
    conn.data_received(GET[10:])
    assert conn.state is BUSY
    await served(conn)
    assert conn.state is IDLE  # keep-alive: waiting for the next head
    assert transport.written.startswith(b"HTTP/1.1 200 OK")
    assert "close" not in transport.calls


async def test_pipelined_requests_pass_through_idle_each_time() -> None:
    seen: list[State] = []

    async def record(request: Request) -> None:
        seen.append(request.conn.state)  # type: ignore[attr-defined]
        await answer(request)

    conn, _, _ = connect(record)
    conn.data_received(GET + GET + GET[:5])
    await served(conn)
    assert seen == [BUSY, BUSY]
    assert conn.state is HEAD  # the third head has begun to arrive


async def test_connection_close_ends_flushing_then_closed() -> None:
    conn, transport, listener = connect()
    conn.data_received(GET_CLOSE)
    await served(conn)
    assert conn.state is FLUSHING
    assert "close" in transport.calls
    conn.connection_lost(None)
    assert conn.state is CLOSED
    assert conn.closed
    assert listener.closed == 1
    assert conn not in listener.connections


async def test_a_bad_head_is_refused_and_flushed() -> None:
    conn, transport, listener = connect()
    conn.data_received(b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n")
    assert conn.state is FLUSHING
    assert listener.refusals == [400]
    assert transport.written.startswith(b"HTTP/1.1 400 Bad Request")


async def test_a_switch_makes_a_tunnel() -> None:
    switched = asyncio.Event()
    done = asyncio.Event()

    class Sink:
        def client_data(self, data: bytes) -> None:
            pass

        def client_closed(self) -> None:
            done.set()

        def client_writable(self) -> None:
            pass

    async def upgrade(request: Request) -> None:
        request.conn.switch(Sink())
        switched.set()
        await done.wait()

    conn, _, _ = connect(upgrade)
    conn.data_received(GET)
    await asyncio.wait_for(switched.wait(), timeout=5)
    assert conn.state is TUNNEL
    conn.abort()
    assert conn.state is FLUSHING
    conn.connection_lost(None)
    assert conn.state is CLOSED
    await served(conn)


async def test_a_client_leaving_mid_request_closes_and_cancels_the_handler() -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []

    async def forever(request: Request) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    conn, _, _ = connect(forever)
    conn.data_received(GET)
    await asyncio.wait_for(started.wait(), timeout=5)
    task = conn._task
    assert task is not None
    conn.connection_lost(ConnectionResetError())
    assert conn.state is CLOSED
    await asyncio.wait([task], timeout=5)
    assert cancelled == [True]


async def test_an_idle_connection_past_keepalive_is_closed() -> None:
    conn, transport, listener = connect()
    listener.keepalive = 0.0
    conn.stop_when_idle()  # looks at the deadline again: due now, its timer fires next
    async with asyncio.timeout(5):
        while conn.state is NEW:  # noqa: ASYNC110 - a loop timer, no event to wait on
            await asyncio.sleep(0)
    assert conn.state is FLUSHING
    assert "close" in transport.calls


def test_every_change_not_in_the_table_is_refused() -> None:
    allowed = {
        NEW: {HEAD, BUSY, FLUSHING, CLOSED},
        IDLE: {HEAD, BUSY, FLUSHING, CLOSED},
        HEAD: {BUSY, FLUSHING, CLOSED},
        BUSY: {IDLE, TUNNEL, FLUSHING, CLOSED},
        TUNNEL: {FLUSHING, CLOSED},
        FLUSHING: {CLOSED},
        CLOSED: set(),
    }
    for old in State:
        for new in State:
            if new in allowed[old]:
                check(old, new)
            else:
                with pytest.raises(RuntimeError, match=f"{old.name} to {new.name}"):
                    check(old, new)


def test_deadlines_follow_the_state() -> None:
    kw = {"keepalive": 60.0, "header_timeout": 10.0}
    assert deadline(HEAD, 100.0, stopping=False, **kw) == 110.0
    assert deadline(IDLE, 100.0, stopping=False, **kw) == 160.0
    assert deadline(NEW, 100.0, stopping=False, **kw) == 160.0
    assert deadline(IDLE, 100.0, stopping=True, **kw) == 100.0  # no next request
    assert deadline(NEW, 100.0, stopping=True, **kw) == 100.0 + FIRST_REQUEST_GRACE
    assert deadline(HEAD, 100.0, stopping=True, **kw) == 110.0  # a head keeps its own
    for busy in (BUSY, TUNNEL, FLUSHING, CLOSED):
        assert deadline(busy, 100.0, stopping=False, **kw) is None


class Reports:
    """A request sink that keeps what it is told."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def request_done(self, record: Any) -> None:
        self.records.append(record)


async def one_served() -> tuple[ClientConnection, FakeTransport, Reports, asyncio.Task[None]]:
    """A connection that answered one request, its sink, and its task (waiting for a head)."""
    conn, transport, listener = connect()
    reports = Reports()
    listener.sinks = (reports,)
    conn.data_received(GET)
    await served(conn)
    worker = conn._task
    assert worker is not None
    return conn, transport, reports, worker


async def test_one_task_answers_a_keep_alive_connections_requests_in_turn() -> None:
    conn, transport, reports, worker = await one_served()
    assert not worker.done()  # waiting for the next head, not ended
    conn.data_received(GET + GET)  # the second one pipelined
    await served(conn)
    assert conn._task is worker
    assert conn.state is IDLE
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3
    assert [r.status for r in reports.records] == [200, 200, 200]
    conn.connection_lost(None)  # an idle worker ends with its connection
    await asyncio.wait_for(worker, timeout=5)


async def test_a_request_taken_but_not_begun_when_the_client_leaves_is_still_reported() -> None:
    conn, _, reports, worker = await one_served()
    conn.data_received(GET)  # handed to the waiting worker, which has not run yet
    conn.connection_lost(ConnectionResetError())
    await asyncio.wait_for(worker, timeout=5)
    assert len(reports.records) == 2
    assert conn.state is CLOSED
