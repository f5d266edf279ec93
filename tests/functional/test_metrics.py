"""``GET /metrics`` on the admin listener: exact counts after real traffic over real sockets,
the period gauges, the format (checked by promtool), and totals aggregated over workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from governor.build import governor_version, pure_requested, running
from tests.functional.conftest import GovernorFactory
from tests.functional.processes import listen_port, spawn_serve
from tests.functional.test_workers import Supervised, accepted_connections, alive
from tests.functional.upstream_app import Seen
from tests.support import RawClient, eventually, free_port, request, seoul, write_config

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]

OUTCOMES = {
    "proxied",
    "blocked",
    "admission",
    "large",
    "client_share",
    "crawler",
    "paced",
    "would_block",
    "redirect",
    "exempt",
    "upstream_error",
    "unknown_host",
    "bad_request",
}


def labels(**kv: str) -> Labels:
    return frozenset(kv.items())


@dataclass
class Scrape:
    status: int
    content_type: str
    text: str
    samples: Samples

    def get(self, name: str, **kv: str) -> float:
        return self.samples[(name, labels(**kv))]

    def has(self, name: str, **kv: str) -> bool:
        return (name, labels(**kv)) in self.samples

    def tenants(self, name: str) -> set[str]:
        return {dict(ls)["tenant"] for n, ls in self.samples if n == name}


async def scrape(port: int, *headers: str, keep: list[RawClient] | None = None) -> Scrape:
    """``GET /metrics`` on a new connection; ``keep`` holds it open afterwards."""
    client = await RawClient.connect(port)
    await client.send(request("GET", "/metrics", f"127.0.0.1:{port}", *headers))
    resp = await client.response()
    if keep is None:
        await client.close()
    else:
        keep.append(client)
    text = resp.body.decode()
    samples: Samples = {}
    if resp.status == 200 and "openmetrics" not in (resp.header("Content-Type") or ""):
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(resp.status, resp.header("Content-Type") or "", text, samples)


async def scrape_until(port: int, ready: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until ``ready``: requests are reported once answered, gauges at each flush."""
    got: Scrape | None = None

    async def answered() -> bool:
        nonlocal got
        got = await scrape(port)
        return got.status == 200 and ready(got)

    await eventually(answered, timeout=10, what="a scrape showing what the test waits for")
    assert got is not None
    return got


@dataclass
class Sent:
    status: int
    sent: int
    received: int


async def exchange(port: int, data: bytes) -> Sent:
    """One request on a new connection, with every byte counted both ways."""
    client = await RawClient.connect(port)
    await client.send(data)
    resp = await client.response()
    await client.close()
    return Sent(resp.status, client.sent, client.received)


def bounded_labels(got: Scrape) -> None:
    """Every label value is from a fixed set or a tenant's name: never a path or address."""
    for (name, ls), _ in got.samples.items():
        for key, value in ls:
            if key == "tenant":
                assert value in {"", "site", "down"}, (name, value)
            elif key == "direction":
                assert value in {"egress", "ingress"}
            elif key == "outcome":
                assert value in OUTCOMES
            elif key == "result":
                assert value in {"ok", "error"}
            elif key == "scheme":
                assert value in {"http", "https"}
            elif key == "listener":  # a configured listen address, not a client's
                assert value.startswith("127.0.0.1:"), (name, value)
            elif name == "governor_build_info":  # one series: this governor's build
                assert key in {"version", "build", "python"}, key
            else:
                assert key == "le", (name, key)
                float(value)
    text = "\n".join(line for line in got.text.splitlines() if "listener=" not in line)
    for leak in ("/bytes", "/upload", "robots", "nowhere.test", "127.0.0.1", "site.test"):
        assert leak not in text, leak


