"""tests/support/poll.py: the polls every suite waits with end, fail clearly and stay bounded."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support import eventually, wait_until


async def test_eventually_returns_once_a_plain_predicate_holds() -> None:
    calls = itertools.count(1)
    took = await eventually(lambda: next(calls) >= 3, interval=0.001)
    assert next(calls) == 4  # called exactly until it held
    assert 0 <= took < 1


async def test_eventually_awaits_an_async_predicate() -> None:
    seen: list[int] = []

    async def third() -> bool:
        seen.append(1)
        return len(seen) == 3

    await eventually(third, interval=0.001)
    assert len(seen) == 3


async def test_eventually_fails_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"not within 0\.05 s: the moon"):
        await eventually(lambda: False, timeout=0.05, what="the moon")


async def test_eventually_names_a_named_predicate_without_what() -> None:
    def door_open() -> bool:
        return False

    with pytest.raises(AssertionError, match="door_open"):
        await eventually(door_open, timeout=0.05)


async def test_a_hanging_async_predicate_is_cut_at_the_deadline() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    async with asyncio.timeout(2):  # the deadline, not this guard, ends it
        with pytest.raises(AssertionError, match=r"not within 0\.05 s: hangs"):
            await eventually(hangs, timeout=0.05, what="hangs")


async def test_ignored_errors_are_not_yet_and_others_propagate() -> None:
    attempts = itertools.count()

    def refused_twice() -> bool:
        if next(attempts) < 2:
            raise ConnectionRefusedError
        return True

    await eventually(refused_twice, interval=0.001, ignore=(OSError,))
    with pytest.raises(ZeroDivisionError):
        await eventually(lambda: 1 / 0 > 0, timeout=0.05, ignore=(OSError,))


def test_wait_until_blocks_until_true_or_raises_naming_what() -> None:
    calls = itertools.count(1)
    wait_until(lambda: next(calls) >= 3, timeout=1, what="three", interval=0.001)
    with pytest.raises(TimeoutError, match="waiting for the tide"):
        wait_until(lambda: False, timeout=0.05, what="the tide")
