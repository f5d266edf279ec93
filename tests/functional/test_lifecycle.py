"""Process life cycle under load: kill -9, SIGTERM, a storm of reloads, and the daily
reset across midnight and DST changes (with an injected clock).

The load is real: several raw-socket clients on loopback against a ``governor serve``
process, each recording what it received, so the store's count can be compared
with the bytes that crossed the wire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.functional.conftest import GovernorFactory
from tests.functional.processes import Served, ServeFactory, governor
from tests.functional.test_cap import get
from tests.functional.upstream_app import Seen
from tests.support import FakeClock, RawClient, request, write_config


@dataclass
class Load:
    """What the load's clients saw."""

    done: list[tuple[float, int]] = field(default_factory=list)  # (finished at, bytes)
    failures: list[str] = field(default_factory=list)
    refused: int = 0  # connections governor never took (after it stopped listening)
    partial: int = 0  # bytes of responses cut off (kill -9 only)

    @property
    def received(self) -> int:
        return sum(n for _, n in self.done)


async def run_load(
    port: int, stop: asyncio.Event, *, clients: int = 4, path: str = "/bytes/20000"
) -> Load:
    """``clients`` loops of one request per fresh connection, until ``stop`` or refusal."""
    load = Load()

    async def one_client() -> None:
        for _ in range(100_000):  # bounded; ``stop`` ends it long before
            if stop.is_set():
                return
            try:
                client = await RawClient.connect(port)
            except ConnectionError:
                load.refused += 1
                return
            try:
                await client.send(request("GET", path, "site.test"))
                resp = await client.response()
            except (ConnectionError, AssertionError) as exc:
                # Nothing came back: never taken in (the listener closed), or killed.
                load.refused += 1
                load.partial += client.received
                if client.received:
                    load.failures.append(f"cut after {client.received} bytes: {exc!r}")
                return
            finally:
                await client.close()
            if resp.status != 200 or not resp.complete:
                load.partial += client.received
                load.failures.append(f"status {resp.status}, complete {resp.complete}")
                return
            load.done.append((time.monotonic(), client.received))

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return load


async def stored(path: Path) -> int:
    code, out, err = await governor("usage", "-c", str(path), "--json")
    assert code == 0, err
    rows = json.loads(out)
    return int(rows[0]["used_bytes"]) if rows else 0


async def loaded(served: Served, seconds: float) -> tuple[asyncio.Event, asyncio.Task[Load]]:
    """Start the load and let it run ``seconds``."""
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(run_load(served.port, stop))
    await asyncio.sleep(seconds)  # the load is the point: let it run
    return stop, task


