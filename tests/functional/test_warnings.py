"""Warnings before the cap: threshold, blocked and reopened events, logged and POSTed to a
real webhook receiver on a loopback port, once per event per period across the fleet."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from governor.config import load_config
from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.support import (
    FakeClock,
    RawClient,
    free_port,
    request,
    seoul,
    write_config,
)

CAP = 10240  # 10 KiB
WARN = {"warn_at": ["50%", "90%"]}


@dataclass
class Receiver:
    """A webhook endpoint that records every event it accepted."""

    url: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    fail_first: int = 0  # answer this many calls with 500 before accepting
    hang: bool = False  # never answer
    called: asyncio.Event = field(default_factory=asyncio.Event)

    def kinds(self) -> list[str]:
        return [
            f"{e['event']}:{e['threshold']}" if e["event"] == "threshold" else e["event"]
            for e in self.events
        ]

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.called.set()
        body = await request.json()
        assert request.content_type == "application/json"
        if self.hang:
            await asyncio.sleep(3600)  # the point: a webhook that never answers
        if self.calls <= self.fail_first:
            return web.Response(status=500, text="not now")
        self.events.append(body)
        return web.Response(status=204)


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Receiver:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    rec.url = f"http://127.0.0.1:{server.port}/hook"
    return rec


async def fetch(gov: Governor, path: str = "/bytes/3000") -> int:
    client = await RawClient.connect(gov.port)
    await client.send(request("GET", path, "site.test"))
    resp = await client.response()
    await client.close()
    return resp.status


async def settled(gov: Governor) -> None:
    """Flush (which tells the warner) and wait until every queued event went out."""
    await gov.flusher.flush()
    async with asyncio.timeout(10):
        await gov.warner._queue.join()


def used(gov: Governor) -> int:
    usage = gov.runtime.usage("site")
    assert usage is not None
    return usage.used_bytes


async def test_each_threshold_once_then_blocked_then_reopened_at_midnight(
    make_governor: GovernorFactory,
    receiver: Receiver,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="governor.warnings")
    gov = await make_governor(cap="10 KiB", tenant=WARN, webhook_url=receiver.url)
    expected: list[str] = []
    while used(gov) < CAP:
        before = used(gov)
        assert await fetch(gov) == 200
        await settled(gov)
        after = used(gov)
        for share in (0.5, 0.9):
            if before < share * CAP <= after:
                expected.append(f"threshold:{share}")
        if after >= CAP:
            expected.append("blocked")
        assert receiver.kinds() == expected
    assert expected == ["threshold:0.5", "threshold:0.9", "blocked"]
    half, ninety, blocked = receiver.events
    assert half["tenant"] == "site"
    assert half["period"] == "2024-02-21"
    assert half["cap_bytes"] == CAP
    assert CAP * 0.5 <= half["used_bytes"] < CAP * 0.9
    assert CAP * 0.9 <= ninety["used_bytes"] < CAP
    assert blocked["used_bytes"] >= CAP
    assert "threshold" not in blocked
    assert half["resets_at"] == "2024-02-22T00:00:00+09:00"
    assert half["time"].startswith("2024-02-21T03:00:00")  # noon in Seoul, in UTC
    # Blocked requests and more flushes send nothing more.
    assert await fetch(gov) == 503
    for _ in range(3):
        await settled(gov)
    assert len(receiver.events) == 3
    # Local midnight: the tenant is open again.
    clock.set(seoul(2024, 2, 22, 0, 0, 1))
    assert await fetch(gov, "/bytes/10") == 200
    await settled(gov)
    assert receiver.kinds()[3:] == ["reopened"]
    reopened = receiver.events[3]
    assert reopened["reason"] == "period"
    assert reopened["period"] == "2024-02-22"
    assert reopened["used_bytes"] < CAP
    assert reopened["resets_at"] == "2024-02-23T00:00:00+09:00"
    assert gov.warner.sent == {"threshold": 2, "blocked": 1, "reopened": 1}
    assert gov.warner.failed == gov.warner.dropped == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "governor.warnings"]
    assert len([m for m in lines if "reached 50% of its daily cap" in m]) == 1
    assert len([m for m in lines if "reached 90% of its daily cap" in m]) == 1
    assert len([m for m in lines if "reached its daily cap and is blocked" in m]) == 1
    assert len([m for m in lines if "open again (a new period began)" in m]) == 1


async def test_a_jump_past_every_threshold_sends_each_in_order(
    make_governor: GovernorFactory, receiver: Receiver
) -> None:
    gov = await make_governor(cap="10 KiB", tenant=WARN, webhook_url=receiver.url)
    assert await fetch(gov, "/bytes/20000") == 200
    await settled(gov)
    assert receiver.kinds() == ["threshold:0.5", "threshold:0.9", "blocked"]


async def test_a_grant_reopens_and_a_new_block_at_the_new_cap_is_reported(
    make_governor: GovernorFactory, receiver: Receiver
) -> None:
    gov = await make_governor(cap="10 KiB", tenant=WARN, webhook_url=receiver.url)
    assert await fetch(gov, "/bytes/20000") == 200
    await settled(gov)
    assert receiver.kinds() == ["threshold:0.5", "threshold:0.9", "blocked"]
    await gov.runtime.grant("site", 20000)
    await settled(gov)
    assert receiver.kinds()[3:] == ["reopened"]
    assert receiver.events[3]["reason"] == "cap"
    assert receiver.events[3]["cap_bytes"] == CAP + 20000
    assert await fetch(gov, "/bytes/20000") == 200
    await settled(gov)
    assert receiver.kinds()[4:] == ["blocked"]  # thresholds are once per period
    assert receiver.events[4]["cap_bytes"] == CAP + 20000
    await gov.runtime.reset("site")
    await settled(gov)
    assert receiver.kinds()[5:] == ["reopened"]
    assert receiver.events[5]["reason"] == "reset"
    assert receiver.events[5]["used_bytes"] == 0


async def test_a_failing_webhook_is_retried_until_it_takes_the_event(
    make_governor: GovernorFactory, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    gov = await make_governor(cap="10 KiB", tenant=WARN, webhook_url=receiver.url)
    gov.warner.backoff = 0.05
    assert await fetch(gov, "/bytes/6000") == 200
    await settled(gov)
    assert receiver.calls == 3
    assert receiver.kinds() == ["threshold:0.5"]
    assert gov.warner.sent == {"threshold": 1}
    assert gov.warner.failed == 0


async def test_a_webhook_that_keeps_failing_is_given_up_and_logged(
    make_governor: GovernorFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_first = 1000
    gov = await make_governor(cap="10 KiB", tenant=WARN, webhook_url=receiver.url)
    gov.warner.backoff = 0.01
    assert await fetch(gov, "/bytes/6000") == 200
    await settled(gov)
    assert receiver.calls == gov.warner.attempts == 4
    assert gov.warner.failed == 1
    assert not gov.warner.sent
    assert any(
        "webhook gave up on the threshold event for tenant site after 4 tries: HTTP 500"
        in r.getMessage()
        for r in caplog.records
    )


async def test_a_webhook_that_never_answers_times_out(
    make_governor: GovernorFactory, receiver: Receiver
) -> None:
    receiver.hang = True
    gov = await make_governor(cap="10 KiB", tenant=WARN, webhook_url=receiver.url)
    gov.warner.backoff = 0.01
    gov.warner.post_timeout = 0.2
    gov.warner.attempts = 2
    assert await fetch(gov, "/bytes/6000") == 200
    started = time.monotonic()
    await settled(gov)
    assert time.monotonic() - started < 3
    assert receiver.calls == 2
    assert gov.warner.failed == 1


async def test_two_governors_on_one_store_send_each_event_once(
    make_governor: GovernorFactory, receiver: Receiver, tmp_path: Path, upstream_url: str
) -> None:
    path = write_config(
        tmp_path, upstream=upstream_url, cap="10 KiB", tenant=WARN, webhook_url=receiver.url
    )
    # A second file in the same folder: the same store (state/usage.db), its own port.
    doc = yaml.safe_load(path.read_text())
    doc["listen"] = f"127.0.0.1:{free_port()}"
    other = tmp_path / "governor-b.yaml"
    other.write_text(yaml.safe_dump(doc, sort_keys=False))
    govs = [await make_governor(path), await make_governor(other)]
    assert govs[0].config.store == govs[1].config.store
    for i in range(8):
        gov = govs[i % 2]
        await fetch(gov)  # 200 until the fleet's total reaches the cap, then 503
        for g in govs:
            await settled(g)
        for g in govs:
            await settled(g)  # both now know the other's bytes
    assert receiver.kinds() == ["threshold:0.5", "threshold:0.9", "blocked"]
    sent = govs[0].warner.sent + govs[1].warner.sent
    assert sent == {"threshold": 2, "blocked": 1}
    assert govs[0].warner.claimed_elsewhere + govs[1].warner.claimed_elsewhere >= 3


async def test_a_restart_does_not_send_again(
    tmp_path: Path, upstream_url: str, receiver: Receiver, clock: FakeClock
) -> None:
    path = write_config(
        tmp_path, upstream=upstream_url, cap="10 KiB", tenant=WARN, webhook_url=receiver.url
    )
    gov = Governor(load_config(path), clock=clock)
    await gov.start()
    try:
        assert await fetch(gov, "/bytes/20000") == 200
    finally:
        await gov.stop()  # the last flush sees the cap; stop delivers what it queued
    assert receiver.kinds() == ["threshold:0.5", "threshold:0.9", "blocked"]
    again = Governor(load_config(path), clock=clock)
    await again.start()
    try:
        await settled(again)
    finally:
        await again.stop()
    assert len(receiver.events) == 3
    assert again.warner.claimed_elsewhere == 3


async def test_stop_waits_for_a_hanging_webhook_only_so_long(
    tmp_path: Path, upstream_url: str, receiver: Receiver, clock: FakeClock
) -> None:
    receiver.hang = True
    path = write_config(
        tmp_path, upstream=upstream_url, cap="10 KiB", tenant=WARN, webhook_url=receiver.url
    )
    gov = Governor(load_config(path), clock=clock)
    await gov.start()
    gov.warner.stop_deadline = 0.3
    try:
        assert await fetch(gov, "/bytes/20000") == 200
        await gov.flusher.flush()
        async with asyncio.timeout(5):
            await receiver.called.wait()
    finally:
        started = time.monotonic()
        await gov.stop()
    assert time.monotonic() - started < 2
    assert gov.warner.dropped == 3  # the one hanging, and the two behind it


async def test_without_a_webhook_each_event_is_still_logged_once(
    make_governor: GovernorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="governor.warnings")
    gov = await make_governor(cap="10 KiB", tenant=WARN)
    assert await fetch(gov, "/bytes/20000") == 200
    await settled(gov)
    await settled(gov)
    assert gov.warner.sent == {"threshold": 2, "blocked": 1}
    messages = [r.getMessage() for r in caplog.records if r.name == "governor.warnings"]
    assert len(messages) == 3
    assert messages[0].startswith("tenant site reached 50% of its daily cap: ")


async def test_the_blocked_event_says_what_used_the_allowance(
    make_governor: GovernorFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="governor.warnings")
    gov = await make_governor(cap="10 KiB", webhook_url=receiver.url)
    client = await RawClient.connect(gov.port)
    for _ in range(4):  # 4 x 3 KB by one crawler on one connection: blocked
        await client.send(request("GET", "/bytes/3000?x=1", "site.test", "User-Agent: GPTBot/1.2"))
        assert (await client.response()).status == 200
    await client.close()
    await settled(gov)
    (blocked,) = receiver.events
    assert blocked["event"] == "blocked"
    assert blocked["summary"] == "GPTBot/1.2 100%, 127.0.0.0/24 100%, /bytes/3000 100%"
    assert blocked["top"]["agent"][0]["item"] == "GPTBot/1.2"
    assert blocked["top"]["path"][0]["requests"] == 4
    assert "top: GPTBot/1.2 100%, 127.0.0.0/24 100%" in caplog.text
