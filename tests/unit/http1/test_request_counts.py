"""A request's raw byte counts and their claims, against a fake connection.

The request owns its counts; a claim takes what is new, both directions, once;
what the socket has not accepted is not claimed; a refused body is a typed error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from governor.core.ledger import Ledger
from governor.errors import BadMessage, BodyRefused
from governor.http1.flow import Flow
from governor.http1.heads import Limits
from governor.http1.request import CLAIM_STEP, CONTINUE, JOIN_UP_TO, Request
from governor.http1.wire import parse_request_head
from governor.observe.events import RequestNote, RequestRecord
from tests.unit.core.test_meter import BEFORE_RESET, DAY, meter
from tests.unit.core.test_meter import Clock as MeterClock
from tests.unit.core.test_meter import tenant as meter_tenant


class FakeLoop:
    """The loop's clock, all a request uses of it outside an await."""

    def time(self) -> float:
        return 0.0


@dataclass
class FakeServer:
    body_max: int = 0


@dataclass
class FakeConnection:
    """What a Request uses of its connection; ``held`` bytes are not accepted yet."""

    loop: Any
    server: FakeServer = field(default_factory=FakeServer)
    peer: str | None = "192.0.2.1"
    scheme: str = "http"
    handed: int = 0
    held: int = 0
    closed: bool = False
    closing: bool = False
    body_error: BadMessage | None = None
    wire: bytearray = field(default_factory=bytearray)
    calls: list[list[int]] = field(default_factory=list)  # the lengths handed, per call
    flow: Flow = field(init=False)

    def __post_init__(self) -> None:
        # No transport: the body queue's pauses and resumes have nothing to tell.
        self.flow = Flow(
            cast(asyncio.AbstractEventLoop, self.loop), write_high=None, write_low=None
        )

    extra: int = 0  # TLS records' framing received, not claimed yet

    unsent: int = 0  # accepted by the kernel, not transmitted yet

    def transmitted(self) -> int:
        return self.sent() - self.unsent

    def overhead(self) -> int:
        n, self.extra = self.extra, 0
        return n

    def write(self, data: bytes) -> None:
        self.writelines([data])

    def writelines(self, parts: list[bytes]) -> None:
        self.calls.append([len(part) for part in parts])
        for part in parts:
            self.wire += part
            self.handed += len(part)

    def sent(self) -> int:
        return self.handed - self.held


class Sink:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def request_done(self, record: RequestRecord) -> None:
        self.records.append(record)


def make(
    raw: bytes, sink: Sink | None = None, loop: Any = None, scheme: str = "http"
) -> tuple[Request, FakeConnection]:
    head = parse_request_head(raw, Limits())
    assert head is not None
    conn = FakeConnection(loop if loop is not None else FakeLoop(), scheme=scheme)
    note = RequestNote(sinks=[sink] if sink is not None else [])
    request = Request(cast(Any, conn), head, note)
    return request, conn


GET = b"GET /a HTTP/1.1\r\nHost: a.test\r\n\r\n"
POST = b"POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n"


@pytest.mark.parametrize(
    ("pieces", "chunked"),
    [
        ([], False),
        ([b""], False),  # nothing to send: never a chunk of size 0 (the body's end)
        ([b""], True),
        ([b"ab", b"cde"], False),  # small: one buffer with the head
        ([b"ab", b"cde"], True),
        ([b"x" * 40_000, b"y" * 30_000], False),  # large: the pieces as they came
        ([b"x" * 40_000, b"y" * 30_000], True),
    ],
)
def test_the_first_body_pieces_go_with_the_head_in_one_call(
    pieces: list[bytes], chunked: bool
) -> None:
    request, conn = make(GET)
    size = sum(map(len, pieces))
    request.start_response(200, None, b"\r\nX: 1", length=None if chunked else size, first=pieces)
    head = b"HTTP/1.1 200 OK\r\nX: 1" + (
        b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        if chunked
        else b"\r\nContent-Length: %d\r\n\r\n" % size
    )
    body = b"".join(pieces)
    if chunked and body:
        body = b"%x\r\n" % size + body + b"\r\n"
    assert bytes(conn.wire) == head + body
    assert request.handed == conn.handed == len(head + body)
    assert len(conn.calls) == 1  # one write: head and first bytes leave together
    if size > JOIN_UP_TO:  # not copied into one buffer
        assert conn.calls[0][-len(pieces) - chunked :][: len(pieces)] == [len(p) for p in pieces]


def test_a_claim_takes_the_head_then_only_what_is_new() -> None:
    request, _ = make(GET)
    assert request.claim() == (len(GET), 0)
    assert request.claim() == (0, 0)


