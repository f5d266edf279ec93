"""A usage store in Redis, shared by every governor instance: standalone, Sentinel or Cluster.

The keys and the Lua scripts that write them are :mod:`governor.store.redis_scripts`;
the URL forms are :mod:`governor.config.store_url`.

Invariants:

* A batch is applied at most once per tenant: the flush script sets the flush id
  key with ``SET NX`` and adds the deltas only if that set succeeded, all in one
  script (atomic on the node), to the totals and to the history bucket of the
  batch's ``at`` alike. A flush that timed out after landing and is retried with
  the same id adds nothing.
* Every write (flush, grant, reset, mark) is one script, atomic on the node, that
  also sets the TTL of what it wrote and records the period in the index. Each is
  safe to resend (the client retries once on a connection error or timeout): a
  grant carries a token applied once like a flush id, a mark stores its caller's
  token so a resent first mark still answers True, and a reset only sets.
* One round trip per :meth:`~RedisStore.flush`: a non-transactional pipeline with
  one script call per tenant with deltas and one ``MGET`` per tenant only read.
  Scripts are sent by SHA (``EVALSHA``); on ``NOSCRIPT`` (a fresh, restarted or
  newly promoted node) they are loaded with ``SCRIPT LOAD`` (on every primary in a
  Cluster) and the pipeline is sent once more, which the flush ids make safe.
* Usage, grant, bucket and mark keys expire by themselves ``history_days + 2``
  days after their last write, so periods need no reset and no cron;
  :meth:`~RedisStore.prune` deletes old periods early and trims the index of
  periods, which expires like the keys it lists.
* Every Redis error, timeout or connection failure becomes a
  :class:`~governor.errors.StoreError` naming the store (never its password), in
  one place (:meth:`RedisStore._call`), and no operation outlasts ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from governor.config.store_url import SCHEMES, RedisTarget, mask_password, parse_redis_url
from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store.base import FLUSH_ID_TTL, bucket_of
from governor.store.redis_scripts import (
    FLUSH,
    GRANT,
    MARK,
    PRUNE,
    RESET,
    SCRIPTS,
    Command,
    Script,
    grant_key,
    tenant_prefix,
    usage_key,
)

__all__ = [
    "SCHEMES",
    "RedisStore",
    "RedisTarget",
    "grant_key",
    "mask_password",
    "parse_redis_url",
    "usage_key",
]

T = TypeVar("T")

log = logging.getLogger("governor.store")

DAY = 86400


# -------------------------------------------------------------------------- store

_Client = Redis | RedisCluster


class RedisStore:
    """The usage store in the Redis at ``url`` (see :func:`parse_redis_url` for the forms).

    ``timeout`` bounds every round trip and every operation (seconds).
    ``history_days`` sets how long usage keys live: ``history_days + 2`` days after
    their last write. ``clock`` dates applied flush ids for :meth:`prune`.
    """

    persistent: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.5,
        history_days: int = 35,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not timeout > 0:
            raise StoreError(f"store {mask_password(url)!r}: the timeout must be positive")
        if history_days < 0:
            raise StoreError(f"store {mask_password(url)!r}: history_days must be >= 0")
        self.target = parse_redis_url(url)
        self.timeout = timeout
        self.usage_ttl = (history_days + 2) * DAY
        self._clock = clock
        self._client: _Client | None = None
        self._sentinel: Sentinel | None = None
        # Clients replaced by retune(); operations that began on them finish there.
        self._retired: list[tuple[_Client, Sentinel | None]] = []
        self._tenants: set[str] = set()  # tenants seen, for prune

    def __repr__(self) -> str:
        return f"RedisStore({self.target.display!r})"

    async def open(self) -> None:
        """Create the client. Connects lazily: a Redis that is down fails the first call."""
        if self._client is not None:
            raise StoreError(f"{self._name}: already open")
        try:
            self._client, self._sentinel = self._connect()
        except (RedisError, RedisClusterException, ValueError) as exc:
            raise StoreError(self._message(exc)) from exc

    def retune(self, *, timeout: float, history_days: int) -> None:
        """Take a reloaded ``store_timeout`` and ``history_days``.

        Keys written from now on live ``history_days + 2`` days. A new timeout bounds
        every later operation; as a client's socket timeouts are fixed when it is made,
        a new client (connecting lazily) takes over, and the old one is closed with the
        store (operations already running on it finish there).
        """
        if not timeout > 0 or history_days < 0:
            raise StoreError(f"{self._name}: the timeout must be positive, history_days >= 0")
        self.usage_ttl = (history_days + 2) * DAY
        if timeout == self.timeout:
            return
        self.timeout = timeout
        if self._client is None:
            return  # open() makes the client with it
        try:
            fresh = self._connect()
        except (RedisError, RedisClusterException, ValueError) as exc:
            # It made a client with the same URL before, so this is not expected; the
            # old client stays, and _call() still bounds every operation by the new timeout.
            log.error("%s", self._message(exc))
            return
        self._retired.append((self._client, self._sentinel))
        self._client, self._sentinel = fresh

    async def close(self) -> None:
        """Close the client and its connections. Closing twice is harmless."""
        clients = [*self._retired, (self._client, self._sentinel)]
        self._client, self._sentinel, self._retired = None, None, []
        failure: BaseException | None = None
        for client, sentinel in clients:
            try:
                try:
                    if client is not None:
                        await client.aclose()
                finally:
                    if sentinel is not None:
                        await sentinel.aclose()
            except (RedisError, RedisClusterException, OSError) as exc:
                failure = failure or exc
        if failure is not None:
            raise StoreError(self._message(failure)) from failure

    async def ping(self) -> None:
        """``PING`` (in a Cluster, to a node of the client's choosing), within ``timeout``."""
        client = self._require_open()
        await self._call(lambda: self._pipeline(client, [(None, ("PING",))]))

    async def flush(self, batch: Batch | None, read: Iterable[Key]) -> dict[Key, int]:
        """Apply ``batch`` at most once and return the totals of its keys and ``read``."""
        client = self._require_open()
        adds: dict[str, dict[str, int]] = {}  # tenant -> period -> delta
        reads: dict[str, dict[str, None]] = {}  # tenant -> periods only read
        order: dict[Key, None] = {}
        if batch is not None:
            for (tenant, period), n in batch.deltas.items():
                adds.setdefault(tenant, {})[period] = n
                order[(tenant, period)] = None
        for key in read:
            if key not in order:
                order[key] = None
                reads.setdefault(key[0], {})[key[1]] = None
        if not order:
            return {}
        self._tenants.update(adds, reads)
        now = self._clock()
        commands: list[Command] = []
        layout: list[tuple[str, list[str]]] = []  # per command: tenant, periods of its reply
        for tenant in dict.fromkeys([*adds, *reads]):
            prefix = tenant_prefix(tenant)
            added = adds.get(tenant, {})
            only_read = list(reads.get(tenant, {}))
            if added:
                assert batch is not None
                periods = [*added, *only_read]
                keys = [prefix + "flush:" + batch.flush_id, prefix + "periods", prefix + "flushes"]
                keys += [prefix + p for p in periods]
                args = [len(added), self.usage_ttl, int(FLUSH_ID_TTL), repr(now), batch.flush_id]
                args += [*added.values(), *added]
                args.append(bucket_of(batch.at) if batch.at is not None else "")
                commands.append((FLUSH, (len(keys), *keys, *args)))
            else:
                periods = only_read
                commands.append((None, ("MGET", *(prefix + p for p in periods))))
            layout.append((tenant, periods))
        replies = await self._call(lambda: self._pipeline(client, commands))
        totals: dict[Key, int] = {}
        for (tenant, periods), reply in zip(layout, replies, strict=True):
            for period, value in zip(periods, reply, strict=True):
                totals[(tenant, period)] = int(value) if value is not None else 0
        return {key: totals[key] for key in order}

    async def totals(self, keys: Iterable[Key]) -> dict[Key, int]:
        """The total of every key in ``keys`` (0 for an unknown key)."""
        return await self.flush(None, keys)

    async def grants(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Extra allowance granted for each key's period (0 when none)."""
        client = self._require_open()
        by_tenant: dict[str, dict[str, None]] = {}
        order = dict.fromkeys(keys)
        for tenant, period in order:
            by_tenant.setdefault(tenant, {})[period] = None
        if not by_tenant:
            return {}
        self._tenants.update(by_tenant)
        # One MGET per tenant: a Cluster serves a multi-key command only within one slot.
        commands: list[Command] = [
            (None, ("MGET", *(grant_key((tenant, p)) for p in periods)))
            for tenant, periods in by_tenant.items()
        ]
        replies = await self._call(lambda: self._pipeline(client, commands))
        grants: dict[Key, int] = {}
        for (tenant, periods), reply in zip(by_tenant.items(), replies, strict=True):
            for period, value in zip(periods, reply, strict=True):
                grants[(tenant, period)] = int(value) if value is not None else 0
        return {key: grants[key] for key in order}

    async def grant(self, key: Key, nbytes: int) -> int:
        """Add ``nbytes`` of extra allowance to ``key``'s period; returns the new grant total."""
        tenant, period = key
        prefix = tenant_prefix(tenant)
        keys = (grant_key(key), prefix + "periods", prefix + "granted:" + uuid.uuid4().hex)
        args = (nbytes, self.usage_ttl, period, int(FLUSH_ID_TTL))
        return int(await self._script(tenant, GRANT, keys, *args))

    async def reset(self, key: Key) -> None:
        """Set ``key``'s total back to zero."""
        tenant, period = key
        keys = (usage_key(key), tenant_prefix(tenant) + "periods")
        await self._script(tenant, RESET, keys, self.usage_ttl, period)

    async def buckets(self, tenant: str, period: str) -> dict[int, int]:
        """Bytes per history bucket (bucket start, Unix time) of one tenant's period."""
        client = self._require_open()
        self._tenants.add(tenant)
        command: Command = (None, ("HGETALL", usage_key((tenant, period)) + ":buckets"))
        (reply,) = await self._call(lambda: self._pipeline(client, [command]))
        pairs = reply.items() if isinstance(reply, dict) else zip(*[iter(reply)] * 2, strict=True)
        return dict(sorted((int(start), int(n)) for start, n in pairs))

    async def mark_once(self, key: Key, event: str) -> bool:
        """True for the first caller (of any instance) to mark ``event`` for ``key``'s period."""
        tenant, period = key
        mark = usage_key(key)
        keys = (f"{mark}:mark:{event}", mark + ":marks", tenant_prefix(tenant) + "periods")
        args = (self.usage_ttl, event, period, uuid.uuid4().hex)
        return bool(await self._script(tenant, MARK, keys, *args))

    async def prune(self, before_period: str) -> int:
        """Delete periods ``< before_period`` (usage, grants, buckets, marks) and flush ids
        older than a day, for seen tenants.

        Returns the number of usage keys deleted. Tenants this store has not seen
        (since it was created) are left to their keys' expiry.
        """
        client = self._require_open()
        cutoff = self._clock() - FLUSH_ID_TTL
        commands: list[Command] = []
        for tenant in sorted(self._tenants):
            prefix = tenant_prefix(tenant)
            keys = (prefix + "periods", prefix + "flushes")
            commands.append((PRUNE, (len(keys), *keys, before_period, repr(cutoff), prefix)))
        if not commands:
            return 0
        replies = await self._call(lambda: self._pipeline(client, commands))
        return sum(int(n) for n in replies)

    async def _script(self, tenant: str, script: Script, keys: Sequence[str], *args: object) -> Any:
        """Run one script on ``tenant``'s keys in one round trip; its reply."""
        client = self._require_open()
        self._tenants.add(tenant)
        command: Command = (script, (len(keys), *keys, *args))
        (reply,) = await self._call(lambda: self._pipeline(client, [command]))
        return reply

    # -- connecting, and the one place that bounds time and translates errors --

    @property
    def _name(self) -> str:
        return f"redis store {self.target.display}"

    def _message(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        if self.target.password:
            text = text.replace(self.target.password, "***")
        return f"{self._name}: {text}"

    def _require_open(self) -> _Client:
        if self._client is None:
            raise StoreError(f"{self._name}: not open")
        return self._client

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op`` within ``timeout``; any Redis or network failure becomes StoreError."""
        try:
            async with asyncio.timeout(self.timeout):
                return await op()
        except TimeoutError as exc:
            raise StoreError(f"{self._name}: no answer within {self.timeout}s") from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(self._message(exc)) from exc

    @staticmethod
    async def _pipeline(client: _Client, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one pipeline; load the scripts and resend once on NOSCRIPT.

        Resending is safe: the flush and grant scripts apply each id once, a mark
        recognises its own token, and the other commands only read, set or delete.
        """
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for script, args in commands:
                if script is None:
                    pipe.execute_command(*args)
                else:
                    pipe.execute_command("EVALSHA", script.sha, *args)
            try:
                replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:
                if attempt:
                    raise
            # SCRIPT LOAD goes to every primary of a Cluster, to the master otherwise.
            for script in SCRIPTS:
                await client.script_load(script.text)
        raise AssertionError("unreachable")

    def _connect(self) -> tuple[_Client, Sentinel | None]:
        t = self.target
        # One immediate retry on a connection error (a pooled connection the
        # server closed); the flush ids make resending a flush safe.
        common: dict[str, Any] = {
            "username": t.username,
            "password": t.password,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 1),
        }
        if t.kind == "standalone":
            host, port = t.hosts[0]
            return Redis(host=host, port=port, db=t.db, ssl=t.tls, **common), None
        if t.kind == "unix":
            return Redis(unix_socket_path=t.path, db=t.db, **common), None
        if t.kind == "sentinel":
            assert t.service is not None
            sentinel = Sentinel(  # type: ignore[no-untyped-call]  # untyped in redis-py
                list(t.hosts),
                sentinel_kwargs={
                    "socket_timeout": self.timeout,
                    "socket_connect_timeout": self.timeout,
                    "retry": Retry(NoBackoff(), 0),
                },
            )
            return sentinel.master_for(t.service, db=t.db, **common), sentinel
        nodes = [ClusterNode(host, port) for host, port in t.hosts]
        return RedisCluster(startup_nodes=nodes, **common), None
