"""A usage store in Redis, shared by every governor instance: standalone, Sentinel or Cluster.

Key layout (``{t}`` is the tenant, a Cluster hash tag, so all of one tenant's keys
live in one slot and a tenant's whole update runs as one script on one node)::

    governor:{t}:<period>               usage in bytes, an integer string; TTL history_days + 2 days
    governor:{t}:<period>:grant         extra allowance in bytes, an integer string; same TTL
    governor:{t}:<period>:buckets       hash bucket start (Unix time) -> bytes; same TTL
    governor:{t}:<period>:mark:<event>  the marking call's token once ``event`` was marked; same TTL
    governor:{t}:<period>:marks         set of the period's marked events, for prune; same TTL
    governor:{t}:periods                sorted set of the tenant's periods with any of the above
                                        (all scores 0); same TTL
    governor:{t}:flush:<flush_id>       "1" once the batch was applied for t; TTL one day
    governor:{t}:flushes                sorted set flush_id -> applied-at (store clock), for prune
    governor:{t}:granted:<token>        "1" once that grant call was applied; TTL one day

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
  :meth:`~RedisStore.prune` deletes old periods early, and the index of periods
  heals itself when a period's keys expired.
* Every Redis error, timeout or connection failure becomes a
  :class:`~governor.errors.StoreError` naming the store (never its password), in
  one place (:meth:`RedisStore._call`), and no operation outlasts ``timeout``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qsl, unquote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from governor.core.ledger import Batch, Key
from governor.errors import StoreError
from governor.store.base import FLUSH_ID_TTL, bucket_of

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

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
"""URL schemes served by :class:`RedisStore`."""

PREFIX = "governor"
DAY = 86400

Kind = Literal["standalone", "unix", "sentinel", "cluster"]


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a Redis store lives, parsed from its URL by :func:`parse_redis_url`."""

    kind: Kind
    display: str
    """The URL with its password masked, for messages."""
    hosts: tuple[tuple[str, int], ...] = ()
    """The server (standalone), the sentinels (sentinel) or the startup nodes (cluster)."""
    db: int = 0
    path: str | None = None
    """The socket path (unix)."""
    service: str | None = None
    """The monitored master's name (sentinel)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def mask_password(url: str) -> str:
    """``url`` with the password of its user info (if any) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, after = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{after}"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a Redis store URL; raise :class:`StoreError` (password masked) if it is bad.

    Accepted forms (user info is optional everywhere, percent-encoded)::

        redis://[user:pass@]host[:port][/db]                  port 6379, db 0 by default
        rediss://[user:pass@]host[:port][/db]                 the same over TLS
        unix://[user:pass@]/path/redis.sock[?db=N]
        redis+sentinel://[user:pass@]host[:port],host[:port]/service[/db]   port 26379
        redis+cluster://[user:pass@]host[:port],host[:port][/0]

    The user and password of a sentinel URL authenticate to the master, not to
    the sentinels.
    """
    display = mask_password(url)

    def bad(problem: str) -> StoreError:
        return StoreError(f"store {display!r}: {problem}")

    raw_scheme, sep, rest = url.partition("://")
    scheme = raw_scheme.lower()
    if not sep or scheme not in SCHEMES:
        expected = ", ".join(f"{s}://" for s in SCHEMES)
        got = f"scheme {raw_scheme!r}" if sep else "no scheme"
        raise bad(f"not a Redis URL ({got}); expected {expected}")
    userinfo = ""
    if "@" in rest:  # the last "@": a password may hold "@", "/", "?" or "#" unencoded
        userinfo, _, rest = rest.rpartition("@")
    if "#" in rest:
        raise bad("a fragment (#...) is not allowed")
    rest, _, query_text = rest.partition("?")
    hostpart, slash, path = rest.partition("/")
    user, colon, pw = userinfo.partition(":")
    username = unquote(user) or None
    password = unquote(pw) if colon else None
    try:
        query = dict(parse_qsl(query_text, keep_blank_values=True, strict_parsing=bool(query_text)))
    except ValueError:
        raise bad(f"malformed query string {query_text!r}") from None

    def allow_query(*allowed: str) -> None:
        extra = sorted(set(query) - set(allowed))
        if extra:
            raise bad(f"unsupported query parameter(s): {', '.join(extra)}")

    def db_number(text: str) -> int:
        if not (text.isascii() and text.isdigit()):
            raise bad(f"the database must be a non-negative integer, not {text!r}")
        return int(text)

    def target(kind: Kind, **kw: Any) -> RedisTarget:
        return RedisTarget(kind, display, username=username, password=password, **kw)

    if scheme == "unix":
        if hostpart:
            raise bad("a unix socket URL has no host: unix:///path/redis.sock[?db=N]")
        sock = unquote(slash + path)
        if not sock.startswith("/") or sock.endswith("/"):
            raise bad("the socket path must be absolute: unix:///path/redis.sock[?db=N]")
        allow_query("db")
        return target("unix", path=sock, db=db_number(query.get("db", "0")))

    allow_query()
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    hosts = _parse_hosts(hostpart, default_port, bad)
    segments = [unquote(s) for s in path.split("/")] if slash else []
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash is harmless

    if scheme in ("redis", "rediss"):
        if len(hosts) != 1:
            raise bad(f"{scheme}:// takes one host; use redis+sentinel:// or redis+cluster://")
        if len(segments) > 1:
            raise bad(f"the path must be the database number only: {scheme}://host:port/db")
        db = db_number(segments[0]) if segments else 0
        return target("standalone", hosts=hosts, db=db, tls=scheme == "rediss")

    if scheme == "redis+sentinel":
        if not segments or not segments[0] or len(segments) > 2:
            raise bad("expected redis+sentinel://host:port,host:port/service_name[/db]")
        db = db_number(segments[1]) if len(segments) == 2 else 0
        return target("sentinel", hosts=hosts, service=segments[0], db=db)

    if len(segments) > 1 or (segments and segments[0] != "0"):
        raise bad("a Redis Cluster has only database 0: redis+cluster://host:port,host:port")
    return target("cluster", hosts=hosts)


def _parse_hosts(
    text: str, default_port: int, bad: Callable[[str], StoreError]
) -> tuple[tuple[str, int], ...]:
    """``host[:port],[ipv6]:port,...`` as (host, port) pairs."""
    if not text:
        raise bad("no host given")
    hosts: list[tuple[str, int]] = []
    for item in text.split(","):
        if item.startswith("["):  # [ipv6] or [ipv6]:port
            host, bracket, after = item[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                raise bad(f"malformed host {item!r}")
            has_port, port_text = bool(after), after[1:]
        elif item.count(":") > 1:
            raise bad(f"put an IPv6 address in brackets: [{item}]")
        else:
            host, colon, port_text = item.partition(":")
            has_port = bool(colon)
        if not host:
            raise bad(f"empty host in {text!r}")
        port = default_port
        if has_port:
            if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
                raise bad(f"the port must be an integer from 1 to 65535, not {port_text!r}")
            port = int(port_text)
        hosts.append((host, port))
    return tuple(hosts)


# ------------------------------------------------------------------------ scripts


@dataclass(frozen=True, slots=True)
class _Script:
    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


# KEYS[1] the flush id key, KEYS[2] the period index, KEYS[3] the applied ids,
# KEYS[4 .. 3+n] the usage keys to add to, KEYS[4+n ..] usage keys only read.
# ARGV[1] n, ARGV[2] usage TTL, ARGV[3] flush id TTL, ARGV[4] now, ARGV[5] flush id,
# ARGV[6 .. 5+n] the deltas, ARGV[6+n .. 5+2n] the periods of the added keys,
# ARGV[6+2n] the history bucket of the batch ('' for none): each delta is added to
# field bucket of <usage key>:buckets too (same hash tag, same slot).
# Returns the totals of KEYS[4 ..] as strings (GET, not the INCRBY reply: Lua
# numbers are doubles and would round totals above 2^53).
_FLUSH = _Script(
    """
