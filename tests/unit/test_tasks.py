"""TaskGroup: every background task has an owner that logs its failure and ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from governor.tasks import TaskGroup


async def test_close_cancels_and_awaits_what_still_runs() -> None:
    group = TaskGroup()
    started = asyncio.Event()
    ended: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("cleaned up")

    task = group.spawn(forever(), name="forever")
    await started.wait()
    assert len(group) == 1
    await group.close()
    assert task.cancelled()
    assert ended == ["cleaned up"]  # its finally ran before close() returned
    assert len(group) == 0


async def test_a_failure_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    group = TaskGroup()
    other_done = asyncio.Event()

    async def fail() -> None:
        raise ValueError("boom")

    async def other() -> None:
        await asyncio.sleep(0)
        other_done.set()

    failing = group.spawn(fail(), name="failing")
    group.spawn(other(), name="other")
    with caplog.at_level(logging.ERROR, logger="governor"):
        await asyncio.wait([failing])
        await other_done.wait()
    assert [r.getMessage() for r in caplog.records] == ["task failing failed"]
    assert isinstance(caplog.records[0].exc_info and caplog.records[0].exc_info[1], ValueError)
    await group.close()


async def test_no_task_starts_after_close() -> None:
    group = TaskGroup()
    await group.close()

    async def work() -> None:
        raise AssertionError("must not run")

    with pytest.raises(RuntimeError, match="closed"):
        group.spawn(work(), name="late")
