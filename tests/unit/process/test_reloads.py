"""SIGHUPs coalesce: one reload at a time, and those asked for meanwhile make one more."""

from __future__ import annotations

import asyncio

from governor.process.serve import Reloads
from governor.tasks import TaskGroup


class FakeGovernor:
    """Counts reloads; each waits until the test lets it finish."""

    def __init__(self) -> None:
        self.tasks = TaskGroup()
        self.started = 0
        self.finished = 0
        self.release = asyncio.Event()
        self.starts: asyncio.Queue[int] = asyncio.Queue()  # the number of each reload begun

    async def reload(self) -> bool:
        self.started += 1
        self.starts.put_nowait(self.started)
        await self.release.wait()
        self.release.clear()
        self.finished += 1
        return True


async def test_a_sighup_during_a_reload_makes_one_more_after_it() -> None:
    gov = FakeGovernor()
    reloads = Reloads(gov, notify=False)
    reloads.ask()
    await gov.starts.get()
    for _ in range(3):  # three more SIGHUPs while the first reload runs
        reloads.ask()
    assert gov.started == 1  # never two at once
    gov.release.set()
    assert await gov.starts.get() == 2  # the one more reload has begun
    assert (gov.started, gov.finished) == (2, 1)
    task = reloads.running
    assert task is not None
    gov.release.set()
    await task
    assert (gov.started, gov.finished) == (2, 2)  # three SIGHUPs made one reload
    assert reloads.running is None
    reloads.ask()  # idle again: a SIGHUP reloads at once
    await gov.starts.get()
    gov.release.set()
    await gov.tasks.close()
    assert gov.started == 3


async def test_a_stop_cancels_the_reload_under_way() -> None:
    gov = FakeGovernor()
    reloads = Reloads(gov, notify=False)
    reloads.ask()
    await gov.starts.get()
    await gov.tasks.close()
    assert (gov.started, gov.finished) == (1, 0)
    assert reloads.running is None
