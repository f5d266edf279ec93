"""The Redis store's keys and Lua scripts: one module owns the layout every script relies on.

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
    governor:flush:<flush_id>:<slice>   "1" once that slice of a batch was applied (not in a
                                        Cluster); TTL one day
    governor:flushes                    sorted set <flush_id>:<slice> -> applied-at, for prune

A flush is sent in slices of at most :data:`SLICE_KEYS` keys, one :data:`FLUSH` call
each. In a Cluster a slice is one tenant's keys (a script may touch one slot only), its
id key ``governor:{t}:flush:<flush_id>``; elsewhere a slice holds many tenants' keys and
its id key is ``governor:flush:<flush_id>:<slice>``, so a flush writes one id key per
slice, not one per tenant.

Each script is atomic on its node and touches only one tenant's keys (one hash tag),
so it runs on one Cluster node; see :mod:`governor.store.redis` for the invariants.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from governor.core.ledger import Key

PREFIX: Final = "governor"


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA, sent by ``EVALSHA`` (loaded on ``NOSCRIPT``)."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


SLICE_KEYS: Final = 500
"""The most usage keys one :data:`FLUSH` call (one slice of a batch) adds to or reads."""

# One slice of a batch. KEYS[1] the slice's id key, KEYS[2] the applied ids (sorted
# set), then per added key i = 1 .. n: KEYS[1 + 2i] its usage key, KEYS[2 + 2i] its
# tenant's period index. ARGV[1] n, ARGV[2] usage TTL, ARGV[3] id TTL, ARGV[4] now,
# ARGV[5] the id's member in KEYS[2], ARGV[6] the history bucket of the batch ('' for
# none): each delta is added to field bucket of <usage key>:buckets too (same hash
# tag, same slot), ARGV[6 + i] the deltas, ARGV[6 + n + i] the periods of the keys.
# Adds only if the id key was not set yet. Returns the n totals as strings (GET, not
# the INCRBY reply: Lua numbers are doubles and would round totals above 2^53).
FLUSH: Final = Script(
    """
local n = tonumber(ARGV[1])
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  local bucket = ARGV[6]
  for i = 1, n do
    local k = KEYS[1 + 2 * i]
    redis.call('INCRBY', k, ARGV[6 + i])
    redis.call('EXPIRE', k, ARGV[2])
    redis.call('ZADD', KEYS[2 + 2 * i], 0, ARGV[6 + n + i])
    redis.call('EXPIRE', KEYS[2 + 2 * i], ARGV[2])
    if bucket ~= '' then
      redis.call('HINCRBY', k .. ':buckets', bucket, ARGV[6 + i])
      redis.call('EXPIRE', k .. ':buckets', ARGV[2])
    end
  end
  local now = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[3])))
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local totals = {}
for i = 1, n do
  totals[i] = redis.call('GET', KEYS[1 + 2 * i]) or '0'
end
return totals
"""
)

# KEYS[1] the grant key, KEYS[2] the period index, KEYS[3] this call's token key;
# ARGV[1] bytes to add, ARGV[2] the TTL, ARGV[3] the period, ARGV[4] the token TTL.
# Adds once per token. Returns the grant total as a string (GET: see FLUSH).
GRANT: Final = Script(
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
RESET: Final = Script(
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
MARK: Final = Script(
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
PRUNE: Final = Script(
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
  for _, d in ipairs({'client', 'path', 'agent', 'referrer'}) do
    redis.call('DEL', k .. ':top:' .. d, k .. ':top:' .. d .. ':requests')
  end
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

# One top list (a tenant's period and dimension): add to items, keep the heaviest ARGV[1].
# KEYS: the list's sorted set (bytes) and hash (requests); ARGV: keep, ttl, then
# (item, bytes, requests) triples.
TOP: Final = Script(
    """
for i = 3, #ARGV, 3 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 2])
end
local keep = tonumber(ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n > keep then
  local gone = redis.call('ZRANGE', KEYS[1], 0, n - keep - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return n
"""
)

SCRIPTS: Final = (FLUSH, GRANT, RESET, MARK, PRUNE, TOP)

Command = tuple[Script | None, tuple[Any, ...]]
"""A script and its EVALSHA arguments (numkeys, keys..., args...), or None and a command."""


def flush_keys(flush_id: str, piece: int) -> tuple[str, str, str]:
    """The id key, the applied-ids key and the member of slice ``piece`` of a batch."""
    member = f"{flush_id}:{piece}"
    return f"{PREFIX}:flush:{member}", f"{PREFIX}:flushes", member


def tenant_flush_keys(tenant: str, flush_id: str) -> tuple[str, str, str]:
    """The id key, applied-ids key and member of one tenant's slice of a batch (a Cluster)."""
    prefix = tenant_prefix(tenant)
    return prefix + "flush:" + flush_id, prefix + "flushes", flush_id


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


def top_keys(tenant: str, period: str, dimension: str) -> tuple[str, str]:
    """The sorted set (bytes) and hash (requests) of one top list."""
    base = usage_key((tenant, period)) + ":top:" + dimension
    return base, base + ":requests"


def grant_key(key: Key) -> str:
    """The Redis key holding the extra allowance granted to ``(tenant, period)``."""
    return usage_key(key) + ":grant"
