"""Real Redis servers for the store tests, started once per session on free loopback ports.

The ``*_url`` fixtures empty their server before each test, so tests sharing a
server stay independent. Without ``redis-server`` installed, tests needing one
are skipped (CI installs it: see .ci/run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_servers import ClusterSetup, RedisServer, SentinelSetup, have_redis


def _need_redis() -> None:
    if not have_redis():
        pytest.skip("redis-server and redis-cli are not installed")


@pytest.fixture(scope="session")
def redis_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="session")
def redis_server(redis_dir: Path) -> Iterator[RedisServer]:
    """One standalone Redis for the session."""
    _need_redis()
    with RedisServer(redis_dir / "standalone") as server:
        yield server


@pytest.fixture(scope="session")
def redis_sentinel(redis_dir: Path) -> Iterator[SentinelSetup]:
    """A master, a replica and three sentinels for the session (the master may change)."""
    _need_redis()
    with SentinelSetup(redis_dir / "sentinel") as setup:
        yield setup


@pytest.fixture(scope="session")
def redis_cluster(redis_dir: Path) -> Iterator[ClusterSetup]:
    """A three-master Redis Cluster for the session."""
    _need_redis()
    with ClusterSetup(redis_dir / "cluster") as cluster:
        yield cluster


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The standalone Redis's URL, emptied for this test."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def sentinel_url(redis_sentinel: SentinelSetup) -> str:
    """The Sentinel setup's URL, emptied (on master and replica) for this test."""
    redis_sentinel.flushall()
    return redis_sentinel.url


@pytest.fixture
def cluster_url(redis_cluster: ClusterSetup) -> str:
    """The Cluster's URL, every node emptied for this test."""
    redis_cluster.flushall()
    return redis_cluster.url
