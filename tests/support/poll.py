"""Waiting for a condition without a fixed sleep: poll it until it holds or a bounded deadline
passes, and fail naming what was awaited. Use an event when the code under test offers one;
poll only what has none (another process, a socket's state, governor's own timers)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

# Short enough that a poll adds little to a test's time, long enough not to spin the loop.
INTERVAL = 0.02


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - the deadline and its message are the point
    what: str | None = None,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> float:
    """Poll ``predicate`` (plain or async) until it is true; return the seconds it took.

    Raises AssertionError naming ``what`` (or the predicate) after ``timeout`` seconds, also
    when one async call of the predicate hangs past it. An exception in ``ignore`` counts as
    "not yet" (e.g. a connection refused while a server starts).
    """
    started = time.monotonic()
    deadline = started + timeout
    failure = f"not within {timeout} s: {what or _name(predicate)}"
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                bound = asyncio.timeout_at(_loop_time(deadline))
                try:
                    async with bound:
                        held = await result
                except TimeoutError:
                    if bound.expired():
                        raise AssertionError(failure) from None
                    raise
            else:
                held = result
        except ignore:
            held = False
        now = time.monotonic()
        if held:
            return now - started
        if now >= deadline:
            raise AssertionError(failure)
        await asyncio.sleep(interval)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> None:
    """The blocking twin of :func:`eventually`, for code outside an event loop (starting
    servers in a fixture); raises TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except ignore:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _loop_time(monotonic_deadline: float) -> float:
    """``monotonic_deadline`` on the running loop's clock (uvloop's need not be monotonic())."""
    return asyncio.get_running_loop().time() + monotonic_deadline - time.monotonic()


def _name(predicate: Callable[..., object]) -> str:
    name = getattr(predicate, "__qualname__", repr(predicate))
    return name if name != "<lambda>" else "a condition (pass what= to name it)"