local n = tonumber(ARGV[1])
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  local bucket = ARGV[6 + 2 * n]
  for i = 1, n do
    redis.call('INCRBY', KEYS[3 + i], ARGV[5 + i])
    redis.call('EXPIRE', KEYS[3 + i], ARGV[2])
    redis.call('ZADD', KEYS[2], 0, ARGV[5 + n + i])
    if bucket ~= '' then
      redis.call('HINCRBY', KEYS[3 + i] .. ':buckets', bucket, ARGV[5 + i])
      redis.call('EXPIRE', KEYS[3 + i] .. ':buckets', ARGV[2])
    end
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  local now = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - tonumber(ARGV[3])))
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
local totals = {}
for i = 4, #KEYS do
  totals[#totals + 1] = redis.call('GET', KEYS[i]) or '0'
end
return totals
"""
)

# KEYS[1] the period index; ARGV[1] the first period, ARGV[2] the tenant's key prefix.
# Returns period, total, period, total, ... in period order; drops periods none of
# whose keys is left (all expired) from the index. (Usage keys are derived from the
# prefix: same hash tag, same slot.)
_HISTORY = _Script(
    """
local out = {}
for _, p in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[1], '+')) do
  local k = ARGV[2] .. p
  local v = redis.call('GET', k)
  if v then
    out[#out + 1] = p
    out[#out + 1] = v
  elseif redis.call('EXISTS', k .. ':grant', k .. ':buckets', k .. ':marks') == 0 then
    redis.call('ZREM', KEYS[1], p)
  end
end
return out
"""
)

# KEYS[1] the grant key, KEYS[2] the period index, KEYS[3] this call's token key;
# ARGV[1] bytes to add, ARGV[2] the TTL, ARGV[3] the period, ARGV[4] the token TTL.
# Adds once per token. Returns the grant total as a string (GET: see _FLUSH).
_GRANT = _Script(
    """
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[4]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return redis.call('GET', KEYS[1]) or '0'
"""
)

# KEYS[1] the usage key, KEYS[2] the period index; ARGV[1] the TTL, ARGV[2] the period.
_RESET = _Script(
    """
redis.call('SET', KEYS[1], '0', 'EX', ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""
)

# KEYS[1] the mark key, KEYS[2] the period's set of marks, KEYS[3] the period index;
# ARGV[1] the TTL, ARGV[2] the event, ARGV[3] the period, ARGV[4] this call's token.
# Returns 1 if this call (or an earlier send of it) set the mark, 0 otherwise.
_MARK = _Script(
    """
if not redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[1]) then
  if redis.call('GET', KEYS[1]) == ARGV[4] then
    return 1
  end
  return 0
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 1
"""
)

# KEYS[1] the period index, KEYS[2] the applied ids; ARGV[1] the first period to
# keep, ARGV[2] the oldest applied-at to keep, ARGV[3] the tenant's key prefix.
# Deletes each old period's usage, grant, buckets and marks. Returns the number of
# usage keys deleted.
_PRUNE = _Script(
    """
local deleted = 0
local old = redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[1])
for _, p in ipairs(old) do
  local k = ARGV[3] .. p
  deleted = deleted + redis.call('DEL', k)
  redis.call('DEL', k .. ':grant', k .. ':buckets')
  for _, event in ipairs(redis.call('SMEMBERS', k .. ':marks')) do
    redis.call('DEL', k .. ':mark:' .. event)
  end
  redis.call('DEL', k .. ':marks')
end
if #old > 0 then
  redis.call('ZREMRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[1])
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])) do
  redis.call('DEL', ARGV[3] .. 'flush:' .. id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2])
return deleted
"""
)

_SCRIPTS = (_FLUSH, _HISTORY, _GRANT, _RESET, _MARK, _PRUNE)

_Command = tuple[_Script | None, tuple[Any, ...]]
"""A script and its EVALSHA arguments (numkeys, keys..., args...), or None and a command."""


def tenant_prefix(tenant: str) -> str:
    """``governor:{<tenant>}:``, the start of every key of ``tenant``.

    Braces and ``%`` in the name are percent-encoded, so the hash tag is always
    exactly the tenant and two tenants never share a key.
    """
    tag = tenant.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"{PREFIX}:{{{tag}}}:"


def usage_key(key: Key) -> str:
    """The Redis key holding the usage of ``(tenant, period)``."""
    tenant, period = key
    return tenant_prefix(tenant) + period


def grant_key(key: Key) -> str:
    """The Redis key holding the extra allowance granted to ``(tenant, period)``."""
    return usage_key(key) + ":grant"


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
        commands: list[_Command] = []
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
                commands.append((_FLUSH, (len(keys), *keys, *args)))
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

    async def history(self, tenant: str, since_period: str) -> dict[str, int]:
        """Bytes per period key for ``tenant``, for periods ``>= since_period``."""
        client = self._require_open()
        self._tenants.add(tenant)
        prefix = tenant_prefix(tenant)
        command: _Command = (_HISTORY, (1, prefix + "periods", since_period, prefix))
        (reply,) = await self._call(lambda: self._pipeline(client, [command]))
        pairs = iter(reply)
        return {period.decode(): int(value) for period, value in zip(pairs, pairs, strict=True)}

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
        commands: list[_Command] = [
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
        return int(await self._script(tenant, _GRANT, keys, *args))

    async def reset(self, key: Key) -> None:
        """Set ``key``'s total back to zero."""
        tenant, period = key
        keys = (usage_key(key), tenant_prefix(tenant) + "periods")
        await self._script(tenant, _RESET, keys, self.usage_ttl, period)

    async def buckets(self, tenant: str, period: str) -> dict[int, int]:
        """Bytes per history bucket (bucket start, Unix time) of one tenant's period."""
        client = self._require_open()
        self._tenants.add(tenant)
        command: _Command = (None, ("HGETALL", usage_key((tenant, period)) + ":buckets"))
        (reply,) = await self._call(lambda: self._pipeline(client, [command]))
        pairs = reply.items() if isinstance(reply, dict) else zip(*[iter(reply)] * 2, strict=True)
        return dict(sorted((int(start), int(n)) for start, n in pairs))

    async def mark_once(self, key: Key, event: str) -> bool:
        """True for the first caller (of any instance) to mark ``event`` for ``key``'s period."""
        tenant, period = key
        mark = usage_key(key)
        keys = (f"{mark}:mark:{event}", mark + ":marks", tenant_prefix(tenant) + "periods")
        args = (self.usage_ttl, event, period, uuid.uuid4().hex)
        return bool(await self._script(tenant, _MARK, keys, *args))

    async def prune(self, before_period: str) -> int:
        """Delete periods ``< before_period`` (usage, grants, buckets, marks) and flush ids
        older than a day, for seen tenants.

        Returns the number of usage keys deleted. Tenants this store has not seen
        (since it was created) are left to their keys' expiry.
        """
        client = self._require_open()
        cutoff = self._clock() - FLUSH_ID_TTL
        commands: list[_Command] = []
        for tenant in sorted(self._tenants):
            prefix = tenant_prefix(tenant)
            keys = (prefix + "periods", prefix + "flushes")
            commands.append((_PRUNE, (len(keys), *keys, before_period, repr(cutoff), prefix)))
        if not commands:
            return 0
        replies = await self._call(lambda: self._pipeline(client, commands))
        return sum(int(n) for n in replies)

    async def _script(
        self, tenant: str, script: _Script, keys: Sequence[str], *args: object
    ) -> Any:
        """Run one script on ``tenant``'s keys in one round trip; its reply."""
        client = self._require_open()
        self._tenants.add(tenant)
        command: _Command = (script, (len(keys), *keys, *args))
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
    async def _pipeline(client: _Client, commands: Sequence[_Command]) -> list[Any]:
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
            for script in _SCRIPTS:
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
