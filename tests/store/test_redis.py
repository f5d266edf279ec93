"""Redis-specific behaviour beyond the contract: URLs, key layout, faults and topologies."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store import open_store
from governor.store.base import bucket_of
from governor.store.redis import (
    DAY,
    RedisStore,
    RedisTarget,
    grant_key,
    parse_redis_url,
    usage_key,
)
from governor.store.redis_scripts import SLICE_KEYS
from tests.redis_servers import ClusterSetup, RedisServer, SentinelSetup, have_redis
from tests.store.history import history
from tests.support import free_port

T = TypeVar("T")

A: Key = ("acme", "2024-02-21")
B: Key = ("bolt", "2024-02-21")
SECRET = "s3cr%40t"  # percent-encoded "s3cr@t"

needs_redis = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")


def batch(deltas: dict[Key, int], flush_id: str | None = None) -> Batch:
    return Batch(flush_id or uuid.uuid4().hex, deltas)


async def opened(url: str, *, seconds: float = 5.0, history_days: int = 35) -> RedisStore:
    """An opened store at ``url`` with a ``seconds`` timeout."""
    store = RedisStore(url, timeout=seconds, history_days=history_days)
    await store.open()
    return store


async def retry(op: Callable[[], Awaitable[T]], *, within: float) -> T:
    """``op()`` retried on StoreError until it succeeds or ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await op()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # a retry: the op itself is the probe


# ------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "want"),
    [
        (
            "redis://127.0.0.1:6380/2",
            RedisTarget("standalone", "redis://127.0.0.1:6380/2", (("127.0.0.1", 6380),), db=2),
        ),
        (
            "redis://cache",
            RedisTarget("standalone", "redis://cache", (("cache", 6379),)),
        ),
        (
            "redis://user:pa%3Ass@cache:7000/",
            RedisTarget(
                "standalone",
                "redis://user:***@cache:7000/",
                (("cache", 7000),),
                username="user",
                password="pa:ss",
            ),
        ),
        (
            "rediss://:pw@[::1]:6390/1",
            RedisTarget(
                "standalone",
                "rediss://:***@[::1]:6390/1",
                (("::1", 6390),),
                1,
                password="pw",
                tls=True,
            ),
        ),
        (
            "unix:///run/redis/redis.sock?db=3",
            RedisTarget(
                "unix", "unix:///run/redis/redis.sock?db=3", path="/run/redis/redis.sock", db=3
            ),
        ),
        (
            "unix:///run/redis.sock",
            RedisTarget("unix", "unix:///run/redis.sock", path="/run/redis.sock"),
        ),
        (
            "redis+sentinel://s1:26379,s2,s3:26380/mymaster/4",
            RedisTarget(
                "sentinel",
                "redis+sentinel://s1:26379,s2,s3:26380/mymaster/4",
                (("s1", 26379), ("s2", 26379), ("s3", 26380)),
                db=4,
                service="mymaster",
            ),
        ),
        (
            "redis+sentinel://:pw@s1/mymaster",
            RedisTarget(
                "sentinel",
                "redis+sentinel://:***@s1/mymaster",
                (("s1", 26379),),
                service="mymaster",
                password="pw",
            ),
        ),
        (
            "redis+cluster://n1:7000,n2:7001",
            RedisTarget("cluster", "redis+cluster://n1:7000,n2:7001", (("n1", 7000), ("n2", 7001))),
        ),
        (
            "REDIS+CLUSTER://n1:7000/0",
            RedisTarget("cluster", "REDIS+CLUSTER://n1:7000/0", (("n1", 7000),)),
        ),
    ],
)
def test_parse_good_urls(url: str, want: RedisTarget) -> None:
    got = parse_redis_url(url)
    assert got == want
    if got.password:
        assert got.password not in repr(got)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis:/host", "not a Redis URL"),
        ("memcached://host:11211", "not a Redis URL"),
        ("redis://", "no host"),
        ("redis://:6379/0", "empty host"),
        ("redis://host:port/0", "port must be an integer"),
        ("redis://host:0/0", "port must be an integer"),
        ("redis://host:70000/0", "port must be an integer"),
        ("redis://host:/0", "port must be an integer"),
        ("redis://host:6379/x", "database must be a non-negative integer"),
        ("redis://host:6379/-1", "database must be a non-negative integer"),
        ("redis://host:6379/0/1", "database number only"),
        ("redis://a:1,b:2/0", "takes one host"),
        ("redis://host/0?ssl=1", "unsupported query parameter"),
        ("redis://host/0#frag", "fragment"),
        ("redis://::1:6379/0", "brackets"),
        ("redis://[::1/0", "malformed host"),
        ("unix://host/run/redis.sock", "has no host"),
        ("unix://", "must be absolute"),
        ("unix:///run/redis.sock?db=x", "non-negative integer"),
        ("unix:///run/redis.sock?timeout=1", "unsupported query parameter"),
        ("redis+sentinel://s1:26379", "service_name"),
        ("redis+sentinel://s1:26379/", "service_name"),
        ("redis+sentinel://s1:26379/svc/1/2", "service_name"),
        ("redis+sentinel://s1:26379/svc/x", "non-negative integer"),
        ("redis+cluster://n1:7000/1", "only database 0"),
        ("redis+cluster://n1:7000,,n2:7001", "empty host"),
    ],
)
def test_parse_bad_urls(url: str, problem: str) -> None:
    with pytest.raises(StoreError, match=problem):
        parse_redis_url(url)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}@host:port/0",
        f"redis://:{SECRET}@host:6379/x",
        f"redis+sentinel://user:{SECRET}@s1:26379",
        f"redis+cluster://:{SECRET}@n1:7000/3",
        f"unix://u:{SECRET}@/run/redis.sock?db=x",
        f"redis://user:{SECRET}@host:6379/0?x=1",
        "redis://user:pass/with/slash@host:6379/0/1",  # unencoded "/", "?", "#", "@"
        "redis://user:pass?with=query@host:port/0",
        "redis://user:pass#with#hash@host:6379/x",
        "redis+cluster://user:pass@with@at@n1:7000/3",
    ],
)
def test_bad_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store(url)
    message = str(info.value)
    for secret in (SECRET, "s3cr@t", "pass", "with"):
        assert secret not in message
    assert "***" in message


