"""The shared flow-control piece (governor.http1.flow) against a fake transport."""

from __future__ import annotations

import asyncio

import pytest

from governor.http1.flow import BodyQueue, Flow
from tests.unit.http1.fakes import FakeTransport


def make_flow(*, high: int | None = None, low: int | None = None) -> tuple[Flow, FakeTransport]:
    flow = Flow(asyncio.get_running_loop(), write_high=high, write_low=low)
    transport = FakeTransport()
    flow.attach(transport)
    return flow, transport


async def test_attach_sets_the_write_limits_only_when_given() -> None:
    _, default = make_flow()
    assert (default.high, default.low) == (65536, 16384)
    _, custom = make_flow(high=1000, low=10)
    assert (custom.high, custom.low) == (1000, 10)


async def test_the_queue_pauses_above_high_and_resumes_only_at_low() -> None:
    flow, transport = make_flow()
    queue = BodyQueue(flow, high=100, low=40)
    queue.put(b"x" * 60)
    queue.put(b"x" * 40)  # exactly at high: not above it
    assert transport.calls == []
    queue.put(b"x" * 30)
    assert transport.calls == ["pause_reading"]
    assert flow.reading_paused
    assert queue.get() == b"x" * 60  # 70 left: below high, above low
    assert transport.calls == ["pause_reading"]
    assert queue.get() == b"x" * 40  # 30 left: at or below low
    assert transport.calls == ["pause_reading", "resume_reading"]
    assert not flow.reading_paused
    assert queue.size == 30


async def test_no_double_pause_or_resume() -> None:
    flow, transport = make_flow()
    queue = BodyQueue(flow, high=10, low=0)
    for _ in range(5):
        queue.put(b"x" * 20)
    flow.pause_reading()
    assert transport.calls == ["pause_reading"]
    queue.take_all()
    flow.resume_reading()
    queue.get()
    assert transport.calls == ["pause_reading", "resume_reading"]


async def test_take_all_takes_every_piece_as_it_came_and_resumes() -> None:
    flow, _ = make_flow()
    queue = BodyQueue(flow, high=3, low=1)
    assert queue.take_all() == []
    queue.put(b"ab")
    queue.put(b"cd")
    assert flow.reading_paused
    assert queue.take_all() == [b"ab", b"cd"]
    assert (queue.size, bool(queue), flow.reading_paused) == (0, False, False)
    assert queue.get() == b""


async def test_a_stopped_flow_is_never_resumed() -> None:
    flow, transport = make_flow()
    queue = BodyQueue(flow, high=1, low=1)
    flow.stop_reading()
    queue.put(b"abc")
    queue.get()
    flow.resume_reading()
    assert transport.calls == ["pause_reading"]
    assert flow.reading_paused


async def test_drain_returns_at_once_while_writing_is_not_paused() -> None:
    flow, _ = make_flow()
    await asyncio.wait_for(flow.drain(), timeout=1)


async def test_drain_waits_while_paused_and_wakes_on_resume() -> None:
    flow, _ = make_flow()
    flow.pause_writing()
    first = asyncio.create_task(flow.drain())
    second = asyncio.create_task(flow.drain())
    await asyncio.sleep(0)
    assert not first.done()
    assert not second.done()
    flow.resume_writing()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=1)
    assert not flow.writing_paused


async def test_one_drain_cancelled_leaves_the_other_waiting() -> None:
    flow, _ = make_flow()
    flow.pause_writing()
    first = asyncio.create_task(flow.drain())
    second = asyncio.create_task(flow.drain())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.wait([first])
    assert not second.done()
    flow.resume_writing()
    await asyncio.wait_for(second, timeout=1)


async def test_the_transport_pauses_and_resumes_writing_at_its_marks() -> None:
    flow = Flow(asyncio.get_running_loop(), write_high=100, write_low=20)
    transport = FakeTransport()

    class Proto(asyncio.Protocol):
        def pause_writing(self) -> None:
            flow.pause_writing()

        def resume_writing(self) -> None:
            flow.resume_writing()

    transport.protocol = Proto()
    transport.holding = True
    flow.attach(transport)
    transport.write(b"x" * 101)
    assert flow.writing_paused
    waiting = asyncio.create_task(flow.drain())
    transport.accept(50)  # 51 held: above low
    await asyncio.sleep(0)
    assert not waiting.done()
    transport.accept(31)  # 20 held: at low
    await asyncio.wait_for(waiting, timeout=1)


async def test_losing_the_connection_fails_the_waiting_drain() -> None:
    flow, transport = make_flow()
    flow.pause_writing()
    waiting = asyncio.create_task(flow.drain())
    await asyncio.sleep(0)
    flow.lose(ConnectionResetError("gone"))
    with pytest.raises(ConnectionResetError, match="gone"):
        await asyncio.wait_for(waiting, timeout=1)
    await asyncio.wait_for(flow.drain(), timeout=1)  # lost: nothing to wait for
    flow.pause_reading()
    flow.resume_reading()
    assert transport.calls == []  # a lost transport is told nothing


async def test_losing_the_connection_after_the_writer_left_is_quiet() -> None:
    flow, _ = make_flow()
    flow.pause_writing()
    waiting = asyncio.create_task(flow.drain())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.wait([waiting])
    flow.lose(ConnectionResetError("gone"))  # no "exception never retrieved" either


async def test_the_queue_wakes_its_reader() -> None:
    flow, _ = make_flow()
    queue = BodyQueue(flow, high=10, low=5)
    reader = asyncio.create_task(queue.wait())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.put(b"a")
    queue.wake()
    await asyncio.wait_for(reader, timeout=1)
    queue.wake()  # nobody waits: nothing happens
    assert queue.get() == b"a"