async def test_metrics_count_every_outcome_to_the_byte(
    make_governor: GovernorFactory, seen: Seen, tmp_path: Path
) -> None:
    refused = free_port()  # nothing listens there: the upstream error
    gov = await make_governor(
        cap="10 KiB",
        tenant={"exempt_paths": ["/robots.txt"], "warn_at": ["50%", "90%"]},
        others={
            "down": {
                "hosts": ["down.test"],
                "upstream": f"http://127.0.0.1:{refused}",
                "daily_cap": "1 GiB",
            }
        },
        admin_listen=f"127.0.0.1:{free_port()}",
    )
    assert gov.admin_port is not None
    admin = gov.admin_port

    upload = await exchange(gov.port, request("POST", "/upload", "site.test", body=b"u" * 1000))
    big = await exchange(gov.port, request("GET", "/bytes/20000", "site.test"))  # crosses 10 KiB
    blocked = await exchange(gov.port, request("GET", "/bytes/10", "site.test"))
    exempt = await exchange(gov.port, request("GET", "/robots.txt", "site.test"))
    error = await exchange(gov.port, request("GET", "/x?q=1", "down.test"))
    unknown = await exchange(gov.port, request("GET", "/secret", "nowhere.test"))
    assert [upload.status, big.status, blocked.status] == [200, 200, 503]
    assert [exempt.status, error.status, unknown.status] == [200, 502, 421]
    site = [upload, big, blocked, exempt]
    charged = upload.received + big.received + exempt.received  # the notice is not charged

    got = await scrape_until(
        admin,
        lambda s: (
            s.get("governor_requests_total", tenant="", outcome="unknown_host") == 1
            and s.get("governor_requests_total", tenant="down", outcome="upstream_error") == 1
            and s.get("governor_requests_total", tenant="site", outcome="exempt") == 1
            and s.get("governor_usage_bytes", tenant="site") == charged
            and s.get("governor_usage_bytes", tenant="down") == error.received
            and s.get("governor_store_flush_seconds_count") >= 2
        ),
    )
    assert got.content_type.startswith("text/plain")
    requests = "governor_requests_total"
    assert got.get(requests, tenant="site", outcome="proxied") == 2
    assert got.get(requests, tenant="site", outcome="blocked") == 1
    assert got.get(requests, tenant="site", outcome="exempt") == 1
    assert got.get(requests, tenant="site", outcome="upstream_error") == 0
    assert got.get(requests, tenant="down", outcome="upstream_error") == 1
    assert got.get(requests, tenant="down", outcome="proxied") == 0
    assert got.get(requests, tenant="", outcome="unknown_host") == 1
    assert got.get(requests, tenant="", outcome="bad_request") == 0
    # Bytes that crossed the client socket, exactly what the raw clients sent and received.
    transfer = "governor_transfer_bytes_total"
    assert got.get(transfer, tenant="site", direction="egress") == sum(r.received for r in site)
    assert got.get(transfer, tenant="site", direction="ingress") == sum(r.sent for r in site)
    assert got.get(transfer, tenant="down", direction="egress") == error.received
    assert got.get(transfer, tenant="down", direction="ingress") == error.sent
    assert {dict(ls)["tenant"] for n, ls in got.samples if n == transfer} == {"site", "down"}
    # Time to upstream headers: the three requests that reached the site; none for "down".
    latency = "governor_upstream_response_seconds"
    assert got.get(f"{latency}_count", tenant="site") == 3
    assert got.get(f"{latency}_bucket", tenant="site", le="+Inf") == 3
    assert 0 < got.get(f"{latency}_sum", tenant="site") < 10
    assert got.get(f"{latency}_count", tenant="down") == 0
    # The current period (the clock is at noon in Seoul; the period ends at midnight).
    midnight = seoul(2024, 2, 22, 0, 0).timestamp()
    assert got.get("governor_usage_bytes", tenant="site") == charged
    assert got.get("governor_quota_bytes", tenant="site") == 10 * 1024
    assert got.get("governor_quota_reset_timestamp_seconds", tenant="site") == midnight
    assert got.get("governor_blocked", tenant="site") == 1
    assert got.get("governor_usage_bytes", tenant="down") == error.received  # its 502
    assert got.get("governor_quota_bytes", tenant="down") == 2**30
    assert got.get("governor_blocked", tenant="down") == 0
    assert got.get("governor_warning_level", tenant="site") == 0.9  # past 90%: the highest
    assert got.get("governor_warning_level", tenant="down") == 0
    # The store.
    assert got.get("governor_store_up") == 1
    assert got.get("governor_store_errors_total") == 0
    assert got.get("governor_store_pending_bytes") >= 0
    assert got.get("governor_store_flush_seconds_count") >= 2  # at start, and since
    assert got.get("governor_config_reloads_total", result="ok") == 0
    bounded_labels(got)


