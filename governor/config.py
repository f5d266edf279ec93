"""The one typed configuration object, and the loader that validates a YAML file into it.

Invariant: a :class:`Config` that exists is valid. Every check happens in
:func:`load_config`, which collects every problem (file, line, key path, what is
wrong) and raises one :class:`~governor.errors.ConfigError`; nothing downstream
re-validates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CountMode = Literal["egress", "ingress", "both"]
AtCap = Literal["finish", "cut"]

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Deadlines, in seconds."""

    upstream_connect: float = 5.0
    upstream_response: float = 60.0  # until the upstream's response headers
    keepalive: float = 75.0  # idle client keep-alive connections
    shutdown: float = 30.0  # graceful drain on SIGTERM


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole, validated configuration."""

    path: Path  # the file it was loaded from (absolute)
    listen_host: str
    listen_port: int
    store: str  # e.g. "sqlite:////abs/path/usage.db"; relative paths already resolved
    flush_interval: float = 1.0
    history_days: int = 35  # how many past periods the store keeps
    trusted_proxies: tuple[Network, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    tenants: tuple[TenantConfig, ...] = ()

    def tenant(self, name: str) -> TenantConfig | None:
        """The tenant called ``name``, or None."""
        for t in self.tenants:
            if t.name == name:
                return t
        return None
