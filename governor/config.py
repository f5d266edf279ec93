"""The one typed configuration object, and the loader that validates a YAML file into it.

Invariant: a :class:`Config` that exists is valid. Every check happens in
:func:`load_config`, which collects every problem (file, line, key path, what is
wrong) and raises one :class:`~governor.errors.ConfigError`; nothing downstream
re-validates.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from governor.errors import ConfigError, Problem
from governor.notice import PLACEHOLDERS, validate_template
from governor.sizes import parse_duration, parse_size

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CountMode = Literal["egress", "ingress", "both"]
AtCap = Literal["finish", "cut"]
OnStoreFailure = Literal["open", "closed"]
LogFormat = Literal["plain", "json"]

NOTICE_STATUSES = (503, 509, 429, 402)


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeConfig:
    """How the blocked notice is served."""

    status: int = 503
    template_path: Path | None = None  # absolute; None means the built-in template
    template: str | None = None  # the template's text, read at load time


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamURL:
    """A parsed ``http://host:port[/base]`` upstream."""

    url: str  # as written, normalised without a trailing slash
    scheme: Literal["http", "https"]
    host: str
    port: int
    base_path: str  # "" or "/prefix" without trailing slash


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantConfig:
    """One tenant (site): which hosts it answers, where it forwards, and its daily cap."""

    name: str
    hosts: tuple[str, ...]  # lower-case; exact names or "*.suffix" wildcards
    upstream: UpstreamURL
    daily_cap: int  # bytes
    timezone: ZoneInfo
    reset_at: dt.time
    count: CountMode = "egress"
    at_cap: AtCap = "finish"
    notice: NoticeConfig = field(default_factory=NoticeConfig)
    exempt_paths: tuple[str, ...] = ()  # path prefixes
    exempt_clients: tuple[Network, ...] = ()
    on_store_failure: OnStoreFailure = "open"  # closed: the notice while the store is down
    warn_at: tuple[float, ...] = ()  # shares of the cap (0 < x < 1) that raise a warning, ascending


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Deadlines, in seconds (and the one minimum rate that works as a deadline).

    ``body_min_rate`` is in bytes per second, 0 for none. It works like Apache's
    ``mod_reqtimeout`` MinRate: a request body must have delivered at least
    ``(t - request_header) * body_min_rate`` bytes ``t`` seconds after its head
    arrived. So a body gets ``request_header`` seconds of grace, then one more
    second for every ``body_min_rate`` bytes it delivers; a body behind that is
    refused (408 when no response has started) and its connection closed.
    """

    upstream_connect: float = 5.0
    upstream_response: float = 60.0  # until the upstream's response headers
    keepalive: float = 75.0  # idle client keep-alive connections
    shutdown: float = 30.0  # graceful drain on SIGTERM
    request_header: float = 60.0  # from a head's first byte to its end: else 408
    body_min_rate: int = 1024  # bytes/s a request body must keep up (see above); 0: none
    websocket_idle: float = 600.0  # a tunnel with no byte either way this long is closed


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """How much a client may send and hold; beyond each, it is refused.

    Sizes are in bytes; a count or size of 0 where noted means no limit.
    (Named to stay apart from :class:`governor.http1.Limits`, the parser's own.)
    """

    request_line: int = 8192  # the request line: 414 beyond it
    header_field: int = 8192  # one header line: 431
    header_total: int = 65536  # the whole head, request line included: 431
    header_count: int = 100  # header lines: 431
    body_max: int = 2**30  # one request body, checked as it streams: 413; 0: none
    connections: int = 10_000  # open client connections; new ones beyond are refused
    connections_per_client: int = 256  # open connections from one client address; 0: none


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole, validated configuration."""

    path: Path  # the file it was loaded from (absolute)
    listen_host: str
    listen_port: int
    store: str  # e.g. "sqlite:////abs/path/usage.db"; relative paths already resolved
    store_timeout: float = 0.5  # one store round trip; beyond it the flush fails and is retried
    spool: Path | None = None  # absolute; counts the store could not take at shutdown
    workers: int = 1  # processes accepting on the same port
    admin_listen: tuple[str, int] | None = None  # the admin listener (metrics, API, status)
    admin_token: str | None = None  # read from admin_token_file; /api/ needs it when set
    webhook_url: str | None = None  # where warning events are POSTed
    log_format: LogFormat = "plain"
    access_log: str = "off"  # off | stderr | stdout | an absolute file path
    flush_interval: float = 1.0
    history_days: int = 35  # how many past periods the store keeps
    trusted_proxies: tuple[Network, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tenants: tuple[TenantConfig, ...] = ()

    def tenant(self, name: str) -> TenantConfig | None:
        """The tenant called ``name``, or None."""
        for t in self.tenants:
            if t.name == name:
                return t
        return None


# ---------------------------------------------------------------------------
# The loader: YAML node tree -> Config, collecting every problem with its line.
# ---------------------------------------------------------------------------

DEFAULT_STORE = "sqlite:///state/usage.db"

_ROOT_KEYS = (
    "listen",
    "store",
    "store_timeout",
    "spool",
    "workers",
    "admin_listen",
    "admin_token_file",
    "webhook_url",
    "log_format",
    "access_log",
    "flush_interval",
    "history_days",
    "trusted_proxies",
    "timeouts",
    "limits",
    "defaults",
    "tenants",
)
DURATION_KEYS = (
    "upstream_connect",
    "upstream_response",
    "keepalive",
    "shutdown",
    "request_header",
    "websocket_idle",
)
_TIMEOUT_KEYS = (*DURATION_KEYS, "body_min_rate")
HEAD_SIZE_KEYS = ("request_line", "header_field", "header_total")
_LIMIT_KEYS = (
    *HEAD_SIZE_KEYS,
    "header_count",
    "body_max",
    "connections",
    "connections_per_client",
)
HEAD_SIZE_MAX = 2**20  # a request head larger than 1 MiB is no sane limit
COUNT_MAX = 10_000_000
SHARED_KEYS = (
    "daily_cap",
    "timezone",
    "reset_at",
    "count",
    "at_cap",
    "notice",
    "exempt_paths",
    "exempt_clients",
    "on_store_failure",
    "warn_at",
)
_TENANT_KEYS = ("hosts", "upstream", *SHARED_KEYS)
_NOTICE_KEYS = ("status", "template")
_COUNT_MODES: dict[str, CountMode] = {"egress": "egress", "ingress": "ingress", "both": "both"}
_AT_CAP_MODES: dict[str, AtCap] = {"finish": "finish", "cut": "cut"}
_STORE_FAILURE_MODES: dict[str, OnStoreFailure] = {"open": "open", "closed": "closed"}
DEFAULT_SPOOL = "state/spool.json"
_SCHEMES: dict[str, Literal["http", "https"]] = {"http": "http", "https": "https"}
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")

TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_WHOLE = re.compile(r"\+?[0-9]{1,18}", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_RESET_AT = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?", re.ASCII)
_NULL_TAG = "tag:yaml.org,2002:null"

T = TypeVar("T")
Fields = dict[str, tuple[ScalarNode, Node]]  # key -> (key node, value node)
Hosts = list[tuple[Node, str, str]]  # (node, key path, normalised host)
Parser = Callable[[Node, str, "Ctx"], "T | None"]


@dataclass(slots=True)
class Ctx:
    """What every check needs: where the file is, and the problems found so far."""

    file: str
    base: Path  # the config file's folder, absolute
    problems: list[Problem] = field(default_factory=list)

    def error(self, at: Node | int | None, key: str, message: str) -> None:
        line = at if at is None or isinstance(at, int) else line_of(at)
        self.problems.append(Problem(self.file, line, key, message))


@dataclass(slots=True)
class _Shared:
    """The keys a tenant may take from ``defaults``; None means not set (or invalid)."""

    present: frozenset[str] = frozenset()
    daily_cap: int | None = None
    timezone: ZoneInfo | None = None
    reset_at: dt.time | None = None
    count: CountMode | None = None
    at_cap: AtCap | None = None
    status: int | None = None
    template: tuple[Path, str] | None = None
    exempt_paths: tuple[str, ...] | None = None
    exempt_clients: tuple[Network, ...] | None = None
    on_store_failure: OnStoreFailure | None = None
    warn_at: tuple[float, ...] | None = None


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML file at ``path``; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(str(path), None, "", f"is not valid UTF-8: {exc.reason}")]
        ) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [Problem(str(path), None, "", f"cannot read the file: {reason}")]
        ) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate YAML ``text`` read from ``path`` (which anchors relative paths)."""
    absolute = Path(os.path.normpath(Path(path).absolute()))
    ctx = Ctx(file=str(path), base=absolute.parent)
    root = compose(text, ctx)
    config = _config(root, absolute, ctx) if root is not None else None
    if config is None or ctx.problems:
        if not ctx.problems:  # pragma: no cover - every None path records a problem
            ctx.error(None, "", "invalid configuration")
        raise ConfigError(sorted(ctx.problems, key=lambda p: p.line or 0))
    return config


# --- YAML plumbing ----------------------------------------------------------


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def join_key(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def kind_of(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing (null)"
    tag = node.tag.rsplit(":", 1)[-1]
    return {"bool": "a boolean", "int": "a number", "float": "a number"}.get(tag, "a string")


def compose(text: str, ctx: Ctx) -> Node | None:
    """The document's node tree; YAML errors become problems (and None)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ": ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
        ctx.error(None if mark is None else mark.line + 1, "", f"invalid YAML: {what}")
        return None
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
        ctx.error(line, "", f"invalid YAML: {getattr(exc, 'reason', exc)}")
        return None
    if root is None:
        ctx.error(
            None, "", "the file is empty; expected a mapping with at least listen and tenants"
        )
    return root


