"""Per-tenant work follows traffic: the metrics' series, the warner and the status page's
ranking look only at tenants active in their period, without sockets (a memory store)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from governor.accounts.runtime import Runtime, TenantUsage
from governor.config import Config, parse_config
from governor.observe.activity import Activity
from governor.observe.events import RequestRecord
from governor.observe.metrics import ALL_TENANTS_UP_TO, Metrics
from governor.observe.webhooks import Warner, WarningEvent
from governor.store.memory import MemoryStore
from tests.support import FakeClock, seoul

CONFIG = """
listen: 127.0.0.1:8080
store: sqlite:///state/usage.db
defaults: {timezone: Asia/Seoul, reset_at: "00:00"}
tenants:
  t0: {hosts: [t0.test], upstream: "http://127.0.0.1:9", daily_cap: 1000, warn_at: ["80%"]}
"""


def config(tmp_path: Path, tenants: int) -> Config:
    base = parse_config(CONFIG, tmp_path / "governor.yaml")
    one = base.tenants[0]
    many = tuple(
        dataclasses.replace(one, name=f"t{i}", hosts=(f"t{i}.test",)) for i in range(tenants)
    )
    return dataclasses.replace(base, tenants=many)


def runtime(tmp_path: Path, tenants: int, clock: FakeClock) -> Runtime:
    return Runtime(config(tmp_path, tenants), store=MemoryStore(clock=clock), clock=clock)


def served(tenant: str, nbytes: int = 100) -> RequestRecord:
    return RequestRecord(
        time=0.0,
        tenant=tenant,
        client="203.0.113.7",
        method="GET",
        path="/",
        status=200,
        bytes_out=nbytes,
        bytes_in=10,
        duration=0.01,
        outcome="proxied",
        upstream_seconds=0.01,
    )


def tenants_in(metrics: Metrics, name: str) -> set[str]:
    text = generate_latest(metrics.exposed).decode()
    return {
        s.labels["tenant"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_a_large_config_exports_only_active_tenants_and_forgets_them_when_idle(
    tmp_path: Path,
) -> None:
    clock = FakeClock(seoul(2024, 2, 21, 12, 0))
    rt = runtime(tmp_path, ALL_TENANTS_UP_TO + 1, clock)
    metrics = Metrics(rt)
    assert tenants_in(metrics, "governor_usage_bytes") == set()  # nobody active yet
    assert tenants_in(metrics, "governor_requests_total") == {""}

    metrics.request_done(served("t5"))
    rt.ledger.add(("t5", "2024-02-21"), 100)
    rt.ledger.seed({("t7", "2024-02-21"): 400})  # another instance's bytes, learned by a flush
    metrics.flushed(["t7"])
    assert tenants_in(metrics, "governor_usage_bytes") == {"t5", "t7"}
    assert tenants_in(metrics, "governor_transfer_bytes_total") == {"t5", "t7"}
    assert metrics.activity.active == 2

    metrics.flushed(["t9"])  # changed, but idle: nothing is made for it
    assert "t9" not in tenants_in(metrics, "governor_usage_bytes")

    # Midnight in Seoul: a new period. t7 is idle in it and goes; t5 serves again and stays.
    clock.set(seoul(2024, 2, 22, 0, 1))
    metrics.request_done(served("t5"))
    metrics.flushed([])
    assert tenants_in(metrics, "governor_usage_bytes") == {"t5"}
    assert tenants_in(metrics, "governor_requests_total") == {"", "t5"}
    assert metrics.activity.active == 1


def test_a_small_config_exports_every_tenant(tmp_path: Path) -> None:
    clock = FakeClock(seoul(2024, 2, 21, 12, 0))
    rt = runtime(tmp_path, 3, clock)
    metrics = Metrics(rt)
    assert tenants_in(metrics, "governor_usage_bytes") == {"t0", "t1", "t2"}
    assert metrics.activity.active == 0  # exported, but not active
    clock.set(seoul(2024, 2, 22, 0, 1))
    metrics.flushed([])
    assert tenants_in(metrics, "governor_usage_bytes") == {"t0", "t1", "t2"}
    text = generate_latest(metrics.exposed).decode()
    resets = {
        s.labels["tenant"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "governor_quota_reset_timestamp_seconds"
    }
    assert resets["t1"] == seoul(2024, 2, 23, 0, 0).timestamp()  # rolled over, untouched


def test_the_warner_looks_at_changed_tenants_and_reopens_at_the_period_end(
    tmp_path: Path,
) -> None:
    clock = FakeClock(seoul(2024, 2, 21, 12, 0))
    rt = runtime(tmp_path, 10, clock)
    warner = Warner(rt)
    rt.ledger.seed({("t3", "2024-02-21"): 1000, ("t4", "2024-02-21"): 1000})
    warner.flushed(["t3"])  # t4 is at its cap too, but the flush did not change it
    kinds = [(e.kind, e.usage.tenant) for e in drain(warner)]
    assert kinds == [("threshold", "t3"), ("blocked", "t3")]
    warner.flushed([])
    assert drain(warner) == []
    clock.set(seoul(2024, 2, 22, 0, 0, 1))  # the period ends: t3 reopens unasked
    warner.flushed([])
    events = drain(warner)
    assert [(e.kind, e.reason, e.usage.tenant) for e in events] == [("reopened", "period", "t3")]


def drain(warner: Warner) -> list[WarningEvent]:
    events: list[WarningEvent] = []
    while not warner._queue.empty():
        events.append(warner._queue.get_nowait())
    return events


def usage(name: str, used: int, cap: int = 100, *, blocked: bool = False) -> TenantUsage:
    ends = seoul(2024, 2, 22, 0, 0)
    return TenantUsage(name, "2024-02-21", used, cap, cap, 0, ends, blocked)


def test_activity_counts_and_ranks_the_active_only() -> None:
    activity = Activity()
    activity.note(usage("a", 10), active=True)
    activity.note(usage("b", 95), active=True)
    activity.note(usage("c", 100, blocked=True), active=True)
    activity.note(usage("idle", 0), active=False)
    assert (activity.active, activity.blocked, activity.near) == (3, 1, 1)
    assert [u.tenant for u in activity.ranked(0, 10)] == ["c", "b", "a"]
    assert [u.tenant for u in activity.ranked(1, 2)] == ["b"]
    activity.note(usage("b", 20), active=False)  # stays active this period
    assert (activity.active, activity.blocked, activity.near) == (3, 1, 0)
    end = seoul(2024, 2, 22, 0, 0).timestamp()
    assert activity.due(end - 1) == []
    assert sorted(activity.due(end)) == ["a", "b", "c", "idle"]
    activity.drop("c")
    assert (activity.active, activity.blocked) == (2, 0)
    assert dt.datetime.fromtimestamp(end, dt.UTC).hour == 15  # midnight in Seoul