async def test_kill_9_under_load_loses_at_most_one_flush_interval(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, flush_interval="200ms")
    served = await serve(path)
    stop, task = await loaded(served, 1.5)
    os.kill(served.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    await served.proc.wait()
    stop.set()
    load = await task
    after = await stored(path)
    # Everything served more than one flush interval (plus a flush's own time) before the
    # kill is in the store; nothing beyond what crossed the wire is.
    safe = sum(n for t, n in load.done if t < killed_at - 0.2 - 0.1)
    assert len(load.done) > 50
    assert safe <= after <= load.received + load.partial
    lost = load.received - after
    assert lost <= sum(n for t, n in load.done if t >= killed_at - 0.3) + load.partial


async def test_sigterm_under_load_fails_no_request_and_loses_no_byte(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, flush_interval="10s")
    served = await serve(path)
    slow = await RawClient.connect(served.port)  # in flight across the stop
    await slow.send(request("GET", "/hang", "site.test"))
    await asyncio.wait_for(seen.hanging.wait(), 5)
    stop, task = await loaded(served, 1.0)
    served.proc.send_signal(signal.SIGTERM)
    await served.wait_for("stopping")
    seen.release.set()  # the request in flight finishes during the drain
    late = await slow.response()
    await slow.close()
    assert await served.proc.wait() == 0
    stop.set()
    load = await task
    assert load.failures == []
    assert len(load.done) > 50
    assert (late.status, late.complete, late.body) == (200, True, b"late")
    # The final flush wrote every byte (the 10 s interval never came round).
    assert await stored(path) == load.received + slow.received


async def test_a_reload_storm_under_load_fails_nothing_and_rejects_the_invalid(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, cap="1 GiB")
    text = path.read_text()
    served = await serve(path)
    stop, task = await loaded(served, 0.3)
    outcomes = []
    for i in range(10):
        invalid = i % 3 == 1  # 3 of the 10
        cap = "lots" if invalid else f"{i + 1} GiB"
        path.write_text(text.replace("daily_cap: 1 GiB", f"daily_cap: {cap}"))
        served.proc.send_signal(signal.SIGHUP)
        line = await served.wait_for("reload")
        outcomes.append("rejected" if "reload rejected" in line else "ok")
        if invalid:
            await served.wait_for("daily_cap")  # the problem, with its file and line
    stop.set()
    load = await task
    assert outcomes == ["rejected" if i % 3 == 1 else "ok" for i in range(10)]
    assert load.failures == []
    assert load.refused == 0
    assert len(load.done) > 20
    served.proc.send_signal(signal.SIGTERM)
    assert await served.proc.wait() == 0
    assert await stored(path) == load.received


NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
SEOUL = ZoneInfo("Asia/Seoul")


@pytest.mark.parametrize(
    ("zone", "reset_at", "day", "reset"),
    [
        # local midnight, no DST
        (SEOUL, "00:00", dt.datetime(2024, 2, 21, 23, 0), dt.datetime(2024, 2, 22, 0, 0)),
        # the day before spring-forward; the day of spring-forward (23 h)
        (NY, "00:00", dt.datetime(2024, 3, 9, 23, 0), dt.datetime(2024, 3, 10, 0, 0)),
        (NY, "00:00", dt.datetime(2024, 3, 10, 23, 0), dt.datetime(2024, 3, 11, 0, 0)),
        # the day of fall-back (25 h)
        (NY, "00:00", dt.datetime(2024, 11, 3, 23, 0), dt.datetime(2024, 11, 4, 0, 0)),
        # a reset_at inside the spring-forward gap happens at the gap's end (03:00)
        (NY, "02:30", dt.datetime(2024, 3, 9, 23, 0), dt.datetime(2024, 3, 10, 3, 0)),
        # a reset_at in the repeated fall-back hour happens at its first occurrence
        (LONDON, "01:30", dt.datetime(2024, 10, 26, 23, 0), dt.datetime(2024, 10, 27, 1, 30)),
    ],
    ids=["seoul-midnight", "ny-eve-of-dst", "ny-23h-day", "ny-25h-day", "ny-gap", "london-fold"],
)
async def test_a_blocked_tenant_reopens_at_the_reset(
    make_governor: GovernorFactory,
    clock: FakeClock,
    zone: ZoneInfo,
    reset_at: str,
    day: dt.datetime,
    reset: dt.datetime,
) -> None:
    reset_ts = reset.replace(tzinfo=zone, fold=0).timestamp()
    clock.set(day.replace(tzinfo=zone))
    gov = await make_governor(cap="10 KiB", tenant={"timezone": zone.key, "reset_at": reset_at})
    assert (await get(gov, "/bytes/20000"))[0] == 200
    status, headers, body = await get(gov, "/", Accept="application/json")
    assert status == 503
    assert int(headers["Retry-After"]) == round(reset_ts - clock.now)
    assert dt.datetime.fromisoformat(json.loads(body)["resets_at"]).timestamp() == reset_ts
    clock.now = reset_ts - 1.0  # one second before: still blocked
    assert (await get(gov, "/bytes/10"))[0] == 503
    clock.now = reset_ts  # at the reset: open at once
    assert (await get(gov, "/bytes/10"))[0] == 200