def test_open_store_routes_redis_schemes() -> None:
    for url in (
        "redis://127.0.0.1:6390/0",
        "rediss://127.0.0.1:6390/0",
        "unix:///run/redis.sock",
        "redis+sentinel://127.0.0.1:26390/svc",
        "redis+cluster://127.0.0.1:7000",
    ):
        store = open_store(url, timeout=0.25)
        assert isinstance(store, RedisStore)
        assert store.persistent
        assert store.timeout == 0.25
    with pytest.raises(StoreError, match="port"):
        open_store("redis://127.0.0.1:x/0")


def test_usage_keys_carry_the_tenant_as_a_hash_tag() -> None:
    assert usage_key(A) == "governor:{acme}:2024-02-21"
    # Braces would break the hash tag (and % the escaping): they are percent-encoded.
    assert usage_key(("a{b}c%", "2024-02-21")) == "governor:{a%7Bb%7Dc%25}:2024-02-21"


# ------------------------------------------------------------------- behaviour


@needs_redis
async def test_keys_and_ttls(redis_url: str, redis_server: RedisServer) -> None:
    store = await opened(redis_url, history_days=35)
    b = batch({A: 5, ("acme", "2024-02-20"): 1})
    try:
        assert await store.flush(b, [B]) == {A: 5, ("acme", "2024-02-20"): 1, B: 0}
    finally:
        await store.close()
    c = redis_server.client()
    try:
        assert c.get("governor:{acme}:2024-02-21") == "5"
        ttl = c.ttl("governor:{acme}:2024-02-21")
        assert 37 * DAY - 60 <= ttl <= 37 * DAY
        assert c.zrange("governor:{acme}:periods", 0, -1) == ["2024-02-20", "2024-02-21"]
        assert 37 * DAY - 60 <= c.ttl("governor:{acme}:periods") <= 37 * DAY
        # One id key per slice of the batch (one slice here), not one per tenant.
        assert c.get(f"governor:flush:{b.flush_id}:0") == "1"
        assert DAY - 60 <= c.ttl(f"governor:flush:{b.flush_id}:0") <= DAY
        assert c.zrange("governor:flushes", 0, -1) == [f"{b.flush_id}:0"]
        assert c.exists(f"governor:{{acme}}:flush:{b.flush_id}") == 0
        assert c.exists("governor:{bolt}:2024-02-21") == 0  # reading creates nothing
    finally:
        c.close()


