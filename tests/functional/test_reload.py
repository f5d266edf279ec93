"""A reload applies every setting but ``listen``, ``store`` and ``workers``, over real sockets.

The audit at the end holds the rule for every field of the config: each is either taken
by a running part on reload (and the test reads it back from that part) or takes a
restart (and is kept as running); a field added without either fails it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from governor.config import Config, LimitsConfig, Timeouts, load_config
from governor.process.instance import RESTART_ONLY, Governor
from governor.process.supervisor import Supervisor
from tests.faults import FaultProxy
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import ServeFactory
from tests.redis_servers import RedisServer, have_redis
from tests.support import RawClient, eventually, free_port, held_port, request, write_config

OLD_TOKEN = "old-admin-token-0123456789"
NEW_TOKEN = "new-admin-token-9876543210"


def rewrite(path: Path, **changes: Any) -> None:
    """Change top-level keys (a None value removes the key) of a written config."""
    doc = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


async def api_status(port: int, token: str) -> int:
    url = f"http://127.0.0.1:{port}/api/v1/tenants"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status


async def fetch(port: int, path: str = "/bytes/10") -> int:
    client = await RawClient.connect(port)
    await client.send(request("GET", path, "site.test"))
    resp = await client.response()
    await client.close()
    return resp.status


async def lines_of(path: Path, n: int) -> list[str]:
    """The file's lines once it has ``n`` (the access log is written by a thread)."""
    text = ""

    def enough() -> bool:
        nonlocal text
        text = path.read_text() if path.exists() else ""
        return text.count("\n") >= n

    await eventually(enough, what=f"{n} line(s) in {path.name}")
    return text.splitlines()


# -- the token ---------------------------------------------------------------------------


async def test_sighup_with_a_rotated_token_refuses_the_old_one_at_once(
    serve: ServeFactory, tmp_path: Path, upstream_url: str
) -> None:
    token = tmp_path / "admin.token"
    token.write_text(OLD_TOKEN + "\n")
    admin = free_port()
    path = write_config(
        tmp_path,
        upstream=upstream_url,
        admin_listen=f"127.0.0.1:{admin}",
        admin_token_file="admin.token",
    )
    served = await serve(path)  # the admin listener is up before governor's says it is
    assert await api_status(admin, OLD_TOKEN) == 200
    assert await api_status(admin, NEW_TOKEN) == 401
    token.write_text(NEW_TOKEN + "\n")  # rotated
    served.proc.send_signal(signal.SIGHUP)
    await served.wait_for("reloaded")
    assert await api_status(admin, OLD_TOKEN) == 401  # the very next call
    assert await api_status(admin, NEW_TOKEN) == 200
    served.proc.send_signal(signal.SIGTERM)
    assert await served.proc.wait() == 0


