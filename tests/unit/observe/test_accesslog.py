"""The access log's formats and its writer thread, without sockets."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from governor.config import parse_config
from governor.observe.accesslog import AccessLog, format_json, format_plain
from governor.observe.events import RequestRecord
from tests.support import wait_until


def record(path: str = "/index.html", **changes: object) -> RequestRecord:
    r = RequestRecord(
        time=1708484400.25,  # 2024-02-21T03:00:00.250Z
        tenant="site",
        client="203.0.113.7",
        method="GET",
        path=path,
        status=200,
        bytes_out=5120,
        bytes_in=87,
        duration=0.0123,
        outcome="proxied",
        upstream_seconds=0.0091,
        agent="curl/8.11 (x86_64)",
        listener="https://0.0.0.0:443",
    )
    for name, value in changes.items():
        setattr(r, name, value)
    return r


def test_plain_format() -> None:
    assert format_plain(record()) == (
        '2024-02-21T03:00:00.250Z site 203.0.113.7 GET "/index.html" 200 5120 87 0.012 '
        'proxied 0.009 "curl/8.11 (x86_64)" https://0.0.0.0:443'
    )
    unknown = record(
        tenant=None, outcome="unknown_host", upstream_seconds=None, status=421, listener=""
    )
    assert format_plain(unknown) == (
        '2024-02-21T03:00:00.250Z - 203.0.113.7 GET "/index.html" 421 5120 87 0.012 unknown_host - '
        '"curl/8.11 (x86_64)" -'
    )


def test_plain_escapes_everything_that_could_end_a_field_or_a_line() -> None:
    line = format_plain(record('/a b\n"c"\\\x1b\x7f\x85\u2028é', client="a b", method="G\tT"))
    assert line.splitlines() == [line]
    assert '"/a b\\n\\"c\\"\\\\\\x1b\\x7f\\x85\\u2028é"' in line
    assert " a\\x20b G\\tT " in line


def test_json_format() -> None:
    doc = json.loads(format_json(record("/a\n\u2028é")))
    assert doc == {
        "time": "2024-02-21T03:00:00.250Z",
        "tenant": "site",
        "client": "203.0.113.7",
        "method": "GET",
        "path": "/a\n\u2028é",
        "status": 200,
        "bytes_out": 5120,
        "bytes_in": 87,
        "duration": 0.0123,
        "outcome": "proxied",
        "upstream_seconds": 0.0091,
        "agent": "curl/8.11 (x86_64)",
        "listener": "https://0.0.0.0:443",
    }
    assert format_json(record("/\u2028")).isascii()


def test_a_slow_writer_drops_lines_instead_of_blocking(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    log = AccessLog(str(target), queue_size=5)
    gate = threading.Event()
    writing = threading.Event()
    real_write = log.write_out

    def slow_write(text: str, count: int) -> None:
        writing.set()
        gate.wait(5)
        real_write(text, count)

    log.write_out = slow_write
    log.request_done(record("/0"))
    assert writing.wait(5)  # the writer holds one line and is stuck
    started = time.monotonic()
    for i in range(1, 50):
        log.request_done(record(f"/{i}"))
    assert time.monotonic() - started < 1  # never waited
    assert log.dropped == 49 - 5  # the queue holds 5
    gate.set()
    log.close()
    assert log.written + log.dropped == 50
    assert len(target.read_text().splitlines()) == log.written
    log.request_done(record())  # after close: dropped, no error
    assert log.written + log.dropped == 51


def test_a_rotated_file_is_reopened(tmp_path: Path) -> None:
    target = tmp_path / "access.log"
    log = AccessLog(str(target))
    log.request_done(record("/one"))
    wait_until(lambda: log.written >= 1, timeout=5, what="the first line written")
    target.rename(tmp_path / "access.log.1")  # as logrotate does
    log.request_done(record("/two"))
    log.close()
    assert '"/one"' in (tmp_path / "access.log.1").read_text()
    assert '"/two"' in target.read_text()
    assert '"/two"' not in (tmp_path / "access.log.1").read_text()


def test_a_reload_switches_target_and_format_exactly_at_its_line(tmp_path: Path) -> None:
    """Lines answered before the reload go to the old file in the old format, even those
    the writer had not written yet; every later line to the new file in the new one."""
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    log = AccessLog(str(old))
    gate = threading.Event()
    writing = threading.Event()
    real_write = log.write_out

    def held_write(text: str, count: int) -> None:
        writing.set()
        gate.wait(5)
        real_write(text, count)

    log.write_out = held_write
    log.request_done(record("/0"))
    assert writing.wait(5)  # the writer holds /0; /1 and /2 wait in the queue
    log.request_done(record("/1"))
    log.request_done(record("/2"))
    text = f"listen: 127.0.0.1:8080\naccess_log: {new}\nlog_format: json\n"
    text += "tenants:\n  a:\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n"
    text += "    daily_cap: 1 GiB\n"
    log.reconfigure(parse_config(text, tmp_path / "governor.yaml"))
    log.request_done(record("/3"))
    log.request_done(record("/4"))
    gate.set()
    log.close()
    assert [line.split(" ")[4] for line in old.read_text().splitlines()] == [
        '"/0"',
        '"/1"',
        '"/2"',
    ]
    assert [json.loads(line)["path"] for line in new.read_text().splitlines()] == ["/3", "/4"]
    assert (log.written, log.dropped) == (5, 0)
