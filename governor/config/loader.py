"""The loader: a YAML file validated into the one typed :class:`~governor.config.model.Config`.

Invariant: a :class:`Config` that exists is valid. :func:`load_config` collects every
problem (file, line, key path, what is wrong) and raises one
:class:`~governor.errors.ConfigError`; nothing downstream re-validates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import gc
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo

from governor.config.addresses import (
    read_hosts,
    read_listen,
    read_networks,
    read_resolve_store,
    read_store,
    read_upstream,
    read_webhook,
)
from governor.config.composer import MappingNode, Node
from governor.config.listeners import read_cert_pair, read_listeners
from governor.config.model import (
    ClientForm,
    Config,
    LimitsConfig,
    ListenConfig,
    LogFormat,
    NoticeConfig,
    TenantConfig,
    Timeouts,
)
from governor.config.nodes import (
    Ctx,
    Fields,
    Hosts,
    compose,
    get_field,
    join_key,
    kind_of,
    line_of,
    mapping,
)
from governor.config.shared import (
    Shared,
    crawlers_of,
    first,
    large_of,
    pacing_of,
    period_caps,
    read_shared,
)
from governor.config.values import (
    DEFAULT_SPOOL,
    DEFAULT_STORE,
    DURATION_KEYS,
    HEAD_SIZE_KEYS,
    SHARED_KEYS,
    read_access_log,
    read_admin_token,
    read_count_of,
    read_duration,
    read_duration_or_zero,
    read_head_size,
    read_history_days,
    read_log_format,
    read_rate,
    read_size_or_zero,
    read_spool,
    read_top_clients,
    read_workers,
)
from governor.errors import ConfigError, Problem
from governor.release import release
from governor.sizes import format_size

# How deep a node tree is held while released: down to each tenant's own mapping (root,
# its entries, the tenants node, its entries, a tenant's node and its entries).
NODE_TREE_LEVELS: Final = 6
# The load's tables (name -> nodes, host -> owner): their entries, not the nodes again.
SCRATCH_LEVELS: Final = 2

_ROOT_KEYS: Final = (
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
    "top_clients",
    "timeouts",
    "limits",
    "defaults",
    "tenants",
)
_TIMEOUT_KEYS: Final = (*DURATION_KEYS, "shutdown_delay", "body_min_rate")
_LIMIT_KEYS: Final = (
    *HEAD_SIZE_KEYS,
    "header_count",
    "body_max",
    "connections",
    "connections_per_client",
)
_TENANT_KEYS: Final = ("hosts", "upstream", "tls", *SHARED_KEYS)
# Far above any config (100,000 tenants at ~150 bytes each: ~15 MiB): /dev/zero is
# refused, not read until the memory runs out.
MAX_CONFIG_BYTES = 256 << 20
TENANT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)


def load_config(path: str | Path, *, beside_loop: bool = False) -> Config:
    """Read and validate the YAML file at ``path``; raise ConfigError listing every problem.

    ``beside_loop``: loaded in a worker thread while an event loop serves (a reload); the
    YAML node tree is then freed a piece at a time (:mod:`governor.release`).
    """
    path = Path(path)
    return parse_config(read_config_text(path), path, beside_loop=beside_loop)


def read_config_text(path: Path) -> str:
    """The file's text; ConfigError for anything that is not a readable UTF-8 regular file
    of at most MAX_CONFIG_BYTES (a FIFO or /dev/zero would block or fill the memory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without a writer
    except (OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError([Problem(str(path), None, "", "is not a regular file")])
        with open(fd, "rb", closefd=False) as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        limit = format_size(MAX_CONFIG_BYTES)
        raise ConfigError([Problem(str(path), None, "", f"is larger than {limit}")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem = Problem(str(path), line, "", f"is not valid UTF-8: {exc.reason}")
        raise ConfigError([problem]) from None


def _unreadable(path: Path, exc: OSError | ValueError) -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError([Problem(str(path), None, "", f"cannot read the file: {reason}")])


def parse_config(text: str, path: Path, *, beside_loop: bool = False) -> Config:
    """Validate YAML ``text`` read from ``path`` (which anchors relative paths)."""
    absolute = Path(os.path.normpath(Path(path).absolute()))
    ctx = Ctx(file=str(path), base=absolute.parent)
    with _cycle_collector_paused():
        root = compose(text, ctx)
        config = _config(root, absolute, ctx) if root is not None else None
        # The node tree, freed by reference counting (it holds no cycles): at once, it
        # held the GIL 36 ms at 20,000 tenants; beside a loop, a few nodes at a time.
        tree: list[object] = [root]
        del root
        if beside_loop:
            release(ctx.scratch, levels=SCRATCH_LEVELS)
            release(tree, levels=NODE_TREE_LEVELS)
    if config is None or ctx.problems:
        if not ctx.problems:  # pragma: no cover - every None path records a problem
            ctx.error(None, "", "invalid configuration")
        raise ConfigError(sorted(ctx.problems, key=lambda p: p.line or 0))
    return config


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """No cycle collection while the node tree and the config are built.

    A large file makes millions of objects that all live until the load ends, and each
    of them would count towards a collection that walks them all again: at 100,000
    tenants that doubled the load's time. Reference counting still frees what dies.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- YAML plumbing ----------------------------------------------------------


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
    listeners = get_field(fields, "listen", "", read_listeners, ctx)
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
    top_clients: ClientForm | None = get_field(fields, "top_clients", "", read_top_clients, ctx)
    spool = get_field(fields, "spool", "", read_spool, ctx) or Path(
        os.path.normpath(ctx.base / DEFAULT_SPOOL)
    )
    if listeners is None or store is None or tenants is None:
        return None
    if admin_listen is not None:
        _check_admin_apart(admin_listen, listeners, fields, ctx)
    _check_tls(listeners, tenants, ctx)
    return Config(
        path=path,
        listeners=listeners,
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
        top_clients=top_clients or "truncated",
        timeouts=timeouts,
        limits=limits,
        tenants=tenants,
        lines=MappingProxyType(ctx.lines),  # ctx is not used after the load
    )


_ANY_HOST: Final = ("", "0.0.0.0", "::")


def _check_admin_apart(
    admin: tuple[str, int], listeners: tuple[ListenConfig, ...], fields: Fields, ctx: Ctx
) -> None:
    """``admin_listen`` must not take a ``listen`` address: serve could not bind both (or,
    with SO_REUSEPORT, would split the connections between the two)."""
    host, port = admin
    for listener in listeners:
        overlap = listener.host == host or listener.host in _ANY_HOST or host in _ANY_HOST
        if port != 0 and listener.port == port and overlap:
            ctx.error(
                fields["admin_listen"][1],
                "admin_listen",
                f"{host}:{port} is also an address of listen ({listener.address}); "
                "give the admin listener a port of its own",
            )
            return


def _check_tls(
    listeners: tuple[ListenConfig, ...], tenants: tuple[TenantConfig, ...], ctx: Ctx
) -> None:
    """A tenant's ``tls`` or ``https_redirect`` needs a TLS listener to mean anything."""
    if any(listener.tls is not None for listener in listeners):
        return
    for tenant in tenants:
        for name, on in (
            ("tls", tenant.tls is not None),
            ("https_redirect", tenant.https_redirect),
        ):
            if on:
                key = f"tenants.{tenant.name}.{name}"
                ctx.error(
                    ctx.lines.get(key),
                    key,
                    "no listener serves TLS; add one to listen, e.g. "
                    "{address: 0.0.0.0:443, tls: {certificates: [{cert: ..., key: ...}]}}",
                )
                return


def _timeouts(fields: Fields, ctx: Ctx) -> Timeouts:
    entry = fields.get("timeouts")
    own = mapping(entry[1], "timeouts", _TIMEOUT_KEYS, ctx) if entry else None
    values: dict[str, float | int] = {}
    for name in DURATION_KEYS:
        seconds = get_field(own or {}, name, "timeouts", read_duration, ctx)
        if seconds is not None:
            values[name] = seconds
    delay = get_field(own or {}, "shutdown_delay", "timeouts", read_duration_or_zero, ctx)
    if delay is not None:
        values["shutdown_delay"] = delay
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


_TENANT_ONLY: Final = ("hosts", "upstream", "tls")


def _defaults(fields: Fields, ctx: Ctx) -> Shared:
    entry = fields.get("defaults")
    own = mapping(entry[1], "defaults", (*SHARED_KEYS, *_TENANT_ONLY), ctx) if entry else None
    for name in _TENANT_ONLY:
        if own and name in own:
            key_node, _ = own.pop(name)
            ctx.error(
                key_node, f"defaults.{name}", f"{name} belongs in each tenant, not in defaults"
            )
    return read_shared(own or {}, "defaults", ctx)


_UTC: Final = ZoneInfo("UTC")
_MIDNIGHT: Final = dt.time(0, 0)


def _tenants(
    fields: Fields, defaults: Shared, root_line: int, ctx: Ctx
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
    notices: dict[NoticeConfig, NoticeConfig] = {}  # one object per distinct notice
    ctx.scratch += (named, claimed)
    for name, (name_node, tenant_node) in named.items():
        tenant = _tenant(name, name_node, tenant_node, defaults, claimed, notices, ctx)
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
    defaults: Shared,
    claimed: dict[str, tuple[str, int]],
    notices: dict[NoticeConfig, NoticeConfig],
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
    hosts = get_field(fields, "hosts", path, read_hosts, ctx)
    _claim(name, hosts or [], claimed, ctx)
    upstream = get_field(fields, "upstream", path, read_upstream, ctx)
    own = read_shared(fields, path, ctx)
    caps = period_caps(own, defaults, fields, line, path, ctx)
    if not hosts or upstream is None or caps is None:
        return None
    period, daily_cap, day_guard = caps
    template = first(own.template, defaults.template)
    notice = NoticeConfig(
        status=first(own.status, defaults.status) or 503,
        template_path=template[0] if template else None,
        template=template[1] if template else None,
        topup_url=first(own.topup_url, defaults.topup_url),
        topup_text=first(own.topup_text, defaults.topup_text),
    )
    return TenantConfig(
        name=name,
        hosts=tuple(dict.fromkeys(host for _, _, host in hosts)),
        upstream=upstream,
        daily_cap=daily_cap,
        period=period,
        week_starts=first(own.week_starts, defaults.week_starts) or 0,
        day_guard=day_guard,
        timezone=first(own.timezone, defaults.timezone) or _UTC,
        reset_at=first(own.reset_at, defaults.reset_at) or _MIDNIGHT,
        count=first(own.count, defaults.count) or "egress",
        at_cap=first(own.at_cap, defaults.at_cap) or "finish",
        notice=notices.setdefault(notice, notice),
        exempt_paths=first(own.exempt_paths, defaults.exempt_paths) or (),
        exempt_clients=first(own.exempt_clients, defaults.exempt_clients) or (),
        on_store_failure=first(own.on_store_failure, defaults.on_store_failure) or "open",
        warn_at=first(own.warn_at, defaults.warn_at) or (),
        forecast_window=first(own.forecast_window, defaults.forecast_window) or 900.0,
        enforce=first(own.enforce, defaults.enforce) is not False,  # on unless off
        admission=first(own.admission, defaults.admission) is not False,  # on unless off
        large=large_of(own, defaults, line, path, ctx),
        pacing=pacing_of(own, defaults),
        client_share=first(own.client_share, defaults.client_share),
        crawlers=crawlers_of(own, defaults),
        tls=get_field(fields, "tls", path, read_cert_pair, ctx),
        https_redirect=first(own.https_redirect, defaults.https_redirect) is True,
        hsts=first(own.hsts, defaults.hsts) or None,
    )