@needs_redis
async def test_grant_bucket_and_mark_keys_and_ttls(
    redis_url: str, redis_server: RedisServer
) -> None:
    at = 1_708_473_600.0 + 12.5
    store = await opened(redis_url, history_days=35)
    try:
        await store.flush(Batch(uuid.uuid4().hex, {A: 5}, at=at), [])
        assert await store.grant(A, 100) == 100
        assert await store.mark_once(A, "warn:80") is True
    finally:
        await store.close()
    c = redis_server.client()
    try:
        assert grant_key(A) == "governor:{acme}:2024-02-21:grant"
        assert c.get("governor:{acme}:2024-02-21:grant") == "100"
        assert c.hgetall("governor:{acme}:2024-02-21:buckets") == {str(bucket_of(at)): "5"}
        assert c.exists("governor:{acme}:2024-02-21:mark:warn:80") == 1
        assert c.smembers("governor:{acme}:2024-02-21:marks") == {"warn:80"}
        for key in (
            "governor:{acme}:2024-02-21:grant",
            "governor:{acme}:2024-02-21:buckets",
            "governor:{acme}:2024-02-21:mark:warn:80",
            "governor:{acme}:2024-02-21:marks",
        ):
            assert 37 * DAY - 60 <= c.ttl(key) <= 37 * DAY, key
        (granted,) = c.keys("governor:{acme}:granted:*")
        assert DAY - 60 <= c.ttl(granted) <= DAY
    finally:
        c.close()


@needs_redis
async def test_a_resent_grant_or_mark_applies_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client resends a command once after a connection error or timeout; a resend
    # carries the same token as the first send, as these repeated calls do.
    token = uuid.uuid4()
    monkeypatch.setattr("governor.store.redis.uuid.uuid4", lambda: token)
    store = await opened(redis_url)
    try:
        assert await store.grant(A, 100) == 100
        assert await store.grant(A, 100) == 100  # the resend: added once
        assert await store.mark_once(A, "warn:80") is True
        assert await store.mark_once(A, "warn:80") is True  # the resend: still the first
        monkeypatch.undo()
        assert await store.grant(A, 1) == 101  # another call: added
        assert await store.mark_once(A, "warn:80") is False  # another call: not the first
    finally:
        await store.close()


