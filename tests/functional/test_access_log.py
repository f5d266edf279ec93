"""The access log over real sockets: one line per answered request, plain or JSON, with the
bytes a raw-socket client really sent and received, control characters escaped."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from governor.config import load_config
from governor.observe.events import RequestRecord
from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.support import FakeClock, RawClient, eventually, request, write_config

# TIME TENANT CLIENT METHOD "PATH" STATUS BYTES_OUT BYTES_IN DURATION OUTCOME UPSTREAM "AGENT"
# LISTENER
PLAIN = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<tenant>\S+) (?P<client>\S+) "
    r'(?P<method>\S+) "(?P<path>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes_out>\d+) '
    r"(?P<bytes_in>\d+) (?P<duration>\d+\.\d{3}) (?P<outcome>[a-z_]+) "
    r'(?P<upstream>\d+\.\d{3}|-) "(?P<agent>(?:[^"\\]|\\.)*)" (?P<listener>http://\S+|-)$'
)


async def exchange(gov: Governor, raw: bytes) -> tuple[int, int, int]:
    """(status, bytes sent, bytes received) of one request on a fresh connection."""
    client = await RawClient.connect(gov.port)
    await client.send(raw)
    resp = await client.response()
    await client.close()
    return resp.status, client.sent, resp.received


async def lines(path: Path, n: int) -> list[str]:
    """The log's lines once there are ``n`` of them (the writer is a thread)."""
    text = ""

    def enough() -> bool:
        nonlocal text
        text = path.read_text() if path.exists() else ""
        return text.count("\n") >= n

    await eventually(enough, what=f"{n} line(s) in {path.name}")
    assert text.endswith("\n")
    return text.splitlines()