def test_the_response_is_claimed_as_the_socket_accepts_it() -> None:
    request, conn = make(GET)
    request.claim()
    conn.held = 5  # the socket takes all but five bytes
    request.respond_text(200, "hello")
    handed = len(conn.wire)
    assert request.in_flight() == handed
    assert request.claim(final=True) == (0, handed - 5)
    assert request.in_flight() == 5
    conn.held = 0
    assert request.claim(final=True) == (0, 5)
    assert request.claim(final=True) == (0, 0)
    assert request.in_flight() == 0


def test_a_running_claim_takes_only_what_the_kernel_transmitted() -> None:
    """A reset drops what the kernel holds unsent: a running claim never includes it, and
    leaves a small remainder (a system call saved) to the final claim."""
    request, conn = make(GET)
    request.claim()
    request.start_response(200, None, b"", length=CLAIM_STEP * 3)
    request.write(b"a" * 100)
    assert request.claim()[1] == 0  # under CLAIM_STEP: left to a later claim
    request.write(b"b" * CLAIM_STEP * 2)
    conn.unsent = 1000
    head_and_body = len(conn.wire)
    assert request.claim()[1] == head_and_body - 1000
    conn.unsent = 0
    assert request.claim()[1] == 0  # 1000 new: under CLAIM_STEP
    assert request.claim(final=True)[1] == 1000
    assert request.in_flight() == 0


def test_a_request_is_never_counted_more_than_it_handed() -> None:
    request, conn = make(GET)
    conn.write(b"x" * 100)  # written on the connection, not through this request
    assert request.sent() == 0
    request.write_raw(b"abc")
    assert request.sent() == 3


@pytest.mark.parametrize(
    ("count", "first", "then"),
    [
        ("ingress", len(POST) + 10, len(POST) + 17),
        ("egress", len(CONTINUE), len(CONTINUE) + 5),
        ("both", len(POST) + 10 + len(CONTINUE), len(POST) + 17 + len(CONTINUE) + 5),
    ],
)
def test_charge_hands_the_claim_to_the_meter_and_nobody_without_one(
    count: str, first: int, then: int
) -> None:
    request, _ = make(POST)
    request.charge()  # no meter: nobody's, and nothing claimed
    # A real meter (the compiled build takes nothing else) counting ``count``'s directions.
    ledger = Ledger()
    request.meter = meter(meter_tenant(count, cap=10**9), MeterClock(BEFORE_RESET), ledger)
    request._feed(b"0123456789")
    request.send_continue()
    request.charge(final=True)
    assert ledger.used(("t", DAY)) == first
    request.received_raw(7)  # a tunnel's bytes
    request.write_raw(b"12345")
    request.charge(final=True)
    assert ledger.used(("t", DAY)) == then


async def test_a_refused_body_is_raised_as_body_refused() -> None:
    request, conn = make(POST, loop=asyncio.get_running_loop())
    conn.body_error = BadMessage(413, "the request body is larger than 5 bytes")
    conn.closed = True  # a client that left after the refusal is still answered for it
    with pytest.raises(BodyRefused) as caught:
        await request.read()
    assert (caught.value.status, caught.value.reason) == (413, conn.body_error.reason)


async def test_a_client_that_leaves_mid_body_is_a_connection_error() -> None:
    request, conn = make(POST, loop=asyncio.get_running_loop())
    conn.closed = True
    with pytest.raises(ConnectionResetError):
        await request.read()


@pytest.mark.parametrize(("closed", "status"), [(True, 499), (False, 500)])
def test_a_response_never_started_is_reported_as_499_or_500(closed: bool, status: int) -> None:
    sink = Sink()
    request, conn = make(GET, sink)
    conn.closed = closed
    request.report()
    (record,) = sink.records
    assert (record.status, record.bytes_in, record.bytes_out) == (status, len(GET), 0)


def test_the_report_carries_the_requests_own_counts() -> None:
    sink = Sink()
    request, conn = make(GET, sink)
    request.note.tenant = "t"
    request.respond_text(404, "no")
    conn.held = 3
    request.report()
    (record,) = sink.records
    assert record.status == 404
    assert record.bytes_out == len(conn.wire) - 3
    assert (record.tenant, record.method, record.path) == ("t", "GET", "/a")


def test_on_tls_a_claim_takes_the_records_framing_received_too() -> None:
    request, conn = make(GET, scheme="https")
    conn.extra = 29  # the framing of the record the head came in
    assert request.claim() == (len(GET) + 29, 0)
    assert request.overhead == 29
    assert request.claim() == (0, 0)  # claimed once
