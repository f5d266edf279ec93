"""The admin listener over real sockets: probes, the tenant API, the token, the audit log,
reset and grant (kept in the store: across restarts and across a Redis fleet), and the
``governor reset`` / ``governor grant`` commands against a running ``governor serve``."""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from governor.admin.api import create_admin_app
from governor.config import load_config
from governor.process.instance import Governor
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import Served, ServeFactory, governor
from tests.functional.upstream_app import Seen
from tests.redis_servers import RedisServer, have_redis
from tests.support import FakeClock, RawClient, eventually, free_port, request, write_config

TOKEN = "s3cret-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USAGE_FIELDS = {
    "tenant",
    "period",
    "used_bytes",
    "cap_bytes",
    "daily_cap_bytes",
    "granted_bytes",
    "resets_at",
    "blocked",
}


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    """The token file next to governor.yaml (write_config writes into tmp_path)."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    return "token"


def admin_options(token: str | None = "token") -> dict[str, Any]:
    options: dict[str, Any] = {"admin_listen": f"127.0.0.1:{free_port()}"}
    if token is not None:
        options["admin_token_file"] = token
    return options


def base(gov: Governor) -> str:
    assert gov.admin_port is not None
    return f"http://127.0.0.1:{gov.admin_port}"


async def call(
    gov: Governor | str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """(status, parsed JSON or text, headers) of one admin request on a real socket."""
    url = (gov if isinstance(gov, str) else base(gov)) + path
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, data=body) as resp,
    ):
        text = await resp.text()
        doc: Any = json.loads(text) if resp.content_type == "application/json" else text
        return resp.status, doc, dict(resp.headers)


async def fetch(port: int, path: str = "/bytes/20000", host: str = "site.test") -> int:
    """The status of one proxied request on a fresh connection."""
    client = await RawClient.connect(port)
    await client.send(request("GET", path, host))
    resp = await client.response()
    await client.close()
    return resp.status


def grant_body(size: object) -> bytes:
    return json.dumps({"bytes": size}).encode()


# -- probes and reads ---------------------------------------------------------------------


async def test_healthz_and_readyz(make_governor: GovernorFactory, token_file: str) -> None:
    gov = await make_governor(**admin_options())
    status, text, _ = await call(gov, "GET", "/healthz")
    assert (status, text.strip()) == (200, "ok")
    status, doc, _ = await call(gov, "GET", "/readyz")
    assert status == 200
    assert doc["ready"] is True
    assert doc["store"] == "ok"


async def test_readyz_is_503_until_ready_and_reports_a_degraded_store(
    make_governor: GovernorFactory, aiohttp_server: Any
) -> None:
    gov = await make_governor()
    ready = False
    app = create_admin_app(gov.runtime, metrics=gov.metrics, ready=lambda: ready)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    status, doc, _ = await call(url, "GET", "/readyz")
    assert status == 503
    assert doc["ready"] is False
    ready = True
    gov.runtime.store_ok = False  # what a failed flush leaves (real outages: the Redis tests)
    status, doc, _ = await call(url, "GET", "/readyz")
    assert status == 200
    assert doc["store"] == "degraded"
    status, _text, _ = await call(url, "GET", "/healthz")
    assert status == 200


async def test_the_tenants_api_reports_usage(
    make_governor: GovernorFactory, token_file: str, upstream_url: str, seen: Seen
) -> None:
    gov = await make_governor(
        cap="100 KiB",
        others={"blog": {"hosts": ["blog.test"], "upstream": upstream_url, "daily_cap": "1 GiB"}},
        **admin_options(),
    )
    assert await fetch(gov.port) == 200
    await gov.flusher.flush()
    used = gov.runtime.ledger.used(("site", "2024-02-21"))
    assert used > 20000
    status, doc, headers = await call(gov, "GET", "/api/v1/tenants", headers=AUTH)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert [row["tenant"] for row in doc["tenants"]] == ["site", "blog"]
    site = doc["tenants"][0]
    assert set(site) >= USAGE_FIELDS
    assert site["period"] == "2024-02-21"
    assert site["used_bytes"] == used
    assert site["cap_bytes"] == site["daily_cap_bytes"] == 100 * 1024
    assert site["granted_bytes"] == 0
    assert site["resets_at"] == "2024-02-22T00:00:00+09:00"
    assert site["blocked"] is False
    assert doc["tenants"][1]["used_bytes"] == 0
    status, one, _ = await call(gov, "GET", "/api/v1/tenants/site", headers=AUTH)
    assert status == 200
    assert one == site
    status, err, headers = await call(gov, "GET", "/api/v1/tenants/nope", headers=AUTH)
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert "nope" in err["error"]


# -- the token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-the-token-at-all"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "wrong-scheme", "longer", "empty"],
)
async def test_every_api_call_needs_the_token_and_refusals_change_nothing(
    make_governor: GovernorFactory,
    token_file: str,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
) -> None:
    gov = await make_governor(cap="10 KiB", **admin_options())
    assert await fetch(gov.port) == 200
    await gov.flusher.flush()
    before = gov.runtime.usage("site")
    assert before is not None
    assert before.blocked
    caplog.set_level(logging.INFO, logger="governor.audit")
    for method, path, body in [
        ("GET", "/api/v1/tenants", None),
        ("GET", "/api/v1/tenants/site", None),
        ("GET", "/api/v1/tenants/nope", None),
        ("POST", "/api/v1/tenants/site/reset", None),
        ("POST", "/api/v1/tenants/site/grant", grant_body("1 GiB")),
    ]:
        status, doc, resp_headers = await call(gov, method, path, headers=headers, body=body)
        assert status == 401, (method, path)
        assert "Authorization: Bearer" in doc["error"]
        assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    await gov.flusher.flush()
    assert gov.runtime.usage("site") == before  # nothing changed
    assert await gov.store.grants([("site", "2024-02-21")]) == {("site", "2024-02-21"): 0}
    assert await fetch(gov.port) == 503
    lines = [r.getMessage() for r in caplog.records if r.name == "governor.audit"]
    assert len(lines) == 5
    presented = "presented" if headers else "absent"
    for line in lines:
        assert 'result="denied (' in line
        assert f"token={presented}" in line
        assert "client=127.0.0.1" in line
        assert TOKEN not in line
    assert "action=reset tenant=site" in lines[3]
    assert "action=grant tenant=site" in lines[4]


async def test_probes_metrics_and_status_stay_open_with_a_token(
    make_governor: GovernorFactory, token_file: str
) -> None:
    gov = await make_governor(**admin_options())
    for path in ("/healthz", "/readyz", "/status", "/metrics"):
        status, _, _ = await call(gov, "GET", path)
        assert status != 401, path
    assert (await call(gov, "GET", "/status"))[0] == 200


async def test_without_a_token_file_the_api_is_open(make_governor: GovernorFactory) -> None:
    gov = await make_governor(**admin_options(token=None))
    status, doc, _ = await call(gov, "GET", "/api/v1/tenants/site")
    assert status == 200
    assert doc["tenant"] == "site"


# -- grant and reset ------------------------------------------------------------------------


async def test_a_grant_reopens_a_blocked_tenant_and_is_audited(
    make_governor: GovernorFactory,
    token_file: str,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gov = await make_governor(cap="10 KiB", **admin_options())
    assert await fetch(gov.port) == 200  # crosses the cap (at_cap: finish)
    assert await fetch(gov.port) == 503
    caplog.set_level(logging.INFO, logger="governor.audit")
    status, doc, _ = await call(
        gov, "POST", "/api/v1/tenants/site/grant", headers=AUTH, body=grant_body("50 KiB")
    )
    assert status == 200
    assert doc["granted_bytes"] == 50 * 1024
    assert doc["cap_bytes"] == 60 * 1024
    assert doc["daily_cap_bytes"] == 10 * 1024
    assert doc["blocked"] is False
    assert await fetch(gov.port) == 200
    # An integer works too, and grants add up.
    status, doc, _ = await call(
        gov, "POST", "/api/v1/tenants/site/grant", headers=AUTH, body=grant_body(1000)
    )
    assert status == 200
    assert doc["granted_bytes"] == 50 * 1024 + 1000
    assert await gov.store.grants([("site", "2024-02-21")]) == {
        ("site", "2024-02-21"): 50 * 1024 + 1000
    }
    (first, second) = [r.getMessage() for r in caplog.records if r.name == "governor.audit"]
    assert "client=127.0.0.1 token=presented action=grant tenant=site bytes=51200" in first
    assert first.endswith("result=ok")
    assert "at=2" in first  # when, ISO 8601
    assert "bytes=1000 " in second


async def test_a_reset_zeroes_todays_count(
    make_governor: GovernorFactory,
    token_file: str,
    seen: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gov = await make_governor(cap="30 KiB", **admin_options())
    assert await fetch(gov.port) == 200
    assert await fetch(gov.port) == 200
    assert await fetch(gov.port) == 503
    await gov.flusher.flush()
    key = ("site", "2024-02-21")
    assert (await gov.store.totals([key]))[key] > 40000
    caplog.set_level(logging.INFO, logger="governor.audit")
    status, doc, _ = await call(gov, "POST", "/api/v1/tenants/site/reset", headers=AUTH)
    assert status == 200
    assert doc["used_bytes"] == 0
    assert doc["blocked"] is False
    assert (await gov.store.totals([key]))[key] == 0
    assert await fetch(gov.port) == 200
    await gov.flusher.flush()
    after = (await gov.store.totals([key]))[key]
    assert 20000 < after < 21000  # only what was served since the reset
    (line,) = [r.getMessage() for r in caplog.records if r.name == "governor.audit"]
    assert "action=reset tenant=site" in line
    assert line.endswith("result=ok")
    status, err, _ = await call(gov, "POST", "/api/v1/tenants/nope/reset", headers=AUTH)
    assert status == 404
    assert "nope" in err["error"]


async def test_a_reset_takes_what_was_served_before_it_and_not_flushed_yet(
    make_governor: GovernorFactory, token_file: str, seen: Seen
) -> None:
    """A page served before the reset, its bytes still waiting for the next flush, must not
    land in the store after the reset, as if it had been served after it."""
    gov = await make_governor(cap="30 KiB", **admin_options())
    key = ("site", "2024-02-21")
    assert await fetch(gov.port) == 200
    await eventually(lambda: gov.runtime.ledger.pending_bytes() > 20000)  # charged, unflushed
    status, doc, _ = await call(gov, "POST", "/api/v1/tenants/site/reset", headers=AUTH)
    assert status == 200
    assert doc["used_bytes"] == 0
    assert gov.runtime.ledger.pending_bytes() == 0
    await gov.flusher.flush()
    assert (await gov.store.totals([key])).get(key, 0) == 0
    assert gov.runtime.usage("site") is not None
    assert await fetch(gov.port) == 200  # the whole cap is there again


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"{bytes", "not valid JSON"),
        (b"[1]", '{"bytes": "500 MB"}'),
        (b'"500 MB"', '{"bytes": "500 MB"}'),
        (b"{}", "'bytes' is missing"),
        (b'{"byte": "5 MB"}', "unknown field 'byte'"),
        (b'{"bytes": "lots"}', "'lots' is not a size"),
        (b'{"bytes": "5 XB"}', "is not a size"),
        (b'{"bytes": -5}', "must not be negative"),
        (b'{"bytes": true}', "is not a size"),
        (b'{"bytes": null}', "is not a size"),
        (b'{"bytes": 0}', "more than 0"),
    ],
)
async def test_a_bad_grant_is_a_400_naming_the_field_and_changes_nothing(
    make_governor: GovernorFactory,
    token_file: str,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    says: str,
) -> None:
    gov = await make_governor(**admin_options())
    caplog.set_level(logging.INFO, logger="governor.audit")
    status, doc, headers = await call(
        gov, "POST", "/api/v1/tenants/site/grant", headers=AUTH, body=body
    )
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert says in doc["error"]
    assert doc["field"] in ("bytes", "byte")
    assert doc["field"] in doc["error"]
    usage = gov.runtime.usage("site")
    assert usage is not None
    assert usage.granted_bytes == 0
    (line,) = [r.getMessage() for r in caplog.records if r.name == "governor.audit"]
    assert 'result="bad request:' in line


async def test_reset_and_grant_survive_a_restart(
    tmp_path: Path, upstream_url: str, clock: FakeClock, token_file: str, seen: Seen
) -> None:
    path = write_config(tmp_path, upstream=upstream_url, cap="30 KiB", **admin_options())

    async def started() -> Governor:
        gov = Governor(load_config(path), clock=clock)
        await gov.start()
        return gov

    gov = await started()
    try:
        for _ in range(2):
            assert await fetch(gov.port) == 200
        status, _, _ = await call(
            gov, "POST", "/api/v1/tenants/site/grant", headers=AUTH, body=grant_body("1 MiB")
        )
        assert status == 200
        served = (await call(gov, "GET", "/api/v1/tenants/site", headers=AUTH))[1]["used_bytes"]
    finally:
        await gov.stop()
    gov = await started()
    try:
        status, doc, _ = await call(gov, "GET", "/api/v1/tenants/site", headers=AUTH)
        assert doc["granted_bytes"] == 1024 * 1024  # the grant is kept
        assert doc["used_bytes"] == served  # and so is the count
        status, doc, _ = await call(gov, "POST", "/api/v1/tenants/site/reset", headers=AUTH)
        assert status == 200
    finally:
        await gov.stop()
    gov = await started()
    try:
        status, doc, _ = await call(gov, "GET", "/api/v1/tenants/site", headers=AUTH)
        assert doc["used_bytes"] == 0  # the reset is kept
        assert doc["granted_bytes"] == 1024 * 1024
    finally:
        await gov.stop()


# -- a fleet on one Redis ---------------------------------------------------------------------

needs_redis = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


@needs_redis
async def test_reset_and_grant_reach_a_second_instance_within_a_flush_interval(
    make_governor: GovernorFactory, token_file: str, redis_server: RedisServer, seen: Seen
) -> None:
    interval = 0.2
    options = {"store": redis_server.url, "flush_interval": f"{interval}s", "cap": "10 KiB"}
    one = await make_governor(**options, **admin_options())
    two = await make_governor(**options, **admin_options())
    assert await fetch(one.port) == 200  # crosses the cap on instance one
    await one.flusher.flush()

    async def two_blocked() -> bool:
        # Two has not served the tenant: asked for it by name (GET /api/v1/tenants/site),
        # it learns the fleet's total (at once, or with its next flush).
        usage = await two.runtime.lookup("site")
        return usage is not None and usage.blocked

    await eventually(two_blocked, timeout=5, what="instance two learning the count")
    assert await fetch(two.port) == 503

    # A grant made on instance two reopens the tenant on instance one.
    status, _, _ = await call(
        two, "POST", "/api/v1/tenants/site/grant", headers=AUTH, body=grant_body("100 KiB")
    )
    assert status == 200

    async def one_open() -> bool:
        return await fetch(one.port, "/bytes/10") == 200

    took = await eventually(one_open, timeout=interval * 2 + 1, what="the grant reaching one")
    assert took <= interval + 0.5, took
    status, doc, _ = await call(one, "GET", "/api/v1/tenants/site", headers=AUTH)
    assert doc["granted_bytes"] == 100 * 1024
    assert doc["cap_bytes"] == 110 * 1024

    # A reset made on instance one zeroes the count on instance two.
    await one.flusher.flush()
    status, doc, _ = await call(one, "POST", "/api/v1/tenants/site/reset", headers=AUTH)
    assert status == 200
    assert doc["used_bytes"] == 0

    async def two_zero() -> bool:
        doc = (await call(two, "GET", "/api/v1/tenants/site", headers=AUTH))[1]
        return bool(doc["used_bytes"] == 0)

    took = await eventually(two_zero, timeout=interval * 2 + 1, what="the reset reaching two")
    assert took <= interval + 0.5, took


@needs_redis
async def test_readyz_reports_a_redis_outage_as_degraded(
    make_governor: GovernorFactory, redis_server: RedisServer
) -> None:
    gov = await make_governor(
        store=redis_server.url, flush_interval="100ms", store_timeout="200ms", **admin_options(None)
    )
    assert (await call(gov, "GET", "/readyz"))[1]["store"] == "ok"
    with redis_server.paused():

        async def degraded() -> bool:
            return bool((await call(gov, "GET", "/readyz"))[1]["store"] == "degraded")

        await eventually(degraded, timeout=5, what="the outage showing in /readyz")
        status, _doc, _ = await call(gov, "GET", "/readyz")
        assert status == 200  # still serving (on_store_failure: open)
        status, err, _ = await call(
            gov, "POST", "/api/v1/tenants/site/grant", body=grant_body("1 MiB")
        )
        assert status == 503
        assert "store" in err["error"]


# -- the command ------------------------------------------------------------------------------


def command_config(tmp_path: Path, upstream_url: str, **options: Any) -> Path:
    return write_config(tmp_path, upstream=upstream_url, cap="10 KiB", **options)


async def test_cli_grant_and_reset_against_a_running_governor(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, token_file: str, seen: Seen
) -> None:
    path = command_config(tmp_path, upstream_url, flush_interval="100ms", **admin_options())
    served = await serve(path)
    assert await served.get("/bytes/20000") > 0
    assert await served.get("/bytes/10") == -503

    code, out, err = await governor("grant", "site", "1 MiB", "--config", str(path))
    assert (code, err) == (0, ""), err
    assert out.startswith("site: granted; now ")
    assert "of 1.0 MiB used" in out
    assert "open" in out
    assert "BLOCKED" not in out
    assert len(out.strip().splitlines()) == 1
    assert await served.get("/bytes/10") > 0
    code, out, err = await governor("usage", "-c", str(path), "--json")
    (row,) = json.loads(out)
    assert row["granted_bytes"] == 1024 * 1024  # usage reads grants from the store too
    assert row["cap_bytes"] == row["daily_cap_bytes"] + 1024 * 1024
    assert row["blocked"] is False
    line = await served.wait_for("governor.audit")
    assert "action=grant tenant=site bytes=1048576" in line
    assert "token=presented" in line

    code, out, err = await governor("reset", "site", "-c", str(path), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["used_bytes"] == 0
    assert doc["granted_bytes"] == 1024 * 1024
    assert "action=reset tenant=site" in await served.wait_for("governor.audit")

    # Both survive a restart of the process (SQLite store).
    served.proc.send_signal(signal.SIGTERM)
    assert await served.proc.wait() == 0
    served = await serve(path)
    code, out, err = await governor("grant", "site", "1KiB", "-c", str(path))
    assert code == 0, err
    assert "0 B of 1.0 MiB used" in out
    assert "1.0 MiB granted today" in out
    code, out, err = await governor("reset", "site", "-c", str(path))
    assert code == 0, err
    assert out.startswith("site: count reset; now 0 B of 1.0 MiB used (0.0%)")


async def error_of(*args: str) -> str:
    code, out, err = await governor(*args)
    assert code == 1, (code, out, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("governor: ")
    return lines[0]


async def test_cli_errors_are_one_clear_line(
    serve: ServeFactory, tmp_path: Path, upstream_url: str, token_file: str, seen: Seen
) -> None:
    # Nothing listening on admin_listen.
    idle = tmp_path / "idle"
    idle.mkdir()
    (idle / "token").write_text(TOKEN)
    idle_path = command_config(idle, upstream_url, **admin_options())
    message = await error_of("reset", "site", "-c", str(idle_path))
    assert "is governor running?" in message
    # No admin_listen at all.
    bare = tmp_path / "bare"
    bare.mkdir()
    message = await error_of("grant", "site", "1 MB", "-c", str(command_config(bare, upstream_url)))
    assert "no admin_listen" in message

    path = command_config(tmp_path, upstream_url, **admin_options())
    served = await serve(path)
    assert await served.get("/bytes/20000") > 0
    # The wrong token: another config pointing at the same listener.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "token").write_text("a-different-token-0123456789")
    admin_listen = load_config(path).admin_listen
    assert admin_listen is not None
    wrong_path = command_config(
        wrong,
        upstream_url,
        admin_listen=f"127.0.0.1:{admin_listen[1]}",
        admin_token_file="token",
    )
    message = await error_of("grant", "site", "1 MB", "-c", str(wrong_path))
    assert "the admin token was refused" in message
    # No token at all.
    none = tmp_path / "none"
    none.mkdir()
    none_path = command_config(none, upstream_url, admin_listen=f"127.0.0.1:{admin_listen[1]}")
    message = await error_of("reset", "site", "-c", str(none_path))
    assert "the admin token was refused" in message
    # An unknown tenant, and bad sizes.
    message = await error_of("reset", "nope", "-c", str(path))
    assert "no tenant 'nope'" in message
    message = await error_of("grant", "nope", "1 MB", "-c", str(path))
    assert "no tenant 'nope'" in message
    message = await error_of("grant", "site", "lots", "-c", str(path))
    assert "bad size" in message
    assert "'lots' is not a size" in message
    message = await error_of("grant", "site", "0", "-c", str(path))
    assert "more than 0" in message
    # Nothing changed.
    code, out, _ = await governor("usage", "-c", str(path), "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["cap_bytes"] == 10 * 1024
    assert row["blocked"] is True
    await refused_twice_audited(served)


async def refused_twice_audited(served: Served) -> None:
    line = await served.wait_for('result="denied (wrong token)"')
    assert "token=presented" in line
    line = await served.wait_for('result="denied (no token)"')
    assert "token=absent" in line
