"""A usage store in Redis, shared by every governor instance: standalone, Sentinel or Cluster.

The keys and the Lua scripts that write them are :mod:`governor.store.redis_scripts`;
the URL forms are :mod:`governor.config.store_url`.

Invariants:

* A batch is applied at most once, slice by slice: it is cut into slices of at most
  ``SLICE_KEYS`` keys, the same slices on every send (its keys sorted; in a Cluster one
  slice per tenant, a script reaching one slot only), and each slice's script sets
  the slice's id key (flush id + slice) with ``SET NX`` and adds its deltas only if
  that set succeeded, atomically on the node, to the totals and to the history bucket
  of the batch's ``at`` alike. A flush that timed out after some slices landed and is
  retried with the same id adds only the others.
* Every write (flush, grant, reset, mark) is one script, atomic on the node, that
  also sets the TTL of what it wrote and records the period in the index. Each is
  safe to resend (the client retries once on a connection error or timeout): a
  grant carries a token applied once like a flush id, a mark stores its caller's
  token so a resent first mark still answers True, and a reset only sets.
* A bounded number of round trips per :meth:`~RedisStore.flush`, whatever the number
  of keys: the slices (and one ``MGET`` per slice of keys only read) go in
  non-transactional pipelines of at most ``window`` keys each, one pipeline when the
  flush is not huge. A round trip that does not finish within ``timeout`` halves the
  window for the next try (the flush fails, is retried with its id, and the slices
  that landed add nothing), so a flush too big for ``timeout`` is split instead of
  failing for ever; each flush that works lets the window grow back.
  Scripts are sent by SHA (``EVALSHA``); on ``NOSCRIPT`` (a fresh, restarted or
  newly promoted node) they are loaded with ``SCRIPT LOAD`` (on every primary in a
  Cluster) and the pipeline is sent once more, which the flush ids make safe.
* Usage, grant, bucket and mark keys expire by themselves ``history_days + 2``
  days after their last write, so periods need no reset and no cron;
  :meth:`~RedisStore.prune` deletes old periods early and trims the index of
  periods, which expires like the keys it lists.
* Every Redis error, timeout or connection failure becomes a
  :class:`~governor.errors.StoreError` naming the store (never its password), in
  one place (:meth:`RedisStore._call`), and no round trip outlasts ``timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, Final, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from governor.config.store_url import SCHEMES, RedisTarget, mask_password, parse_redis_url
from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store.base import FLUSH_ID_TTL, TOP_KEEP, TopEntry, TopRow, bucket_of
from governor.store.redis_scripts import (
    FLUSH,
    GRANT,
    MARK,
    PREFIX,
    PRUNE,
    RESET,
    SCRIPTS,
    SLICE_KEYS,
    TOP,
    Command,
    Script,
    flush_keys,
    grant_key,
    tenant_flush_keys,
    tenant_prefix,
    top_keys,
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

log: Final = logging.getLogger("governor.store")

DAY: Final = 86400
WINDOW_KEYS: Final = 8 * SLICE_KEYS  # the most keys a round trip carries (a timeout halves it)
PRUNE_WEIGHT: Final = 20  # a tenant's prune script, counted as this many keys of a window


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
        # Tenants this store wrote to (counts, grants, marks), for prune: what is only
        # read (every tenant's total after a start) costs the hourly prune nothing.
        self._tenants: set[str] = set()
        self.window = WINDOW_KEYS  # keys per round trip: halved by a timeout, regrown by success

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
        added: dict[Key, int] = {}
        if batch is not None:
            added = {key: batch.deltas[key] for key in sorted(batch.deltas) if batch.deltas[key]}
        order = dict.fromkeys([*(batch.deltas if batch is not None else ()), *read])
        if not order:
            return {}
        only_read = [key for key in order if key not in added]
        self._tenants.update(key[0] for key in added)  # written: pruned later; read: not
        now = self._clock()
        commands: list[Command] = []
        layout: list[list[Key]] = []  # per command: the keys of its reply, in order
        if added:
            assert batch is not None
            bucket = bucket_of(batch.at) if batch.at is not None else ""
            for piece, keys in enumerate(self._slices(list(added))):
                if self._cluster:
                    id_key, ids, member = tenant_flush_keys(keys[0][0], batch.flush_id)
                else:
                    id_key, ids, member = flush_keys(batch.flush_id, piece)
                script_keys = [id_key, ids]
                for tenant, period in keys:
                    script_keys += [usage_key((tenant, period)), tenant_prefix(tenant) + "periods"]
                args: list[object] = [len(keys), self.usage_ttl, int(FLUSH_ID_TTL), repr(now)]
                args += [member, bucket, *(added[k] for k in keys), *(p for _, p in keys)]
                commands.append((FLUSH, (len(script_keys), *script_keys, *args)))
                layout.append(keys)
        for keys in self._slices(only_read):
            commands.append((None, ("MGET", *(usage_key(k) for k in keys))))
            layout.append(keys)
        replies = await self._send(client, commands, [len(keys) for keys in layout])
        totals: dict[Key, int] = {}
        for keys, reply in zip(layout, replies, strict=True):
            for key, value in zip(keys, reply, strict=True):
                totals[key] = int(value) if value is not None else 0
        return {key: totals[key] for key in order}

    async def totals(self, keys: Iterable[Key]) -> dict[Key, int]:
        """The total of every key in ``keys`` (0 for an unknown key)."""
        return await self.flush(None, keys)

    async def grants(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Extra allowance granted for each key's period (0 when none)."""
        client = self._require_open()
        order = list(dict.fromkeys(keys))
        if not order:
            return {}
        layout = self._slices(order)
        commands: list[Command] = [
            (None, ("MGET", *(grant_key(key) for key in slice_))) for slice_ in layout
        ]
        replies = await self._send(client, commands, [len(keys) for keys in layout])
        grants: dict[Key, int] = {}
        for slice_, reply in zip(layout, replies, strict=True):
            for key, value in zip(slice_, reply, strict=True):
                grants[key] = int(value) if value is not None else 0
        return {key: grants[key] for key in order}

    def _slices(self, keys: list[Key]) -> list[list[Key]]:
        """``keys`` cut into slices of at most SLICE_KEYS, in order; one tenant's in a Cluster.

        A multi-key command or script reaches one slot only in a Cluster, and all of a
        tenant's keys share its hash tag.
        """
        if self._cluster:
            by_tenant: dict[str, list[Key]] = {}
            for key in keys:
                by_tenant.setdefault(key[0], []).append(key)
            return [
                ks[i : i + SLICE_KEYS]
                for ks in by_tenant.values()
                for i in range(0, len(ks), SLICE_KEYS)
            ]
        return [keys[i : i + SLICE_KEYS] for i in range(0, len(keys), SLICE_KEYS)]

    @property
    def _cluster(self) -> bool:
        return self.target.kind == "cluster"

    async def _send(
        self, client: _Client, commands: Sequence[Command], weights: Sequence[int]
    ) -> list[Any]:
        """Send ``commands`` in pipelines of at most ``window`` keys (``weights``), in order.

        Each pipeline is one round trip within ``timeout``; a timeout halves the window
        for the next call and fails this one, whose commands are all safe to resend.
        """
        replies: list[Any] = []
        window = self.window
        slowest = 0.0
        start = 0
        while start < len(commands):
            end, load = start, 0
            while end < len(commands) and (end == start or load + weights[end] <= window):
                load += weights[end]
                end += 1
            part = commands[start:end]
            began = time.monotonic()
            try:
                replies += await self._call(functools.partial(self._pipeline, client, part))
            except StoreError as exc:
                if isinstance(exc.__cause__, TimeoutError) and load > 1:
                    self.window = max(load // 2, 1)
                    log.warning(
                        "%s: %d keys took over %ss: at most %d keys a round trip from now on",
                        self._name,
                        load,
                        self.timeout,
                        self.window,
                    )
                raise
            slowest = max(slowest, time.monotonic() - began)
            start = end
        if slowest < self.timeout / 4:  # well within: grow back, without swinging to a timeout
            self.window = min(self.window * 2, WINDOW_KEYS)
        return replies

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

    async def add_top(self, entries: Sequence[TopEntry]) -> None:
        """Add to top lists (a script per list); each keeps its TOP_KEEP heaviest items."""
        client = self._require_open()
        lists: dict[tuple[str, str, str], list[object]] = {}
        for tenant, period, dimension, item, nbytes, requests in entries:
            lists.setdefault((tenant, period, dimension), []).extend((item, nbytes, requests))
        commands: list[Command] = [
            (TOP, (2, *top_keys(*key), TOP_KEEP, self.usage_ttl, *args))
            for key, args in lists.items()
        ]
        if commands:
            await self._call(lambda: self._pipeline(client, commands))

    async def top(self, tenant: str, period: str, dimension: str, n: int) -> list[TopRow]:
        """The ``n`` heaviest items of a top list (two commands, one round trip)."""
        client = self._require_open()
        by_bytes, by_requests = top_keys(tenant, period, dimension)
        command: Command = (None, ("ZREVRANGE", by_bytes, 0, n - 1, "WITHSCORES"))
        (ranked,) = await self._call(lambda: self._pipeline(client, [command]))
        if ranked and not isinstance(ranked[0], list | tuple):  # flat, not parsed into pairs
            ranked = list(zip(ranked[0::2], ranked[1::2], strict=True))
        items = [_text(item) for item, _ in ranked]
        if not items:
            return []
        counts: Command = (None, ("HMGET", by_requests, *items))
        (requests,) = await self._call(lambda: self._pipeline(client, [counts]))
        return [
            (item, int(float(score)), int(r or 0))
            for item, (_, score), r in zip(items, ranked, requests, strict=True)
        ]

    async def prune(self, before_period: str) -> int:
        """Delete periods ``< before_period`` (usage, grants, buckets, marks) and flush ids
        older than a day, for the tenants this store wrote to.

        Returns the number of usage keys deleted. Tenants this store has not written to
        (since it was created) are left to their keys' expiry, or to the instance that
        wrote them: an hourly prune costs the traffic, not the config. Sent in windows of
        tenants, one round trip each, as a flush is.
        """
        client = self._require_open()
        cutoff = repr(self._clock() - FLUSH_ID_TTL)
        # The slices' ids (outside a Cluster): an index of no periods, the applied ids.
        root = PREFIX + ":"
        commands: list[Command] = []
        if not self._cluster:
            keys = (root + "periods", root + "flushes")
            commands.append((PRUNE, (len(keys), *keys, before_period, cutoff, root)))
        for tenant in sorted(self._tenants):
            prefix = tenant_prefix(tenant)
            keys = (prefix + "periods", prefix + "flushes")
            commands.append((PRUNE, (len(keys), *keys, before_period, cutoff, prefix)))
        if not commands:
            return 0
        replies = await self._send(client, commands, [PRUNE_WEIGHT] * len(commands))
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
            sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # redis-py < 8
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


def _text(value: object) -> str:
    """A reply's string (the client answers bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
