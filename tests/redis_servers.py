"""Real Redis servers for tests: standalone, Sentinel and Cluster, on free loopback ports.

Every server runs ``redis-server`` in its own directory under a folder the caller
owns (a pytest tmp folder), bound to 127.0.0.1 on a port chosen here; the
machine's own Redis on 6379 is never touched. Readiness and failovers are waited
for on real conditions (a PING answering, ``cluster_state:ok``, the sentinels
naming the new master) in bounded polling loops; nothing sleeps blindly.

Fault helpers: :meth:`RedisServer.pause` / :meth:`~RedisServer.resume` (SIGSTOP /
SIGCONT, or :meth:`~RedisServer.paused` as a context manager),
:meth:`~RedisServer.kill` (SIGKILL) and :meth:`~RedisServer.start` again on the
same port, or :meth:`~RedisServer.restart`. A server made with ``durable=True``
writes an fsynced AOF (``appendonly yes``, ``appendfsync always``) so a kill
keeps every acknowledged write.

All classes are context managers that stop their processes on exit.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.poll import wait_until
from tests.support.ports import free_port

__all__ = [
    "ClusterSetup",
    "RedisServer",
    "SentinelSetup",
    "have_redis",
]

HOST = "127.0.0.1"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def have_redis() -> bool:
    """Whether ``redis-server`` and ``redis-cli`` are installed."""
    return Path(REDIS_SERVER).exists() and Path(REDIS_CLI).exists()


# What a server not up yet (or mid-failover) answers: "not yet", while polling for it.
NOT_YET = (redis.RedisError, OSError)


def client(port: int, *, timeout: float = 2.0, password: str | None = None) -> redis.Redis:
    """A synchronous client for a test server that fails at once instead of retrying."""
    return redis.Redis(
        host=HOST,
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Have Linux SIGKILL the server if the test process dies without stopping it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class RedisServer:
    """One ``redis-server`` (or sentinel) process in ``directory`` on a loopback port.

    ``port`` defaults to a free one. ``durable`` turns on an fsynced AOF;
    otherwise nothing is persisted. ``password`` sets ``requirepass`` (and is used
    by :meth:`client`). ``args`` are extra command-line options of a
    server; a sentinel (``sentinel=True``) gets ``config`` lines in the config
    file it needs and rewrites.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        durable: bool = False,
        args: Sequence[str] = (),
        config: Sequence[str] = (),
        sentinel: bool = False,
        password: str | None = None,
    ) -> None:
        self.dir = directory
        self.password = password
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.durable = durable
        self.args = list(args)
        self.config = list(config)
        self.sentinel = sentinel
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        kind = "sentinel" if self.sentinel else "redis"
        return f"<{kind} {HOST}:{self.port} pid={self.proc.pid if self.proc else None}>"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    def client(self, *, timeout: float = 2.0) -> redis.Redis:
        return client(self.port, timeout=timeout, password=self.password)

    def command(self) -> list[str]:
        if self.sentinel:
            conf = self.dir / "sentinel.conf"
            if not conf.exists():  # sentinels rewrite it; keep their state across restarts
                lines = [f"port {self.port}", f"bind {HOST}", f"dir {self.dir}", *self.config]
                conf.write_text("\n".join(lines) + "\n")
            return [REDIS_SERVER, str(conf), "--sentinel"]
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        return [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            *persistence,
            *(["--requirepass", self.password] if self.password else []),
            "--dir",
            str(self.dir),
            "--repl-diskless-sync-delay",  # a replica syncs at once, not after 5 s
            "0",
            *self.args,
        ]

    def start(self, *, timeout: float = 10.0) -> Self:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self!r} is already running")
        for _ in range(5):
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            try:
                self.wait_ready(timeout=timeout)
                if self.sentinel:
                    self._quicken_sentinel()
                return self
            except RuntimeError:
                # Another process took the port between free_port() and the bind.
                if self._fixed_port or "already in use" not in self._log_tail():
                    raise
                self.port = free_port()
        raise RuntimeError(f"could not find a free port for {self!r}")

    def _quicken_sentinel(self) -> None:
        """Shorten the sentinel's INFO period from 10 s to 200 ms.

        It then sees a replica's role and link change at once. The hello period
        (2 s) stays: a sentinel that has not heard of a failover turns the promoted
        replica back into a replica after four hello periods, so shortening it
        makes failovers flip-flop on a busy machine. ``SENTINEL DEBUG`` exists
        since Redis 7.0; on an older sentinel the default stays and tests only run
        slower.
        """
        c = self.client()
        try:
            c.execute_command("SENTINEL DEBUG", "info-period", 200)  # type: ignore[no-untyped-call]
        except redis.ResponseError:
            pass
        finally:
            c.close()

    def wait_ready(self, *, timeout: float = 10.0) -> None:
        """Wait until the server answers PING (and has loaded its data)."""
        c = self.client(timeout=0.5)
        try:

            def up() -> bool:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self!r} exited:\n{self._log_tail()}")
                return bool(c.ping())

            wait_until(up, timeout=timeout, what=f"{self!r} to answer PING", ignore=NOT_YET)
        finally:
            c.close()

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM (SIGKILL if it does not exit in time)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the server and reap it; :meth:`start` brings it back on the same port."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(10)

    def restart(self, *, timeout: float = 10.0) -> Self:
        """Kill the server and start it again on the same port and directory."""
        self.kill()
        return self.start(timeout=timeout)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang instead of failing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused server (SIGCONT)."""
        self._signal(signal.SIGCONT)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the server for the duration of the ``with`` block."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        os.kill(self.proc.pid, sig)

    def flushall(self) -> None:
        c = self.client()
        try:
            c.flushall()
        finally:
            c.close()

    def info(self, section: str) -> dict[str, Any]:
        c = self.client()
        try:
            info: dict[str, Any] = c.info(section)
            return info
        finally:
            c.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SentinelSetup:
    """One master, one replica and three sentinels monitoring them as ``service``."""

    def __init__(
        self,
        directory: Path,
        *,
        service: str = "governor",
        durable: bool = False,
        down_after_ms: int = 2000,
    ) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.master = RedisServer(directory / "m0", durable=durable)
        self.replica = RedisServer(directory / "m1", durable=durable)
        self.sentinels = [RedisServer(directory / f"s{i}", sentinel=True) for i in range(3)]
        self.servers = [self.master, self.replica]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, *, timeout: float = 30.0) -> Self:
        try:
            self.master.start()
            self.replica.args = ["--replicaof", HOST, str(self.master.port)]
            self.replica.start()
            self._wait_replica_linked(self.replica, self.master, timeout=timeout)
            for s in self.sentinels:
                s.config = [
                    f"sentinel monitor {self.service} {HOST} {self.master.port} 2",
                    f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.service} 5000",
                    f"sentinel parallel-syncs {self.service} 1",
                ]
                s.start()
            wait_until(
                self._sentinels_settled,
                timeout=timeout,
                what="the sentinels to settle",
                ignore=NOT_YET,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinels_settled(self) -> bool:
        """Every sentinel knows the master, its replica and the two other sentinels."""
        want = (HOST, self.master_address()[1])
        for s in self.sentinels:
            c = s.client()
            try:
                state = cast(dict[str, Any], c.sentinel_master(self.service))
                if (state["ip"], int(state["port"])) != want or not state["is_master"]:
                    return False
                if state["is_sdown"] or state["is_odown"]:
                    return False
                if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                    return False
                replicas = c.sentinel_slaves(self.service)
                if not any(
                    r["is_slave"] and not r["is_sdown"] and not r["is_disconnected"]
                    for r in replicas
                ):
                    return False
            finally:
                c.close()
        return True

    def master_address(self) -> tuple[str, int]:
        """The master's address as the first sentinel reports it."""
        c = self.sentinels[0].client()
        try:
            addr = cast("tuple[str, int] | None", c.sentinel_get_master_addr_by_name(self.service))
        finally:
            c.close()
        if addr is None:
            raise RuntimeError(f"the sentinels know no master for {self.service!r}")
        host, port = addr
        return str(host), int(port)

    def current_master(self) -> RedisServer:
        """The server the sentinels report as master."""
        port = self.master_address()[1]
        return next(s for s in self.servers if s.port == port)

    def current_replica(self) -> RedisServer:
        master = self.current_master()
        return next(s for s in self.servers if s is not master)

    @staticmethod
    def _wait_replica_linked(replica: RedisServer, master: RedisServer, *, timeout: float) -> None:
        def linked() -> bool:
            info = replica.info("replication")
            return bool(
                info.get("role") == "slave"
                and int(info.get("master_port", -1)) == master.port
                and info.get("master_link_status") == "up"
            )

        wait_until(
            linked, timeout=timeout, what=f"{replica!r} to replicate {master!r}", ignore=NOT_YET
        )

    def sync(self, *, timeout: float = 10.0) -> None:
        """Wait until the replica has acknowledged every write on the master."""
        c = self.current_master().client(timeout=timeout + 1)
        try:
            acked = c.wait(1, int(timeout * 1000))
        finally:
            c.close()
        if acked < 1:
            raise TimeoutError(f"the replica did not catch up within {timeout}s")

    def failover(self, *, timeout: float = 30.0, demote_old: bool = True) -> RedisServer:
        """Fail over to the replica with ``SENTINEL FAILOVER``, wait until it is complete,
        and return the new master.

        Writes are first synced to the replica, so the failover loses none.
        Complete means: every sentinel names the new master, which reports itself
        master, and the old master is its connected replica (until then the old
        master still accepts writes, which are lost when it is demoted). The
        sentinels demote the old master themselves only ~8 s after the switch
        (four hello periods); with ``demote_old`` this sends it the same
        ``REPLICAOF`` as soon as every sentinel names the new master.
        """
        old = self.current_master()
        new = self.current_replica()
        self.sync()
        c = self.sentinels[0].client()
        try:
            c.sentinel_failover(self.service)
        finally:
            c.close()

        def all_report_new() -> bool:
            for s in self.sentinels:
                sc = s.client()
                try:
                    addr = cast(
                        "tuple[str, int] | None", sc.sentinel_get_master_addr_by_name(self.service)
                    )
                finally:
                    sc.close()
                if addr is None or int(addr[1]) != new.port:
                    return False
            return bool(new.info("replication").get("role") == "master")

        wait_until(
            all_report_new,
            timeout=timeout,
            what="the sentinels to report the new master",
            ignore=NOT_YET,
        )
        if demote_old:
            oc = old.client()
            try:
                oc.replicaof(HOST, new.port)
            finally:
                oc.close()
        self._wait_replica_linked(old, new, timeout=timeout)
        wait_until(
            self._sentinels_settled, timeout=timeout, what="the sentinels to settle", ignore=NOT_YET
        )
        return new

    def flushall(self) -> None:
        """Delete all data on the master and wait until the replica has it too."""
        self.current_master().flushall()
        self.sync()

    def stop(self) -> None:
        for s in [*self.sentinels, self.replica, self.master]:
            s.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ClusterSetup:
    """A Redis Cluster of ``masters`` masters and no replicas, made with ``redis-cli --cluster``."""

    def __init__(self, directory: Path, *, masters: int = 3, durable: bool = False) -> None:
        self.nodes = []
        for i in range(masters):
            node = RedisServer(directory / f"n{i}", durable=durable)
            node.args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "3000",
                "--cluster-port",
                str(free_port()),
            ]
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def start(self, *, timeout: float = 30.0) -> Self:
        try:
            for node in self.nodes:
                node.start()
            create = subprocess.run(
                [
                    REDIS_CLI,
                    "--cluster",
                    "create",
                    *(f"{HOST}:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}")
            self.wait_ok(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, *, timeout: float = 30.0) -> None:
        """Wait until every node reports ``cluster_state:ok`` with all slots and all nodes."""

        def ok() -> bool:
            for node in self.nodes:
                c = node.client()
                try:
                    info = c.cluster("INFO")
                finally:
                    c.close()
                if (
                    info.get("cluster_state") != "ok"
                    or int(info.get("cluster_slots_ok", 0)) != 16384
                    or int(info.get("cluster_known_nodes", 0)) != len(self.nodes)
                ):
                    return False
            return True

        wait_until(ok, timeout=timeout, what="cluster_state:ok on every node", ignore=NOT_YET)

    def node_for(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot."""
        c = self.nodes[0].client()
        try:
            slot = int(c.cluster("KEYSLOT", key))
            slots = c.cluster("SLOTS")
        finally:
            c.close()
        for start, end, primary, *_ in slots:
            if start <= slot <= end:
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