class Reported:
    """A request sink that sets ``done`` when a request has been reported to every sink."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    def request_done(self, record: RequestRecord) -> None:
        self.done.set()


async def three_requests(gov: Governor) -> list[tuple[int, int, int]]:
    """A proxied request that reaches the cap, a blocked one, and one for an unknown host."""
    return [
        await exchange(gov, request("GET", "/bytes/3000", "site.test", "User-Agent: curl/8.11")),
        await exchange(gov, request("GET", "/bytes/10", "site.test")),
        await exchange(gov, request("GET", "/x", "other.test")),
    ]


async def test_plain_lines_for_proxied_blocked_and_unknown_host(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "access.log"
    log.parent.mkdir()
    gov = await make_governor(cap="2 KiB", access_log=str(log))
    answers = await three_requests(gov)
    assert [status for status, _, _ in answers] == [200, 503, 421]
    got = [PLAIN.fullmatch(line) for line in await lines(log, 3)]
    assert all(got), got
    fields = [m.groupdict() for m in got if m is not None]
    for f, (status, sent, received) in zip(fields, answers, strict=True):
        assert f["client"] == "127.0.0.1"
        assert f["method"] == "GET"
        assert int(f["status"]) == status
        assert int(f["bytes_out"]) == received
        assert int(f["bytes_in"]) == sent
        assert float(f["duration"]) < 5
    proxied, blocked, unknown = fields
    assert (proxied["tenant"], proxied["path"], proxied["outcome"]) == (
        "site",
        "/bytes/3000",
        "proxied",
    )
    assert proxied["upstream"] != "-"
    assert (blocked["tenant"], blocked["outcome"], blocked["upstream"]) == ("site", "blocked", "-")
    assert (unknown["tenant"], unknown["path"], unknown["outcome"]) == ("-", "/x", "unknown_host")
    assert gov.access_log is not None
    assert gov.access_log.written == 3
    assert gov.access_log.dropped == 0


async def test_json_lines_for_proxied_blocked_and_unknown_host(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    log = tmp_path / "access.json"
    gov = await make_governor(cap="2 KiB", access_log=str(log), log_format="json")
    answers = await three_requests(gov)
    docs: list[dict[str, Any]] = [json.loads(line) for line in await lines(log, 3)]
    keys = {
        "time",
        "tenant",
        "client",
        "method",
        "path",
        "status",
        "bytes_out",
        "bytes_in",
        "duration",
        "outcome",
        "upstream_seconds",
        "agent",
        "listener",
    }
    for doc, (status, sent, received) in zip(docs, answers, strict=True):
        assert set(doc) == keys
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"])
        assert doc["client"] == "127.0.0.1"
        assert doc["status"] == status
        assert doc["bytes_out"] == received
        assert doc["bytes_in"] == sent
        assert isinstance(doc["duration"], float)
        assert doc["listener"] == f"http://127.0.0.1:{gov.port}"
    proxied, blocked, unknown = docs
    assert (proxied["tenant"], proxied["outcome"]) == ("site", "proxied")
    assert (proxied["agent"], blocked["agent"], unknown["agent"]) == ("curl/8.11", None, None)
    assert proxied["upstream_seconds"] >= 0
    assert (blocked["tenant"], blocked["outcome"], blocked["upstream_seconds"]) == (
        "site",
        "blocked",
        None,
    )
    assert (unknown["tenant"], unknown["outcome"]) == (None, "unknown_host")


HOSTILE = "/a%0A2024-01-01T00:00:00.000Z%20evil%20forged%0D%1B[31m%22q%22%5C%E2%80%A8end"
DECODED = '/a\n2024-01-01T00:00:00.000Z evil forged\r\x1b[31m"q"\\\u2028end'


@pytest.mark.parametrize("log_format", ["plain", "json"])
async def test_a_hostile_path_cannot_forge_lines(
    make_governor: GovernorFactory, tmp_path: Path, log_format: str
) -> None:
    log = tmp_path / "access.log"
    gov = await make_governor(access_log=str(log), log_format=log_format)
    await exchange(gov, request("GET", HOSTILE, "site.test"))
    await exchange(gov, request("GET", "/bytes/1", "site.test"))
    got = await lines(log, 2)
    text = log.read_text()
    assert text.count("\n") == 2
    assert len(text.splitlines()) == 2  # no \r, \x85, \u2028 ... either
    assert all(c.isprintable() for c in text.replace("\n", ""))
    if log_format == "json":
        assert json.loads(got[0])["path"] == DECODED
        return
    m = PLAIN.fullmatch(got[0])
    assert m is not None
    assert m["path"] == (
        '/a\\n2024-01-01T00:00:00.000Z evil forged\\r\\x1b[31m\\"q\\"\\\\\\u2028end'
    )
    assert m["tenant"] == "site"


@pytest.mark.parametrize("target", ["stdout", "stderr"])
async def test_the_standard_streams(
    make_governor: GovernorFactory, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    gov = await make_governor(access_log=target)
    await exchange(gov, request("GET", "/bytes/5", "site.test"))
    access_log = gov.access_log
    assert access_log is not None
    await eventually(lambda: access_log.written > 0, what="the line written")
    captured = capsys.readouterr()
    out, other = (captured.out, captured.err) if target == "stdout" else (captured.err, "")
    assert PLAIN.fullmatch(out.splitlines()[-1]) is not None
    assert '"/bytes/5"' in out
    assert '"/bytes/5"' not in other


async def test_off_writes_nothing(
    make_governor: GovernorFactory, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    gov = await make_governor(access_log="off")
    assert gov.access_log.target == "off"
    reported = Reported()  # told after the access log: nothing can come later
    gov.sinks.append(reported)
    before = set(tmp_path.rglob("*"))
    status, _, _ = await exchange(gov, request("GET", "/bytes/5", "site.test"))
    assert status == 200
    async with asyncio.timeout(5):
        await reported.done.wait()
    captured = capfd.readouterr()
    assert "/bytes/5" not in captured.out + captured.err
    assert {p for p in set(tmp_path.rglob("*")) - before if "access" in p.name} == set()


async def test_stop_writes_every_queued_line_and_closes_the_file(
    tmp_path: Path, upstream_url: str, clock: FakeClock
) -> None:
    log = tmp_path / "access.log"
    gov = Governor(
        load_config(write_config(tmp_path, upstream=upstream_url, access_log=str(log))), clock=clock
    )
    await gov.start()
    try:
        for i in range(20):
            await exchange(gov, request("GET", f"/bytes/{i}", "site.test"))
    finally:
        await gov.stop()
    text = log.read_text()
    assert text.count("\n") == 20
    assert gov.access_log is not None
    assert gov.access_log.written == 20
