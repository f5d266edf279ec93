"""The spool across processes: one file per live process, and no spooled count left behind.

Real ``governor serve`` processes, a real ``redis-server`` (tests/redis_servers.py)
that the tests stop so that a graceful stop has to spool, and a real upstream.

* Several instances whose configs sit in one folder share the default
  ``state/spool.json``: the first one holds it, the others refuse to start, naming
  the file and the ``spool`` key, instead of overwriting each other's counts at a
  stop; with a ``spool`` each, all run and no count is lost across an outage.
* A run with another number of ``workers`` takes over the spool files of the last
  one (``spool.N.json``), so a change of ``workers`` leaves no count behind.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.functional.processes import Served, ServeFactory, governor, spawn_serve
from tests.functional.test_workers import Start, supervise  # noqa: F401 - the fixture
from tests.functional.upstream_app import Seen
from tests.redis_servers import RedisServer, have_redis
from tests.support import write_config

pytestmark = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", durable=True) as server:
        yield server


def instance(folder: Path, name: str, upstream: str, store: str, **top: object) -> Path:
    """A config ``<name>.yaml`` in ``folder`` (the default spool is ``folder/state/spool.json``)."""
    scratch = folder / f".{name}"
    scratch.mkdir()
    made = write_config(
        scratch, upstream=upstream, store=store, flush_interval="100ms", store_timeout="200ms"
    )
    doc = yaml.safe_load(made.read_text())
    doc.update(top)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def set_key(path: Path, key: str, value: object) -> None:
    doc = yaml.safe_load(path.read_text())
    doc[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


async def stored(config: Path) -> int:
    code, out, err = await governor("usage", "-c", str(config), "--json")
    assert code == 0, err
    return int(json.loads(out)[0]["used_bytes"])


async def refused(config: Path) -> str:
    """``governor serve`` that must fail to start: its message."""
    proc = await spawn_serve(config)
    async with asyncio.timeout(20):
        assert await proc.wait() == 1
    assert proc.stderr is not None
    return (await proc.stderr.read()).decode()


async def stop(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        assert await served.proc.wait() == 0


async def test_instances_sharing_a_spool_refuse_and_with_one_each_lose_no_count(
    serve: ServeFactory,
    tmp_path: Path,
    upstream_url: str,
    seen: Seen,
    redis_server: RedisServer,
) -> None:
    configs = [instance(tmp_path, f"site{i}", upstream_url, redis_server.url) for i in range(3)]
    shared = tmp_path / "state" / "spool.json"
    first = await serve(configs[0])
    messages, (code, out, err) = await asyncio.gather(
        asyncio.gather(*(refused(config) for config in configs[1:])),
        governor("check", "-c", str(configs[1])),  # takes no lock, and says who holds it
    )
    for message in messages:
        assert str(shared) in message, message
        assert "`spool`" in message, message
        assert "Traceback" not in message
    assert code == 0, err
    assert str(shared) in out
    assert f"pid {first.proc.pid}" in out

    # A spool each (the first keeps the default): all three run at once, and the
    # store is down at their stop.
    for i, config in enumerate(configs[1:], 1):
        set_key(config, "spool", f"state/site{i}.spool.json")
    running = [first, *await asyncio.gather(*(serve(config) for config in configs[1:]))]
    await asyncio.to_thread(redis_server.stop)
    received = 0
    for served in running:  # counted with the store down: only the spools keep them
        for _ in range(2):
            n = await served.get("/bytes/10000")
            assert n > 0
            received += n
    await asyncio.gather(*(stop(served) for served in running))
    spools = sorted(p.name for p in (tmp_path / "state").glob("*.json"))
    assert spools == ["site1.spool.json", "site2.spool.json", "spool.json"]

    await asyncio.to_thread(redis_server.start)
    again = await asyncio.gather(*(serve(config) for config in configs))
    assert await stored(configs[0]) == received  # every instance's spool, replayed
    assert list((tmp_path / "state").glob("*.json")) == []
    await asyncio.gather(*(stop(served) for served in again))


async def test_a_change_of_workers_leaves_no_spooled_count_behind(
    supervise: Start,  # noqa: F811 - the fixture
    serve: ServeFactory,
    tmp_path: Path,
    upstream_url: str,
    seen: Seen,
    redis_server: RedisServer,
) -> None:
    config = instance(tmp_path, "governor", upstream_url, redis_server.url, workers=2)
    sup = await supervise(config)
    await asyncio.to_thread(redis_server.stop)
    received = 0
    for _ in range(16):  # the kernel spreads new connections over both workers
        n = await sup.get("/bytes/10000")
        assert n > 0
        received += n
    sup.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await sup.proc.wait() == 0
    await sup.until_eof()
    state = tmp_path / "state"
    spooled = {p.name for p in state.glob("spool*.json")}
    assert spooled, "".join(sup.log)
    assert spooled <= {"spool.0.json", "spool.1.json"}

    set_key(config, "workers", 1)  # a single process now: spool.json is its file
    await asyncio.to_thread(redis_server.start)
    single = await serve(config)
    assert await stored(config) == received  # the workers' spools, taken over
    assert sorted(p.name for p in state.glob("spool*.json")) == []
    await stop(single)
