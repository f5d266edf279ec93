"""What a store URL may say: the SQLite form and the Redis forms (standalone, unix, Sentinel,
Cluster), parsed once.

The config loader refuses exactly what :func:`governor.store.open_store` would (it asks
:func:`store_url_problem`), and the Redis store reads its target from
:func:`parse_redis_url`. Every problem with a URL is a :class:`~governor.errors.StoreError`
naming the URL with its password masked; nothing here connects or imports a client library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote

from governor.errors import StoreError

SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
"""URL schemes served by :class:`~governor.store.redis.RedisStore`."""

SQLITE: Final = "sqlite:///"
"""The prefix of a SQLite store's URL; four slashes make an absolute path."""

Kind = Literal["standalone", "unix", "sentinel", "cluster"]


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


def sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite:////abs/path.db`` URL; StoreError when it is not one."""
    path = Path(url[len(SQLITE) :])
    if not url.startswith(SQLITE) or not path.is_absolute() or path == Path("/"):
        raise StoreError(f"store {url!r}: the sqlite path must be absolute (sqlite:////...)")
    return path


def store_kind(url: str) -> Literal["sqlite", "redis"]:
    """Which backend serves ``url``, its form checked; StoreError naming what is wrong."""
    if url.startswith(SQLITE):
        sqlite_path(url)
        return "sqlite"
    scheme = url.partition(":")[0]
    if scheme.lower() in SCHEMES:
        parse_redis_url(url)
        return "redis"
    raise StoreError(f"store {mask_password(url)!r}: the {scheme!r} store is not implemented yet")


def store_url_problem(url: str) -> str | None:
    """What :func:`governor.store.open_store` would refuse in ``url``, or None; opens nothing.

    So the config loader refuses exactly the URLs that ``serve`` would (password masked).
    """
    try:
        store_kind(url)
    except StoreError as exc:
        return str(exc).removeprefix("store ")
    return None