@needs_redis
async def test_periods_with_only_a_grant_or_mark_stay_indexed_until_pruned(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = await opened(redis_url)
    old_granted: Key = ("acme", "2024-02-19")
    old_marked: Key = ("acme", "2024-02-20")
    try:
        await store.grant(old_granted, 5)
        await store.mark_once(old_marked, "warn:80")
        await store.flush(batch({A: 1}), [])
        c = redis_server.client()
        try:
            # History skips them but keeps them in the index, so prune can find them.
            assert await history(store, "acme", "2024-01-01") == {"2024-02-21": 1}
            assert c.zrange("governor:{acme}:periods", 0, -1) == [
                "2024-02-19",
                "2024-02-20",
                "2024-02-21",
            ]
            assert await store.prune("2024-02-21") == 0
            assert c.zrange("governor:{acme}:periods", 0, -1) == ["2024-02-21"]
            assert sorted(c.keys("governor:{acme}:2024-02-*")) == ["governor:{acme}:2024-02-21"]
        finally:
            c.close()
    finally:
        await store.close()


@needs_redis
async def test_history_days_sets_the_ttl(redis_url: str, redis_server: RedisServer) -> None:
    store = await opened(redis_url, history_days=3)
    try:
        await store.flush(batch({A: 1}), [])
    finally:
        await store.close()
    c = redis_server.client()
    try:
        assert 5 * DAY - 60 <= c.ttl("governor:{acme}:2024-02-21") <= 5 * DAY
    finally:
        c.close()


@needs_redis
async def test_retried_flush_id_counts_once_even_when_partly_applied(redis_url: str) -> None:
    store = await opened(redis_url)
    try:
        # Three slices of SLICE_KEYS keys or fewer; the same slices on every send.
        deltas = {(f"t{i:04d}", "2024-02-21"): i + 1 for i in range(2 * SLICE_KEYS + 7)}
        full = batch(deltas)
        first = dict(sorted(deltas.items())[:SLICE_KEYS])
        # The first attempt landed its first slice only (a pipeline cut short), then was retried.
        assert await store.flush(Batch(full.flush_id, first), []) == first
        assert await store.flush(full, []) == deltas
        # Retries racing each other still count once.
        keys = list(deltas)
        results = await asyncio.gather(*(store.flush(full, keys[:3]) for _ in range(20)))
        assert all(r == deltas for r in results)
        assert await store.totals(keys) == deltas
    finally:
        await store.close()


@needs_redis
async def test_a_second_instance_recognises_the_flush_id(redis_url: str) -> None:
    one, two = await opened(redis_url), await opened(redis_url)
    try:
        b = batch({A: 7})
        assert await one.flush(b, []) == {A: 7}
        assert await two.flush(b, []) == {A: 7}
    finally:
        await one.close()
        await two.close()


@needs_redis
async def test_scripts_are_reloaded_after_script_flush(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = await opened(redis_url)
    try:
        await store.flush(batch({A: 1}), [])
        c = redis_server.client()
        try:
            c.script_flush()
        finally:
            c.close()
        assert await store.flush(batch({A: 2}), []) == {A: 3}
        assert await history(store, "acme", "2024-01-01") == {"2024-02-21": 3}
    finally:
        await store.close()


@needs_redis
async def test_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    with RedisServer(tmp_path / "unix", args=["--unixsocket", str(sock)]) as server:
        store = await opened(f"unix://{sock}?db=1")
        try:
            assert await store.flush(batch({A: 4}), []) == {A: 4}
        finally:
            await store.close()
        c = server.client()
        try:
            c.select(1)
            assert c.get("governor:{acme}:2024-02-21") == "4"
        finally:
            c.close()


@needs_redis
async def test_wrong_password_is_a_store_error_without_the_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "auth", password="right")
    with server:
        await _wrong_password(server.url.replace("redis://", f"redis://:{SECRET}@"))


async def _wrong_password(url: str) -> None:
    store = await opened(url)
    try:
        with pytest.raises(StoreError) as info:
            await store.flush(batch({A: 1}), [])
        assert SECRET not in str(info.value)
        assert "s3cr@t" not in str(info.value)
        assert "redis store redis://:***@127.0.0.1" in str(info.value)
    finally:
        await store.close()


# ---------------------------------------------------------------------- faults


@pytest.mark.parametrize("scheme", ["redis", "redis+sentinel", "redis+cluster"])
async def test_redis_down_opens_but_fails_each_call_within_the_timeout(scheme: str) -> None:
    hosts = ",".join(f"127.0.0.1:{free_port()}" for _ in range(1 if scheme == "redis" else 3))
    path = {"redis": "/0", "redis+sentinel": "/governor/0", "redis+cluster": ""}[scheme]
    url = f"{scheme}://{hosts}{path}"
    timeout = 0.5
    store = await opened(url, seconds=timeout)  # a Redis that is down does not fail open()
    try:
        for call in (
            lambda: store.flush(batch({A: 1}), [B]),
            lambda: store.totals([A]),
            lambda: history(store, "acme", "2024-01-01"),
            lambda: store.prune("2024-01-01"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"redis store redis"):
                await call()
            assert time.monotonic() - started < timeout + 1
    finally:
        await store.close()


@pytest.fixture
async def lone_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A standalone Redis of this test's own, free to be paused or killed."""
    if not have_redis():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "lone", durable=True) as server:
        yield server


@needs_redis
@pytest.mark.parametrize("warm", [True, False], ids=["pooled", "fresh"])
async def test_paused_redis_fails_within_the_timeout_then_counts_the_batch_once(
    lone_server: RedisServer, warm: bool
) -> None:
    timeout = 0.5
    store = await opened(lone_server.url, seconds=timeout)
    try:
        if warm:
            assert await store.flush(batch({A: 1}), []) == {A: 1}
        b = batch({A: 10, B: 3})
        with lone_server.paused():
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"redis store redis://127\.0\.0\.1"):
                await store.flush(b, [])
            assert time.monotonic() - started < timeout + 1
        # The paused server may still run the first attempt once it wakes; the retry,
        # with the same flush id, must not count it again.
        first = 1 if warm else 0
        assert await store.flush(b, []) == {A: first + 10, B: 3}
        assert await store.totals([A, B]) == {A: first + 10, B: 3}
    finally:
        await store.close()