async def test_active_connections_and_reloads(
    make_governor: GovernorFactory, seen: Seen, tmp_path: Path
) -> None:
    others = {"down": {"hosts": ["down.test"], "upstream": "http://127.0.0.1:9", "daily_cap": 1}}
    gov = await make_governor(others=others, admin_listen=f"127.0.0.1:{free_port()}")
    assert gov.admin_port is not None
    admin = gov.admin_port
    clients = [await RawClient.connect(gov.port) for _ in range(3)]
    try:
        for client in clients:  # answered and kept alive: accepted, open, idle
            await client.send(request("GET", "/bytes/10", "site.test"))
            assert (await client.response()).status == 200
        got = await scrape(admin)
        assert got.get("governor_active_connections") == 3  # read at scrape time
    finally:
        for client in clients:
            await client.close()
    await scrape_until(admin, lambda s: s.get("governor_active_connections") == 0)

    assert got.tenants("governor_usage_bytes") == {"site", "down"}
    config = gov.config.path
    text = config.read_text()
    doc = yaml.safe_load(text)
    del doc["tenants"]["down"]
    config.write_text(yaml.safe_dump(doc))
    assert await gov.reload()
    config.write_text(text.replace("daily_cap: 1 GiB", "daily_cap: lots"))
    assert not await gov.reload()
    got = await scrape(admin)
    assert got.get("governor_config_reloads_total", result="ok") == 1
    assert got.get("governor_config_reloads_total", result="error") == 1
    for gauge in ("governor_usage_bytes", "governor_quota_bytes", "governor_blocked"):
        assert got.tenants(gauge) == {"site"}, gauge  # the removed tenant's gauges are gone
    assert got.has("governor_requests_total", tenant="down", outcome="proxied")  # counts stay


async def test_content_negotiation(make_governor: GovernorFactory, seen: Seen) -> None:
    gov = await make_governor(admin_listen=f"127.0.0.1:{free_port()}")
    assert gov.admin_port is not None
    got = await scrape(gov.admin_port, "Accept: application/openmetrics-text; version=1.0.0")
    assert got.status == 200
    assert got.content_type.startswith("application/openmetrics-text")
    assert got.text.endswith("# EOF\n")
    assert "governor_transfer_bytes_total" in got.text
    plain = await scrape(gov.admin_port)
    assert plain.content_type.startswith("text/plain")
    assert "# EOF" not in plain.text


async def test_build_info_says_which_build_serves(make_governor: GovernorFactory) -> None:
    gov = await make_governor(admin_listen=f"127.0.0.1:{free_port()}")
    assert gov.admin_port is not None
    got = await scrape(gov.admin_port)
    kind = running().kind  # the governor serves in this process: the same build
    if pure_requested():
        assert kind == "python"
    key = labels(version=governor_version(), build=kind, python=platform.python_version())
    assert got.samples[("governor_build_info", key)] == 1
    assert [k[1] for k in got.samples if k[0] == "governor_build_info"] == [key]


async def test_promtool_accepts_the_live_output(make_governor: GovernorFactory, seen: Seen) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    gov = await make_governor(admin_listen=f"127.0.0.1:{free_port()}")
    assert gov.admin_port is not None
    await exchange(gov.port, request("GET", "/bytes/100", "site.test"))
    await exchange(gov.port, request("GET", "/", "nowhere.test"))
    got = await scrape_until(
        gov.admin_port,
        lambda s: s.get("governor_requests_total", tenant="", outcome="unknown_host") == 1,
    )
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(got.text.encode())
    assert proc.returncode == 0, out.decode()
    assert out.decode().strip() == "", out.decode()  # no lint problem either


# --- workers: 2 ---------------------------------------------------------------------------