async def test_a_reload_that_drops_the_token_file_opens_the_api(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    (tmp_path / "admin.token").write_text(OLD_TOKEN)
    gov = await make_governor(
        admin_listen=f"127.0.0.1:{free_port()}", admin_token_file="admin.token"
    )
    assert gov.admin_port is not None
    assert await api_status(gov.admin_port, "wrong-token-0123456789") == 401
    rewrite(gov.config.path, admin_token_file=None)
    assert await gov.reload()
    assert await api_status(gov.admin_port, "wrong-token-0123456789") == 200


# -- the access log ----------------------------------------------------------------------


async def test_a_reload_moves_the_access_log_and_changes_its_format(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    gov = await make_governor(access_log=str(first), log_format="plain")
    assert await fetch(gov.port, "/bytes/1") == 200
    assert (await lines_of(first, 1))[0].split(" ")[4] == '"/bytes/1"'
    rewrite(gov.config.path, access_log=str(second), log_format="json")
    assert await gov.reload()
    assert await fetch(gov.port, "/bytes/2") == 200
    (line,) = await lines_of(second, 1)
    assert '"path":"/bytes/2"' in line  # JSON, in the new file
    assert len(await lines_of(first, 1)) == 1  # nothing more in the old one
    rewrite(gov.config.path, access_log="off")
    assert await gov.reload()
    assert await fetch(gov.port, "/bytes/3") == 200
    rewrite(gov.config.path, access_log=str(first), log_format="plain")
    assert await gov.reload()
    assert await fetch(gov.port, "/bytes/4") == 200
    got = await lines_of(first, 2)
    assert [line.split(" ")[4] for line in got] == ['"/bytes/1"', '"/bytes/4"']  # off: none
    assert len(await lines_of(second, 1)) == 1


def open_paths() -> set[str]:
    """The files this process holds open."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return held


async def test_a_reload_reopens_the_log_at_the_same_path_and_releases_the_rotated_file(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    """As nginx reopens its logs (``nginx -s reopen``; a reload does it too): logrotate's
    postrotate may signal, and the rotated file is let go at once, with no request."""
    target = tmp_path / "access.log"
    gov = await make_governor(access_log=str(target))
    assert await fetch(gov.port, "/bytes/1") == 200
    await lines_of(target, 1)
    rotated = tmp_path / "access.log.1"
    target.rename(rotated)
    assert str(rotated) in open_paths()
    assert await gov.reload()
    await eventually(  # at the writer thread's own pace
        lambda: str(rotated) not in open_paths() and str(target) in open_paths(),
        what="the log reopened at its path (created now, as at start-up)",
    )
    assert await fetch(gov.port, "/bytes/2") == 200
    assert '"/bytes/2"' in (await lines_of(target, 1))[0]


async def test_a_reload_to_an_access_log_that_cannot_be_created_is_rejected(
    make_governor: GovernorFactory, tmp_path: Path
) -> None:
    first = tmp_path / "first.log"
    gov = await make_governor(access_log=str(first), cap="1 GiB")
    rewrite(gov.config.path, access_log=str(tmp_path / "missing" / "access.log"))
    path = gov.config.path
    text = path.read_text().replace("daily_cap: 1 GiB", "daily_cap: 2 GiB")
    path.write_text(text)
    assert not await gov.reload()
    assert gov.access_log.target == str(first)
    assert gov.config.tenants[0].daily_cap == 2**30  # nothing of it was applied
    assert await fetch(gov.port, "/bytes/1") == 200
    assert len(await lines_of(first, 1)) == 1


# -- the upstream connect timeout ----------------------------------------------------------


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect there hangs (the SYN is dropped)."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # one connection fills the queue; nobody accepts
        port = int(server.getsockname()[1])
        filler.connect(("127.0.0.1", port))
        yield port


async def test_a_reload_changes_the_upstream_connect_timeout(
    make_governor: GovernorFactory, unanswering_port: int
) -> None:
    gov = await make_governor(
        upstream=f"http://127.0.0.1:{unanswering_port}", timeouts={"upstream_connect": "30s"}
    )
    rewrite(gov.config.path, timeouts={"upstream_connect": "300ms"})
    assert await gov.reload()
    assert gov.pool is not None
    assert gov.pool.connect_timeout == 0.3
    started = time.monotonic()
    async with asyncio.timeout(5):  # the old 30 s would run past it
        assert await fetch(gov.port) == 502
    assert 0.3 <= time.monotonic() - started < 3


# -- the flusher and the supervisor ---------------------------------------------------------


async def test_a_shorter_flush_interval_applies_from_the_reload_not_after_the_old_wait(
    make_governor: GovernorFactory,
) -> None:
    gov = await make_governor(flush_interval="1h")
    assert await fetch(gov.port) == 200
    assert gov.runtime.ledger.pending_bytes() > 0  # the flusher waits out its hour
    rewrite(gov.config.path, flush_interval="50ms")
    assert await gov.reload()
    await eventually(
        lambda: gov.runtime.ledger.pending_bytes() == 0, what="a flush at the new interval"
    )


def test_the_supervisor_takes_the_new_drain_time_on_sighup(tmp_path: Path) -> None:
    """With workers, a worker given a longer ``timeouts.shutdown`` must not be killed at the
    old one: the supervisor's grace follows the reloaded file."""
    path = write_config(
        tmp_path, upstream="http://127.0.0.1:1", workers=2, timeouts={"shutdown": "1s"}
    )
    supervisor = Supervisor(load_config(path))
    before = supervisor.grace
    rewrite(path, timeouts={"shutdown": "100s"}, store_timeout="2s")
    supervisor._retune()
    assert supervisor.grace == before + 99 + 1.5
    path.write_text("listen: [broken")
    supervisor._retune()  # the workers reject it and say why; the grace stays
    assert supervisor.grace == before + 99 + 1.5


# -- the admin listener --------------------------------------------------------------------


async def healthz(port: int) -> int | None:
    """/healthz's status on ``port``, or None when nothing listens there."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            return resp.status
    except aiohttp.ClientConnectorError:
        return None


async def test_a_reload_moves_adds_and_removes_the_admin_listener(
    make_governor: GovernorFactory,
) -> None:
    first, second = free_port(), free_port()
    gov = await make_governor(admin_listen=f"127.0.0.1:{first}")
    assert gov.admin is not None
    assert await healthz(first) == 200
    rewrite(gov.config.path, admin_listen=f"127.0.0.1:{second}")
    assert await gov.reload()
    await gov.admin.settled()
    assert gov.admin_port == second
    assert await healthz(second) == 200
    assert await healthz(first) is None
    rewrite(gov.config.path, admin_listen=None)
    assert await gov.reload()
    await gov.admin.settled()
    assert gov.admin_port is None
    assert await healthz(second) is None
    rewrite(gov.config.path, admin_listen=f"127.0.0.1:{first}")
    assert await gov.reload()
    await gov.admin.settled()
    assert await healthz(first) == 200


async def test_a_reload_to_an_admin_port_in_use_is_rejected_whole(
    make_governor: GovernorFactory,
) -> None:
    first = free_port()
    gov = await make_governor(admin_listen=f"127.0.0.1:{first}", cap="1 GiB")
    with held_port() as busy:
        rewrite(gov.config.path, admin_listen=f"127.0.0.1:{busy}", flush_interval="2s")
        assert not await gov.reload()
    assert gov.config.flush_interval != 2.0  # nothing of it was applied
    failed = {"result": "error"}
    assert gov.metrics.registry.get_sample_value("governor_config_reloads_total", failed) == 1
    assert await healthz(first) == 200


# -- the store's settings ------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "redis") as server:
        yield server


async def test_a_reload_changes_the_store_timeout(
    make_governor: GovernorFactory, redis_server: RedisServer
) -> None:
    async with FaultProxy("127.0.0.1", redis_server.port) as faults:
        gov = await make_governor(
            store=f"redis://{faults.address}/0", store_timeout="20s", flush_interval="1h"
        )
        rewrite(gov.config.path, store_timeout="200ms")
        assert await gov.reload()
        faults.stall()
        started = time.monotonic()
        async with asyncio.timeout(5):  # the old 20 s would run past it
            await gov.flusher.flush()
        assert not gov.runtime.store_ok
        assert time.monotonic() - started < 2
        faults.resume()
        faults.reset_all()
        await gov.stop()  # before the fault proxy goes


# -- the audit: every field is reloaded or takes a restart ---------------------------------

# Where the running governor holds each setting a reload applies. A probe reads the
# part that uses it; the snapshot's config is that part for what is read per request or
# per flush (the proxy, the admin API's token, the flusher, the warner).
LIVE: dict[str, Callable[[Governor], object]] = {
    "store_timeout": lambda g: getattr(g.store, "timeout", None),
    "admin_listen": lambda g: g.admin.address if g.admin is not None else None,
    "admin_token": lambda g: g.runtime.snapshot.config.admin_token,
    "webhook_url": lambda g: g.warner.webhook_url,
    "log_format": lambda g: g.access_log.log_format,
    "access_log": lambda g: g.access_log.target,
    "flush_interval": lambda g: g.runtime.snapshot.config.flush_interval,
    "history_days": lambda g: getattr(g.store, "usage_ttl", 0) // 86400 - 2,
    "trusted_proxies": lambda g: g.runtime.snapshot.config.trusted_proxies,
    "top_clients": lambda g: g.runtime.snapshot.config.top_clients,
    "timeouts.upstream_connect": lambda g: g.pool.connect_timeout if g.pool else None,
    "timeouts.upstream_response": lambda g: g.runtime.snapshot.config.timeouts.upstream_response,
    "timeouts.keepalive": lambda g: server(g).keepalive,
    "timeouts.shutdown": lambda g: g.config.timeouts.shutdown,
    "timeouts.shutdown_delay": lambda g: g.config.timeouts.shutdown_delay,
    "timeouts.send": lambda g: server(g).send_timeout,
    "timeouts.request_header": lambda g: server(g).header_timeout,
    "timeouts.body_min_rate": lambda g: server(g).body_min_rate,
    "timeouts.websocket_idle": lambda g: server(g).websocket_idle,
    "timeouts.tls_handshake": lambda g: server(g).handshake_timeout,
    "limits.request_line": lambda g: server(g).limits.request_line,
    "limits.header_field": lambda g: server(g).limits.field,
    "limits.header_total": lambda g: server(g).limits.head,
    "limits.header_count": lambda g: server(g).limits.fields,
    "limits.body_max": lambda g: server(g).body_max,
    "limits.connections": lambda g: server(g).max_connections,
    "limits.connections_per_client": lambda g: server(g).max_per_client,
    "tenants": lambda g: tuple(site.config for site in g.runtime.snapshot.tenants.values()),
}
RESTART = {
    # The addresses take a restart; a TLS listener's certificates, versions and ciphers are
    # read again on every reload (tests/functional/test_tls.py).
    "listeners": "listen",
    "store": "store",
    "workers": "workers",
    "spool": "spool",  # locked by the process from its start (see governor.accounts.spool)
}
NOT_SETTINGS = {"path", "lines"}  # where the file is, and its lines for messages


def server(gov: Governor) -> Any:
    assert gov._server is not None
    return gov._server


def leaf_fields(cls: type, prefix: str = "") -> set[str]:
    """Every field of a config dataclass, sections (timeouts, limits) by their fields."""
    out = set()
    for f in dataclasses.fields(cls):
        section = {"timeouts": Timeouts, "limits": LimitsConfig}.get(f.name)
        if section is not None and not prefix:
            out |= leaf_fields(section, f"{f.name}.")
        else:
            out.add(prefix + f.name)
    return out


def value_of(config: Config, field: str) -> object:
    value: object = config
    for name in field.split("."):
        value = getattr(value, name)
    return value


def test_every_field_is_reloaded_or_takes_a_restart() -> None:
    assert set(RESTART.values()) == set(RESTART_ONLY)
    unclassified = leaf_fields(Config) - set(LIVE) - set(RESTART) - NOT_SETTINGS
    assert not unclassified, f"say what a reload does with {sorted(unclassified)}"


def settings(tmp_path: Path, n: int, redis_url: str) -> dict[str, Any]:
    """Config ``n`` (0 or 1): every key set, each to a different value in the two."""
    (tmp_path / f"token{n}").write_text(f"admin-token-number-{n}-0123456789")
    return {
        "listen": f"127.0.0.{1 + n}:{free_port()}",
        "store": f"{redis_url[:-1]}{n}",
        "store_timeout": ["500ms", "700ms"][n],
        "spool": f"state/spool{n}.json",
        "workers": 1 + n,
        "admin_listen": f"127.0.0.1:{free_port()}",
        "admin_token_file": f"token{n}",
        "webhook_url": f"http://127.0.0.1:1/hook{n}",
        "log_format": ["plain", "json"][n],
        "access_log": str(tmp_path / f"access{n}.log"),
        "flush_interval": ["50ms", "60ms"][n],
        "history_days": 35 + n,
        "trusted_proxies": [f"10.{n}.0.0/16"],
        "top_clients": ["truncated", "hashed"][n],
        "timeouts": {
            "upstream_connect": f"{5 + n}s",
            "upstream_response": f"{60 + n}s",
            "keepalive": f"{75 + n}s",
            "shutdown": f"{30 + n}s",
            "shutdown_delay": f"{n}s",
            "send": f"{60 + n}s",
            "request_header": f"{60 + n}s",
            "body_min_rate": f"{1 + n} KiB/s",
            "websocket_idle": f"{600 + n}s",
            "tls_handshake": f"{10 + n}s",
        },
        "limits": {
            "request_line": f"{8 + n} KiB",
            "header_field": f"{8 + n} KiB",
            "header_total": f"{64 + n} KiB",
            "header_count": 100 + n,
            "body_max": f"{1 + n} GiB",
            "connections": 10000 + n,
            "connections_per_client": 256 + n,
        },
    }


async def test_a_reload_reaches_every_part_that_holds_a_setting(
    tmp_path: Path, upstream_url: str, redis_server: RedisServer
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, **settings(tmp_path, 0, redis_server.url))
    before = load_config(path)
    gov = Governor(before)
    await gov.start()
    try:
        path = write_config(
            tmp_path,
            upstream=upstream_url,
            cap="2 GiB",
            **settings(tmp_path, 1, redis_server.url),
        )
        after = load_config(path)
        assert await gov.reload()
        assert gov.admin is not None
        await gov.admin.settled()
        for field, probe in LIVE.items():
            assert value_of(before, field) != value_of(after, field), field  # a real change
            assert probe(gov) == value_of(after, field), field
        for field in RESTART:
            assert value_of(gov.config, field) == value_of(before, field), field
            assert value_of(after, field) != value_of(before, field), field
    finally:
        await gov.stop()