@needs_redis
async def test_a_flush_too_big_for_the_timeout_is_split_and_counts_once(
    lone_server: RedisServer,
) -> None:
    store = await opened(lone_server.url, seconds=0.5)
    try:
        deltas = {(f"t{i:04d}", "2024-02-21"): i + 1 for i in range(3 * SLICE_KEYS)}
        b = batch(deltas)
        store.window = 3 * SLICE_KEYS  # all three slices in one round trip
        with lone_server.paused(), pytest.raises(StoreError, match="no answer within"):
            await store.flush(b, [])
        assert store.window < 3 * SLICE_KEYS  # the next send is split
        # Sent again in more round trips of fewer slices; what landed is not added again.
        assert await store.flush(b, []) == deltas
        assert await store.totals(list(deltas)) == deltas
    finally:
        await store.close()


@needs_redis
async def test_a_small_window_sends_many_round_trips_and_counts_exactly(redis_url: str) -> None:
    store = await opened(redis_url)
    try:
        store.window = SLICE_KEYS // 2  # each slice alone, and reads in pieces too
        deltas = {(f"t{i:04d}", "2024-02-21"): 1 for i in range(2 * SLICE_KEYS + 1)}
        read = [(f"r{i:04d}", "2024-02-21") for i in range(SLICE_KEYS + 1)]
        b = batch(deltas)
        want = {**deltas, **dict.fromkeys(read, 0)}
        assert await store.flush(b, read) == want
        assert await store.flush(b, read) == want
        assert await store.grants(read) == dict.fromkeys(read, 0)
    finally:
        await store.close()


@needs_redis
async def test_survives_a_restart_of_a_durable_redis(lone_server: RedisServer) -> None:
    store = await opened(lone_server.url, seconds=2.0)
    try:
        assert await store.flush(batch({A: 5}), []) == {A: 5}
        lone_server.restart()  # SIGKILL, then start on the same port from the AOF
        # The pooled connection is dead; the store reconnects by itself.
        assert await retry(lambda: store.flush(batch({A: 1}), [B]), within=10) == {A: 6, B: 0}
    finally:
        await store.close()


# ------------------------------------------------------------------ topologies