@pytest.fixture
async def supervised() -> AsyncIterator[list[Supervised]]:
    """Supervisors started by a test; stopped with SIGTERM (then killed) at teardown."""
    started: list[Supervised] = []
    yield started
    for sup in started:
        workers = set(sup.workers().values())
        if sup.proc.returncode is None:
            sup.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await sup.proc.wait()
            except TimeoutError:
                sup.proc.kill()
                await sup.proc.wait()
        for pid in workers:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def multiproc_dir(pid: int) -> Path:
    """The PROMETHEUS_MULTIPROC_DIR a process was started with, from /proc/PID/environ."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return Path(value.decode())
    raise AssertionError(f"pid {pid} has no PROMETHEUS_MULTIPROC_DIR")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT and /proc")
async def test_two_workers_report_the_same_fleet_totals_on_every_scrape(
    supervised: list[Supervised], tmp_path: Path, upstream_url: str, seen: Seen
) -> None:
    admin = free_port()
    path = write_config(
        tmp_path,
        upstream=upstream_url,
        workers=2,
        admin_listen=f"127.0.0.1:{admin}",
        flush_interval="100ms",
        others={"down": {"hosts": ["down.test"], "upstream": upstream_url, "daily_cap": 1}},
    )
    port = listen_port(path)
    sup = Supervised(await spawn_serve(path), port)
    supervised.append(sup)
    await sup.wait_for(" ready (pid ", count=2)
    pids = sup.workers()
    folder = multiproc_dir(pids[0])
    assert multiproc_dir(pids[1]) == folder
    assert folder.is_dir()

    # 32 keep-alive connections, each with one answered request, held open: the kernel
    # spread them over both workers, each of which counted its own share.
    clients: list[RawClient] = []
    try:
        for _ in range(32):
            client = await RawClient.connect(port)
            clients.append(client)
            await client.send(request("GET", "/bytes/1000", "site.test"))
            assert (await client.response()).status == 200
        held = {i: accepted_connections(pid, port) for i, pid in pids.items()}
        assert min(held.values()) >= 1, held  # traffic went through both workers
        egress = sum(c.received for c in clients)
        ingress = sum(c.sent for c in clients)
        # Each worker publishes its open connections at its flushes: summed, all 32.
        await scrape_until(admin, lambda s: s.get("governor_active_connections") == 32)
    finally:
        for client in clients:
            await client.close()
    unknown = [await exchange(port, request("GET", "/", "nowhere.test")) for _ in range(4)]
    assert {r.status for r in unknown} == {421}

    def totals(s: Scrape) -> tuple[float, ...]:
        return (
            s.get("governor_requests_total", tenant="site", outcome="proxied"),
            s.get("governor_requests_total", tenant="", outcome="unknown_host"),
            s.get("governor_transfer_bytes_total", tenant="site", direction="egress"),
            s.get("governor_transfer_bytes_total", tenant="site", direction="ingress"),
            s.get("governor_upstream_response_seconds_count", tenant="site"),
            s.get("governor_usage_bytes", tenant="site"),
            s.get("governor_quota_bytes", tenant="site"),
            s.get("governor_blocked", tenant="site"),
            s.get("governor_store_up"),
            s.get("governor_active_connections"),
        )

    expected = (32, 4, egress, ingress, 32, egress, 2**30, 0, 1, 0)
    await scrape_until(admin, lambda s: totals(s) == expected)
    # Every scrape, whichever worker answers it, shows the same fleet totals. Each scrape
    # connection is held open so that /proc tells which worker answered it.
    scrapes: list[RawClient] = []
    answered: set[int] = set()
    try:
        for _ in range(16):
            before = {pid: accepted_connections(pid, admin) for pid in pids.values()}
            got = await scrape(admin, keep=scrapes)
            assert totals(got) == expected
            bounded_labels(got)
            after = {pid: accepted_connections(pid, admin) for pid in pids.values()}
            answered |= {pid for pid in after if after[pid] > before[pid]}
    finally:
        for client in scrapes:
            await client.close()
    assert answered == set(pids.values())  # both workers answered some of the scrapes

    # A worker killed: its counts stay in the totals, its live gauges leave with it.
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    await sup.wait_for(f"worker 1 (pid {victim}) died")
    await sup.wait_for("worker 1 ready (pid")
    assert not (folder / f"gauge_livesum_{victim}.db").exists()  # marked dead
    assert (folder / f"counter_{victim}.db").exists()
    await scrape_until(admin, lambda s: totals(s) == expected)

    # A reload that removes a tenant: its period gauges are gone from every scrape (the
    # shared files cannot drop them; the answering worker filters), its counters stay.
    doc = yaml.safe_load(path.read_text())
    del doc["tenants"]["down"]
    path.write_text(yaml.safe_dump(doc))
    sup.proc.send_signal(signal.SIGHUP)
    await sup.wait_for("governor: reloaded", count=2)
    for _ in range(8):
        got = await scrape(admin)
        assert totals(got) == expected
        assert got.tenants("governor_usage_bytes") == {"site"}
        assert got.tenants("governor_blocked") == {"site"}
        assert got.has("governor_requests_total", tenant="down", outcome="proxied")
        assert got.get("governor_config_reloads_total", result="ok") == 2  # one per worker

    sup.proc.send_signal(signal.SIGTERM)
    assert await sup.proc.wait() == 0
    assert not folder.exists()  # removed by the supervisor at exit