def mapping(node: Node, key: str, allowed: tuple[str, ...] | None, ctx: Ctx) -> Fields | None:
    """The mapping's entries by key; null is empty. Duplicate and unknown keys are problems."""
    if is_null(node):
        return {}
    if not isinstance(node, MappingNode):
        ctx.error(node, key, f"expected a mapping, got {kind_of(node)}")
        return None
    fields: Fields = {}
    first: dict[str, int] = {}
    for key_node, value in node.value:
        if not isinstance(key_node, ScalarNode) or is_null(key_node):
            ctx.error(key_node, key, f"keys must be strings, got {kind_of(key_node)}")
            continue
        name = str(key_node.value)
        if name in first:
            ctx.error(key_node, join_key(key, name), f"duplicate key (first at line {first[name]})")
            continue
        first[name] = line_of(key_node)
        if allowed is not None and name not in allowed:
            ctx.error(key_node, join_key(key, name), unknown_key(name, allowed))
            continue
        fields[name] = (key_node, value)
    return fields


def unknown_key(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown key{hint}; allowed keys here: {', '.join(allowed)}"


def get_field(fields: Fields, name: str, parent: str, parse: Parser[T], ctx: Ctx) -> T | None:
    """Parse ``fields[name]`` if present; None if absent or invalid."""
    entry = fields.get(name)
    return None if entry is None else parse(entry[1], join_key(parent, name), ctx)


def scalar(node: Node, key: str, what: str, ctx: Ctx) -> str | None:
    """The scalar's text exactly as written (so ``12:30`` is not a YAML 1.1 number)."""
    if isinstance(node, ScalarNode) and not is_null(node):
        return str(node.value)
    ctx.error(node, key, f"expected {what}, got {kind_of(node)}")
    return None


def items_of(
    node: Node, key: str, what: tuple[str, str], ctx: Ctx
) -> list[tuple[Node, str, str]] | None:
    """A list of scalars as (node, key path, text); null is empty. ``what``: (one, many)."""
    if is_null(node):
        return []
    if not isinstance(node, SequenceNode):
        ctx.error(node, key, f"expected a list of {what[1]}, got {kind_of(node)}")
        return None
    items: list[tuple[Node, str, str]] = []
    ok = True
    for i, item in enumerate(node.value):
        text = scalar(item, f"{key}[{i}]", what[0], ctx)
        if text is None:
            ok = False
        else:
            items.append((item, f"{key}[{i}]", text))
    return items if ok else None


# --- scalar checks ------------------------------------------------------------


def read_duration(node: Node, key: str, ctx: Ctx) -> float | None:
    """A duration greater than zero."""
    text = scalar(node, key, "a duration such as 1s or 100ms", ctx)
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None
    if seconds <= 0:
        ctx.error(node, key, "must be greater than zero")
        return None
    return seconds


def read_size(node: Node, key: str, ctx: Ctx) -> int | None:
    """A size greater than zero."""
    text = scalar(node, key, "a size such as 2 GiB", ctx)
    if text is None:
        return None
    try:
        size = parse_size(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None
    if size <= 0:
        ctx.error(node, key, "must be greater than zero")
        return None
    return size


def read_size_or_zero(node: Node, key: str, ctx: Ctx) -> int | None:
    """A size; 0 means no limit."""
    text = scalar(node, key, "a size such as 1 GiB, or 0 for no limit", ctx)
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None


def read_head_size(node: Node, key: str, ctx: Ctx) -> int | None:
    """A size of part of a request head: from 1 byte to :data:`HEAD_SIZE_MAX`."""
    size = read_size(node, key, ctx)
    if size is not None and size > HEAD_SIZE_MAX:
        ctx.error(node, key, f"{size} bytes is too large a limit; at most 1 MiB")
        return None
    return size


def read_rate(node: Node, key: str, ctx: Ctx) -> int | None:
    """Bytes per second: a size with an optional ``/s`` (``1 KiB/s``, ``500``); 0 for none."""
    text = scalar(node, key, "a rate such as 1 KiB/s, or 0 for none", ctx)
    if text is None:
        return None
    try:
        return parse_size(text.strip().removesuffix("/s"))
    except ValueError as exc:
        ctx.error(node, key, str(exc).replace("a size:", "a rate:") + " (then optionally /s)")
        return None


def read_count_of(least: int, what: str) -> Callable[[Node, str, Ctx], int | None]:
    """A check for a whole number of ``what`` from ``least`` to :data:`COUNT_MAX`."""

    def check(node: Node, key: str, ctx: Ctx) -> int | None:
        text = scalar(node, key, f"a whole number of {what}", ctx)
        if text is None:
            return None
        if not _WHOLE.fullmatch(text) or not least <= int(text) <= COUNT_MAX:
            zero = " (0: no limit)" if least == 0 else ""
            ctx.error(
                node, key, f"{text!r}: expected a whole number from {least} to {COUNT_MAX}{zero}"
            )
            return None
        return int(text)

    return check


def read_history_days(node: Node, key: str, ctx: Ctx) -> int | None:
    text = scalar(node, key, "a whole number of days", ctx)
    if text is None:
        return None
    if not _WHOLE.fullmatch(text) or int(text) < 1:
        ctx.error(node, key, f"{text!r} is not a whole number of days >= 1")
        return None
    return int(text)


def read_status(node: Node, key: str, ctx: Ctx) -> int | None:
    text = scalar(node, key, "an HTTP status", ctx)
    if text is None:
        return None
    if not _WHOLE.fullmatch(text) or int(text) not in NOTICE_STATUSES:
        allowed = ", ".join(str(s) for s in NOTICE_STATUSES)
        ctx.error(node, key, f"{text!r} is not an allowed notice status; expected one of {allowed}")
        return None
    return int(text)


def _choice(node: Node, key: str, choices: dict[str, T], ctx: Ctx) -> T | None:
    text = scalar(node, key, "one of " + ", ".join(choices), ctx)
    if text is None:
        return None
    if text not in choices:
        ctx.error(node, key, f"{text!r} is not allowed; expected one of {', '.join(choices)}")
        return None
    return choices[text]


def read_on_store_failure(node: Node, key: str, ctx: Ctx) -> OnStoreFailure | None:
    return _choice(node, key, _STORE_FAILURE_MODES, ctx)


def read_warn_at(node: Node, key: str, ctx: Ctx) -> tuple[float, ...] | None:
    items = items_of(node, key, ("a share of the cap", "shares of the cap, e.g. [80%, 95%]"), ctx)
    if items is None:
        return None
    shares: list[float] = []
    for item, item_key, text in items:
        raw = text.strip()
        try:
            share = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            share = -1.0
        if not 0 < share < 1:
            ctx.error(item, item_key, f"{text!r}: expected a share of the cap like 80% or 0.8")
            continue
        shares.append(share)
    return tuple(sorted(set(shares))) if len(shares) == len(items) else None


def read_admin_token(node: Node, key: str, ctx: Ctx) -> str | None:
    text = scalar(node, key, "a file path", ctx)
    if text is None:
        return None
    path = Path(os.path.normpath(ctx.base / text))
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        ctx.error(node, key, f"cannot read the token file {str(path)!r}: {reason}")
        return None
    if len(token) < 16 or any(c.isspace() for c in token):
        ctx.error(node, key, f"{str(path)!r}: the token must be one word of 16 characters or more")
        return None
    return token


def read_webhook(node: Node, key: str, ctx: Ctx) -> str | None:
    text = scalar(node, key, "an http:// or https:// URL", ctx)
    if text is None:
        return None
    try:
        _parse_upstream(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc).replace("upstream", "webhook URL"))
        return None
    return text


_LOG_FORMATS: dict[str, LogFormat] = {"plain": "plain", "json": "json"}


def read_log_format(node: Node, key: str, ctx: Ctx) -> LogFormat | None:
    return _choice(node, key, _LOG_FORMATS, ctx)


def read_access_log(node: Node, key: str, ctx: Ctx) -> str | None:
    text = scalar(node, key, "off, stderr, stdout or a file path", ctx)
    if text is None:
        return None
    if text in ("off", "stderr", "stdout"):
        return text
    if not text.strip():
        ctx.error(node, key, "expected off, stderr, stdout or a file path")
        return None
    return os.path.normpath(ctx.base / text)


def read_workers(node: Node, key: str, ctx: Ctx) -> int | None:
    text = scalar(node, key, "a whole number or auto", ctx)
    if text is None:
        return None
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if not _WHOLE.fullmatch(text) or not 1 <= int(text) <= 256:
        ctx.error(node, key, f"{text!r}: expected a whole number from 1 to 256, or auto")
        return None
    return int(text)


def read_spool(node: Node, key: str, ctx: Ctx) -> Path | None:
    text = scalar(node, key, "a file path", ctx)
    if text is None:
        return None
    if not text.strip():
        ctx.error(node, key, "the spool path is empty")
        return None
    return Path(os.path.normpath(ctx.base / text))


def read_count(node: Node, key: str, ctx: Ctx) -> CountMode | None:
    return _choice(node, key, _COUNT_MODES, ctx)


def read_at_cap(node: Node, key: str, ctx: Ctx) -> AtCap | None:
    return _choice(node, key, _AT_CAP_MODES, ctx)


def read_timezone(node: Node, key: str, ctx: Ctx) -> ZoneInfo | None:
    text = scalar(node, key, "an IANA time zone name", ctx)
    if text is None:
        return None
    try:
        return ZoneInfo(text)
    except (KeyError, ValueError, OSError):
        ctx.error(node, key, f"unknown time zone {text!r}; expected an IANA name like Asia/Seoul")
        return None


def read_reset_at(node: Node, key: str, ctx: Ctx) -> dt.time | None:
    text = scalar(node, key, "a time of day HH:MM", ctx)
    if text is None:
        return None
    match = _RESET_AT.fullmatch(text)
    if match is None:
        ctx.error(node, key, f"{text!r} is not a time of day; expected HH:MM or HH:MM:SS (24-hour)")
        return None
    hour, minute, second = match.groups()
    return dt.time(int(hour), int(minute), int(second or 0))


def read_template(node: Node, key: str, ctx: Ctx) -> tuple[Path, str] | None:
    """The template's absolute path and its text, read now."""
    text = scalar(node, key, "a file path", ctx)
    if text is None:
        return None
    path = Path(os.path.normpath(ctx.base / text))
    try:
        template = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        ctx.error(node, key, f"template {str(path)!r} is not valid UTF-8")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        ctx.error(node, key, f"cannot read template {str(path)!r}: {reason}")
    else:
        unknown = validate_template(template)
        if not unknown:
            return path, template
        known = ", ".join(sorted(PLACEHOLDERS))
        names = ", ".join("$" + name for name in unknown)
        ctx.error(node, key, f"template uses unknown placeholders {names}; known: {known}")
    return None


def read_store(node: Node, key: str, ctx: Ctx) -> str | None:
    text = scalar(node, key, "a store URL", ctx)
    if text is None:
        return None
    store = read_resolve_store(text, ctx.base)
    if store is None:
        ctx.error(
            node,
            key,
            f"{text!r} is not a supported store; expected sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db, or a redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster:// URL",
        )
    return store


def read_resolve_store(text: str, base: Path) -> str | None:
    """The store URL with a relative sqlite path made absolute; None if unsupported."""
    if text.startswith(_REDIS_SCHEMES):
        return text
    prefix = "sqlite:///"
    rest = text.removeprefix(prefix)
    if not text.startswith(prefix) or not rest.strip() or rest.endswith("/") or "\0" in rest:
        return None
    return prefix + os.path.normpath(base / rest)


# --- network things -------------------------------------------------------------


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_hostname(name: str) -> bool:
    """Letters-digits-hyphens labels, and a last label that is not all digits."""
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def _host(text: str) -> str:
    """A tenant host, normalised (lower case, no trailing dot, IPv6 unbracketed); or ValueError."""
    host = text.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.removesuffix(".")
    addr = _ip(host)
    if addr is not None:
        return addr.compressed
    if ":" in host:
        raise ValueError(f"{text!r}: a host may not carry a port")
    name = host.removeprefix("*.")
    if not _is_hostname(name):
        raise ValueError(
            f"{text!r} is not a valid host; expected a host name (letters, digits, hyphens; "
            "optionally a leading '*.' wildcard) or an IP address"
        )
    return host


def read_hosts(node: Node, key: str, ctx: Ctx) -> Hosts | None:
    """The tenant's valid hosts as (node, key path, normalised host); the rest are problems."""
    items = items_of(node, key, ("a host name", "host names"), ctx)
    if items is None:
        return None
    if not items:
        ctx.error(node, key, "at least one host is required")
        return None
    hosts: Hosts = []
    for item, item_key, text in items:
        try:
            hosts.append((item, item_key, _host(text)))
        except ValueError as exc:
            ctx.error(item, item_key, str(exc))
    return hosts


def read_networks(node: Node, key: str, ctx: Ctx) -> tuple[Network, ...] | None:
    items = items_of(
        node, key, ("a CIDR network or IP address", "CIDR networks or IP addresses"), ctx
    )
    if items is None:
        return None
    networks: list[Network] = []
    for item, item_key, text in items:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            ctx.error(item, item_key, f"{text!r} is not an IP address or CIDR network")
    return tuple(networks) if len(networks) == len(items) else None


def read_exempt_paths(node: Node, key: str, ctx: Ctx) -> tuple[str, ...] | None:
    items = items_of(node, key, ("a path", "paths"), ctx)
    if items is None:
        return None
    bad = [(item, k, text) for item, k, text in items if not text.startswith("/")]
    for item, item_key, text in bad:
        ctx.error(item, item_key, f"{text!r} must start with '/'")
    return None if bad else tuple(text for _, _, text in items)


def read_listen(node: Node, key: str, ctx: Ctx) -> tuple[str, int] | None:
    text = scalar(node, key, "host:port", ctx)
    if text is None:
        return None
    try:
        return _split_listen(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None


def _split_listen(text: str) -> tuple[str, int]:
    """``("127.0.0.1", 8080)`` from ``127.0.0.1:8080``; ``("::1", 8080)`` from ``[::1]:8080``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port; e.g. 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        addr = _ip(host[1:-1])
        if addr is None or addr.version != 6:
            raise ValueError(f"{text!r}: {host} is not an IPv6 address")
        host = addr.compressed
    elif ":" in host:
        raise ValueError(f"{text!r}: an IPv6 address must be in brackets, e.g. [::1]:8080")
    elif _ip(host) is None and not _is_hostname(host.lower()):
        raise ValueError(f"{text!r}: {host!r} is not a valid host name or IP address")
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def read_upstream(node: Node, key: str, ctx: Ctx) -> UpstreamURL | None:
    text = scalar(node, key, "an http:// or https:// URL", ctx)
    if text is None:
        return None
    try:
        return _parse_upstream(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None


def _parse_upstream(text: str) -> UpstreamURL:
    """``http[s]://host[:port][/base]`` -> UpstreamURL; or ValueError."""
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{text!r}: a URL may not contain spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid URL: {exc}") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"{text!r}: expected an http:// or https:// URL")
    if "?" in text or "#" in text:
        raise ValueError(f"{text!r}: an upstream may not have a query or a fragment")
    if "@" in parts.netloc:
        raise ValueError(f"{text!r}: an upstream may not carry credentials")
    host = (parts.hostname or "").removesuffix(".")
    if _ip(host) is None and not _is_hostname(host):
        raise ValueError(f"{text!r}: expected a host name or IP address after {scheme}://")
    if port == 0:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    base_path = parts.path.rstrip("/")
    return UpstreamURL(
        url=f"{scheme}://{parts.netloc.lower()}{base_path}",
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        base_path=base_path,
    )


# --- sections -------------------------------------------------------------------


def _config(root: Node, path: Path, ctx: Ctx) -> Config | None:
    if not isinstance(root, MappingNode):
        ctx.error(
            root, "", f"the top level must be a mapping (listen, tenants, ...), got {kind_of(root)}"
        )
        return None
    fields = mapping(root, "", _ROOT_KEYS, ctx)
    if fields is None:
        return None
    line = line_of(root)
    listen = get_field(fields, "listen", "", read_listen, ctx)
    if "listen" not in fields:
        ctx.error(line, "listen", "required key missing; e.g. listen: 127.0.0.1:8080")
    store = get_field(fields, "store", "", read_store, ctx) or read_resolve_store(
        DEFAULT_STORE, ctx.base
    )
    timeouts = _timeouts(fields, ctx)
    limits = _limits(fields, ctx)
    defaults = _defaults(fields, ctx)
    tenants = _tenants(fields, defaults, line, ctx)
    flush_interval = get_field(fields, "flush_interval", "", read_duration, ctx)
    history_days = get_field(fields, "history_days", "", read_history_days, ctx)
    trusted_proxies = get_field(fields, "trusted_proxies", "", read_networks, ctx)
    store_timeout = get_field(fields, "store_timeout", "", read_duration, ctx)
    workers = get_field(fields, "workers", "", read_workers, ctx)
    admin_listen = get_field(fields, "admin_listen", "", read_listen, ctx)
    admin_token = get_field(fields, "admin_token_file", "", read_admin_token, ctx)
    webhook_url = get_field(fields, "webhook_url", "", read_webhook, ctx)
    log_format: LogFormat | None = get_field(fields, "log_format", "", read_log_format, ctx)
    access_log = get_field(fields, "access_log", "", read_access_log, ctx)
    spool = get_field(fields, "spool", "", read_spool, ctx) or Path(
        os.path.normpath(ctx.base / DEFAULT_SPOOL)
    )
    if listen is None or store is None or tenants is None:
        return None
    return Config(
        path=path,
        listen_host=listen[0],
        listen_port=listen[1],
        store=store,
        store_timeout=store_timeout or 0.5,
        spool=spool,
        workers=workers or 1,
        admin_listen=admin_listen,
        admin_token=admin_token,
        webhook_url=webhook_url,
        log_format=log_format if log_format is not None else "plain",
        access_log=access_log or "off",
        flush_interval=flush_interval or 1.0,
        history_days=history_days or 35,
        trusted_proxies=trusted_proxies or (),
        timeouts=timeouts,
        limits=limits,
        tenants=tenants,
    )


def _timeouts(fields: Fields, ctx: Ctx) -> Timeouts:
    entry = fields.get("timeouts")
    own = mapping(entry[1], "timeouts", _TIMEOUT_KEYS, ctx) if entry else None
    values: dict[str, float | int] = {}
    for name in DURATION_KEYS:
        seconds = get_field(own or {}, name, "timeouts", read_duration, ctx)
        if seconds is not None:
            values[name] = seconds
    rate = get_field(own or {}, "body_min_rate", "timeouts", read_rate, ctx)
    if rate is not None:
        values["body_min_rate"] = rate
    return Timeouts(**values)  # type: ignore[arg-type]  # each key parsed to its field's type


def _limits(fields: Fields, ctx: Ctx) -> LimitsConfig:
    """The ``limits`` section; each key checked on its own, then the head sizes together."""
    entry = fields.get("limits")
    own = (mapping(entry[1], "limits", _LIMIT_KEYS, ctx) if entry else None) or {}
    values: dict[str, int] = {}
    for name in HEAD_SIZE_KEYS:
        size = get_field(own, name, "limits", read_head_size, ctx)
        if size is not None:
            values[name] = size
    count = get_field(own, "header_count", "limits", read_count_of(1, "header lines"), ctx)
    if count is not None:
        values["header_count"] = count
    body_max = get_field(own, "body_max", "limits", read_size_or_zero, ctx)
    if body_max is not None:
        values["body_max"] = body_max
    connections = get_field(own, "connections", "limits", read_count_of(1, "connections"), ctx)
    if connections is not None:
        values["connections"] = connections
    per_client = get_field(
        own, "connections_per_client", "limits", read_count_of(0, "connections"), ctx
    )
    if per_client is not None:
        values["connections_per_client"] = per_client
    limits = LimitsConfig(**values)
    for name in ("request_line", "header_field"):
        if getattr(limits, name) > limits.header_total:
            at = own[name][0] if name in own else own["header_total"][0]
            ctx.error(
                at,
                f"limits.{name}",
                f"{getattr(limits, name)} bytes is more than limits.header_total "
                f"({limits.header_total} bytes), which it must fit in",
            )
    return limits


def _defaults(fields: Fields, ctx: Ctx) -> _Shared:
    entry = fields.get("defaults")
    own = mapping(entry[1], "defaults", SHARED_KEYS, ctx) if entry else None
    return _shared(own or {}, "defaults", ctx)


def _shared(fields: Fields, parent: str, ctx: Ctx) -> _Shared:
    """The keys a tenant may inherit, as written at ``parent`` (defaults or a tenant)."""
    notice: Fields = {}
    if "notice" in fields:
        notice = mapping(fields["notice"][1], join_key(parent, "notice"), _NOTICE_KEYS, ctx) or {}
    notice_key = join_key(parent, "notice")
    return _Shared(
        present=frozenset(fields),
        daily_cap=get_field(fields, "daily_cap", parent, read_size, ctx),
        timezone=get_field(fields, "timezone", parent, read_timezone, ctx),
        reset_at=get_field(fields, "reset_at", parent, read_reset_at, ctx),
        count=get_field(fields, "count", parent, read_count, ctx),
        at_cap=get_field(fields, "at_cap", parent, read_at_cap, ctx),
        status=get_field(notice, "status", notice_key, read_status, ctx),
        template=get_field(notice, "template", notice_key, read_template, ctx),
        exempt_paths=get_field(fields, "exempt_paths", parent, read_exempt_paths, ctx),
        exempt_clients=get_field(fields, "exempt_clients", parent, read_networks, ctx),
        on_store_failure=get_field(fields, "on_store_failure", parent, read_on_store_failure, ctx),
        warn_at=get_field(fields, "warn_at", parent, read_warn_at, ctx),
    )


def _tenants(
    fields: Fields, defaults: _Shared, root_line: int, ctx: Ctx
) -> tuple[TenantConfig, ...] | None:
    entry = fields.get("tenants")
    if entry is None:
        ctx.error(root_line, "tenants", "required key missing; list at least one tenant")
        return None
    key_node, node = entry
    named = mapping(node, "tenants", None, ctx)
    if named is None:
        return None
    if not named:
        ctx.error(key_node, "tenants", "at least one tenant is required")
        return None
    claimed: dict[str, tuple[str, int]] = {}  # host -> (tenant, line)
    tenants: list[TenantConfig] = []
    for name, (name_node, tenant_node) in named.items():
        tenant = _tenant(name, name_node, tenant_node, defaults, claimed, ctx)
        if tenant is not None:
            tenants.append(tenant)
    return tuple(tenants) if len(tenants) == len(named) else None


def _claim(name: str, hosts: Hosts, claimed: dict[str, tuple[str, int]], ctx: Ctx) -> None:
    """Record the tenant's hosts; a host already claimed (by any tenant) is a problem."""
    for node, key, host in hosts:
        owner = claimed.get(host)
        if owner is None:
            claimed[host] = (name, line_of(node))
        elif owner[0] == name:
            ctx.error(node, key, f"host {host!r} is listed twice (first at line {owner[1]})")
        else:
            message = f"host {host!r} is already claimed by tenant {owner[0]!r} (line {owner[1]})"
            ctx.error(node, key, message)


def _tenant(
    name: str,
    name_node: Node,
    node: Node,
    defaults: _Shared,
    claimed: dict[str, tuple[str, int]],
    ctx: Ctx,
) -> TenantConfig | None:
    path = f"tenants.{name}"
    if not TENANT_NAME.fullmatch(name):
        ctx.error(
            name_node,
            path,
            "a tenant name must be letters, digits, '_', '.' or '-', "
            "starting with a letter or digit",
        )
    fields = mapping(node, path, _TENANT_KEYS, ctx)
    if fields is None:
        return None
    line = line_of(name_node)
    for required in ("hosts", "upstream"):
        if required not in fields:
            ctx.error(line, join_key(path, required), "required key missing")
    if "daily_cap" not in fields and "daily_cap" not in defaults.present:
        ctx.error(line, join_key(path, "daily_cap"), "required key missing (here or in defaults)")
    hosts = get_field(fields, "hosts", path, read_hosts, ctx)
    _claim(name, hosts or [], claimed, ctx)
    upstream = get_field(fields, "upstream", path, read_upstream, ctx)
    own = _shared(fields, path, ctx)
    daily_cap = _first(own.daily_cap, defaults.daily_cap)
    if not hosts or upstream is None or daily_cap is None:
        return None
    template = _first(own.template, defaults.template)
    return TenantConfig(
        name=name,
        hosts=tuple(dict.fromkeys(host for _, _, host in hosts)),
        upstream=upstream,
        daily_cap=daily_cap,
        timezone=_first(own.timezone, defaults.timezone) or ZoneInfo("UTC"),
        reset_at=_first(own.reset_at, defaults.reset_at) or dt.time(0, 0),
        count=_first(own.count, defaults.count) or "egress",
        at_cap=_first(own.at_cap, defaults.at_cap) or "finish",
        notice=NoticeConfig(
            status=_first(own.status, defaults.status) or 503,
            template_path=template[0] if template else None,
            template=template[1] if template else None,
        ),
        exempt_paths=_first(own.exempt_paths, defaults.exempt_paths) or (),
        exempt_clients=_first(own.exempt_clients, defaults.exempt_clients) or (),
        on_store_failure=_first(own.on_store_failure, defaults.on_store_failure) or "open",
        warn_at=_first(own.warn_at, defaults.warn_at) or (),
    )


def _first(value: T | None, fallback: T | None) -> T | None:
    """``value`` unless it is None, else ``fallback``."""
    return fallback if value is None else value