@needs_redis
async def test_sentinel_failover_loses_nothing(
    sentinel_url: str, redis_sentinel: SentinelSetup
) -> None:
    store = await opened(sentinel_url, seconds=1.0)
    try:
        assert await store.flush(batch({A: 100, B: 1}), []) == {A: 100, B: 1}
        old = redis_sentinel.current_master()
        new = redis_sentinel.failover()
        assert new is not old
        # Retry one batch (same flush id) until the new master answers.
        b = batch({A: 5, ("acme", "2024-02-22"): 7})
        totals = await retry(lambda: store.flush(b, [B]), within=30)
        assert totals == {A: 105, ("acme", "2024-02-22"): 7, B: 1}
        assert await store.flush(b, []) == {A: 105, ("acme", "2024-02-22"): 7}
        assert await history(store, "acme", "2024-01-01") == {"2024-02-21": 105, "2024-02-22": 7}
        c = new.client()
        try:
            assert c.get("governor:{acme}:2024-02-21") == "105"  # on the new master
        finally:
            c.close()
    finally:
        await store.close()


@needs_redis
async def test_cluster_tenants_on_every_node_flush_in_one_call(
    cluster_url: str, redis_cluster: ClusterSetup
) -> None:
    # Pick tenants until every node serves at least two of them.
    tenants: dict[int, list[str]] = {}
    i = 0
    while len(tenants) < len(redis_cluster.nodes) or min(map(len, tenants.values())) < 2:
        name = f"tenant-{i}"
        node = redis_cluster.node_for(usage_key((name, "2024-02-21")))
        tenants.setdefault(node.port, []).append(name)
        i += 1
    names = [t for group in tenants.values() for t in group] + ["we{ird}", "}{"]
    deltas = {(t, p): n for n, t in enumerate(names, 1) for p in ("2024-02-20", "2024-02-21")}
    store = await opened(cluster_url, seconds=2.0)
    try:
        assert await store.flush(batch(deltas), [("nobody", "2024-02-21")]) == {
            **deltas,
            ("nobody", "2024-02-21"): 0,
        }
        assert await store.totals(deltas) == deltas
        for n, t in enumerate(names, 1):
            assert await history(store, t, "2024-01-01") == {"2024-02-20": n, "2024-02-21": n}
        # Each tenant's keys live on the node serving its slot.
        for port, group in tenants.items():
            node = next(n for n in redis_cluster.nodes if n.port == port)
            c = node.client()
            try:
                for t in group:
                    assert c.get(usage_key((t, "2024-02-21"))) == str(deltas[(t, "2024-02-21")])
            finally:
                c.close()
        assert await store.prune("2024-02-21") == len(names)
        assert await history(store, names[0], "2000-01-01") == {"2024-02-21": 1}
    finally:
        await store.close()


@needs_redis
async def test_cluster_reloads_scripts_on_every_node(
    cluster_url: str, redis_cluster: ClusterSetup
) -> None:
    store = await opened(cluster_url, seconds=2.0)
    deltas = {(f"t{i}", "2024-02-21"): 1 for i in range(30)}
    try:
        await store.flush(batch(deltas), [])
        for node in redis_cluster.nodes:
            c = node.client()
            try:
                c.script_flush()
            finally:
                c.close()
        assert await store.flush(batch(deltas), []) == {k: 2 for k in deltas}
    finally:
        await store.close()


@needs_redis
async def test_a_prune_costs_the_tenants_written_not_those_only_read(
    redis_url: str, redis_server: RedisServer
) -> None:
    """After a start reads every tenant's total, the hourly prune still runs one script
    per tenant this instance wrote to (here 2), not one per tenant it read (1,000)."""
    store = await opened(redis_url)
    c = redis_server.client()
    try:
        read = [(f"t{i}", "2024-02-21") for i in range(1000)]
        assert await store.totals(read) == dict.fromkeys(read, 0)
        assert await store.grants(read) == dict.fromkeys(read, 0)
        await store.flush(batch({("t1", "2024-02-21"): 5}), [])
        await store.grant(("t2", "2024-02-21"), 7)

        def script_calls() -> int:
            stats = c.info("commandstats")
            return sum(
                int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                for name in ("evalsha", "eval")
            )

        before = script_calls()
        await store.prune("2024-02-20")
        assert script_calls() - before == 3  # the shared index, t1 and t2
    finally:
        c.close()
        await store.close()
