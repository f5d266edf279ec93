"""The one typed configuration object: frozen, keyword-only dataclasses.

Invariant: a :class:`Config` that exists is valid; :mod:`governor.config.loader` makes
them, and nothing downstream re-validates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal
from zoneinfo import ZoneInfo

from governor.errors import Problem

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CountMode = Literal["egress", "ingress", "both"]
AtCap = Literal["finish", "cut"]
OnStoreFailure = Literal["open", "closed"]
LogFormat = Literal["plain", "json"]
PeriodKind = Literal["day", "week", "month"]
# How the top consumers store a visitor: an IPv4 /24 or IPv6 /48, a keyed digest, or as is.
ClientForm = Literal["truncated", "hashed", "full"]
TLSVersion = Literal["TLSv1.2", "TLSv1.3"]

# Mozilla's "intermediate" TLS 1.2 ciphers (https://ssl-config.mozilla.org/, guideline
# 5.7); TLS 1.3 suites are OpenSSL's defaults, which are the same list.
INTERMEDIATE_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
HSTS_DEFAULT: Final = 63_072_000  # seconds: two years, Mozilla's recommendation for "hsts: on"

NOTICE_STATUSES: Final = (503, 509, 429, 402)


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeConfig:
    """How the blocked notice is served."""

    status: int = 503
    template_path: Path | None = None  # absolute; None means the built-in template
    template: str | None = None  # the template's text, read at load time
    # A link for visitors and the site's owner: where more allowance can be bought.
    topup_url: str | None = None
    topup_text: str | None = None  # the link's text (else a built-in one per language)


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
    daily_cap: int  # bytes: the cap of each period (named for the day, the default period)
    timezone: ZoneInfo
    reset_at: dt.time
    count: CountMode = "egress"
    at_cap: AtCap = "finish"
    notice: NoticeConfig = field(default_factory=NoticeConfig)
    exempt_paths: tuple[str, ...] = ()  # path prefixes
    exempt_clients: tuple[Network, ...] = ()
    on_store_failure: OnStoreFailure = "open"  # closed: the notice while the store is down
    warn_at: tuple[float, ...] = ()  # shares of the cap (0 < x < 1) that raise a warning, ascending
    forecast_window: float = 900.0  # seconds: the exhaustion forecast's moving average
    # False: shadow mode. Counted, reported and warned about as ever, but never refused:
    # where the tenant would be blocked, it is reported as would_block instead.
    enforce: bool = True
    period: PeriodKind = "day"  # day | week | month, calendar periods in the tenant's zone
    week_starts: int = 0  # the weekday a week starts on (0: Monday)
    day_guard: int | None = None  # a weekly or monthly tenant's cap on each day (daily_cap)
    # A response declaring more bytes than are left of the cap is refused before its first
    # byte (the notice), rather than started and then finished or cut at the cap.
    admission: bool = True
    large: LargeConfig | None = None  # large responses go first (off when None)
    pacing: PacingConfig | None = None  # large responses paced to last until the reset
    # One visitor (an IPv4 address, an IPv6 /64) gets at most this share of the cap a period.
    client_share: float | None = None
    crawlers: CrawlerConfig | None = None  # crawler traffic: recognised, budgeted
    tls: CertPair | None = None  # the certificate served for its hosts (chosen by SNI)
    # Plain-HTTP requests get a 308 to https:// (ACME challenges excepted).
    https_redirect: bool = False
    hsts: int | None = None  # Strict-Transport-Security max-age on HTTPS responses


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate chain and its private key, PEM files (absolute paths).

    ``key`` is the config key that named them (``tenants.site.tls``,
    ``listen[1].tls.certificates[0]``), for messages about the files.
    """

    cert: Path
    key: Path
    where: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTLS:
    """A TLS listener's settings: its own certificates (the first is the default when
    no tenant's certificate matches the SNI name), versions and TLS 1.2 ciphers."""

    certificates: tuple[CertPair, ...]
    min_version: TLSVersion = "TLSv1.2"
    max_version: TLSVersion = "TLSv1.3"
    ciphers: str = INTERMEDIATE_CIPHERS


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenConfig:
    """One listener: an address, plain HTTP or TLS."""

    host: str
    port: int
    tls: ListenerTLS | None = None

    @property
    def address(self) -> str:
        """``host:port``, IPv6 in brackets: how logs, metrics and messages name it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"


@dataclass(frozen=True, slots=True)
class LargeConfig:
    """``large``: from ``share`` of the cap on, responses above ``size`` bytes are refused.

    A response declaring more than ``size`` gets the "large" notice (503, Retry-After)
    before its first byte; one without a declared length is cut once it passes ``size``.
    Pages and small files go on until the cap.
    """

    size: int  # bytes
    share: float  # of the cap plus today's grant, 0 <= share < 1


@dataclass(frozen=True, slots=True)
class PacingConfig:
    """``pacing``: from ``share`` of the cap on, large responses share a send rate.

    The rate is what is left, spread over the time to the reset, less what the
    tenant's other responses use now; each paced response gets at least ``floor``.
    """

    share: float  # of the cap plus today's grant, 0 <= share < 1
    floor: int  # bytes per second, per response (> 0)


# User-Agent substrings (lower case) that mark a crawler when ``crawlers.agents`` is absent:
# search engines, social-network previews, AI crawlers, SEO crawlers.
DEFAULT_CRAWLER_AGENTS: Final[tuple[str, ...]] = (
    "googlebot",
    "bingbot",
    "yeti",
    "daum",
    "facebookexternalhit",
    "meta-externalagent",
    "gptbot",
    "chatgpt-user",
    "oai-searchbot",
    "claudebot",
    "anthropic-ai",
    "perplexitybot",
    "bytespider",
    "amazonbot",
    "applebot",
    "ccbot",
    "ahrefsbot",
    "semrushbot",
    "mj12bot",
    "dotbot",
    "petalbot",
    "yandexbot",
    "baiduspider",
    "duckduckbot",
    "twitterbot",
    "slurp",
)


@dataclass(frozen=True, slots=True)
class CrawlerConfig:
    """``crawlers``: which requests are crawler traffic, and their budget.

    A request is a crawler's when its User-Agent contains one of ``agents`` (compared
    in lower case) or its client lies in ``clients``. All crawlers of a tenant together
    get at most ``share`` of the cap (None: no budget of their own); from ``large.from``
    on, they are refused before people are.
    """

    share: float | None
    agents: tuple[str, ...] = DEFAULT_CRAWLER_AGENTS  # lower case
    clients: tuple[Network, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Deadlines, in seconds (and the one minimum rate that works as a deadline).

    ``body_min_rate`` is in bytes per second, 0 for none. It works like Apache's
    ``mod_reqtimeout`` MinRate: a request body must have delivered at least
    ``(t - request_header) * body_min_rate`` bytes ``t`` seconds after its head
    arrived. So a body gets ``request_header`` seconds of grace, then one more
    second for every ``body_min_rate`` bytes it delivers; a body behind that is
    refused (408 when no response has started) and its connection closed.

    ``send`` works like nginx's ``send_timeout``: it runs only while governor has
    bytes for a client that its socket has not accepted, and restarts whenever the
    socket accepts some; a client that accepts nothing for that long is closed.
    """

    upstream_connect: float = 5.0
    upstream_response: float = 60.0  # until the upstream's response headers
    keepalive: float = 75.0  # idle client keep-alive connections
    shutdown: float = 30.0  # graceful drain on SIGTERM
    shutdown_delay: float = 0.0  # SIGTERM: keep accepting (readyz 503) this long before the drain
    request_header: float = 60.0  # from a head's first byte to its end: else 408
    body_min_rate: int = 1024  # bytes/s a request body must keep up (see above); 0: none
    websocket_idle: float = 600.0  # a tunnel with no byte either way this long is closed
    send: float = 60.0  # a client whose socket accepts no byte this long, with data due: closed
    tls_handshake: float = 10.0  # from a TLS connection's accept to its handshake's end


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """How much a client may send and hold; beyond each, it is refused.

    Sizes are in bytes; a count or size of 0 where noted means no limit.
    (Named to stay apart from :class:`governor.http1.wire.Limits`, the parser's own.)
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
    listeners: tuple[ListenConfig, ...]  # ``listen``: at least one
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
    top_clients: ClientForm = "truncated"  # how the top consumers store visitors
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tenants: tuple[TenantConfig, ...] = ()
    # Key path ("listen", "tenants.site.upstream") -> its line in the file, for messages
    # about the key after loading: a port in use, a file that cannot be opened.
    lines: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    @property
    def listen_host(self) -> str:
        """The first listener's host."""
        return self.listeners[0].host

    @property
    def listen_port(self) -> int:
        """The first listener's port."""
        return self.listeners[0].port

    def problem(self, key: str, message: str) -> Problem:
        """A problem with ``key``, placed as the loader places its own: ``FILE:LINE: key: ...``."""
        return Problem(str(self.path), self.lines.get(key), key, message)

    def tenant(self, name: str) -> TenantConfig | None:
        """The tenant called ``name``, or None."""
        for t in self.tenants:
            if t.name == name:
                return t
        return None


# ---------------------------------------------------------------------------
# The loader: YAML node tree -> Config, collecting every problem with its line.
# ---------------------------------------------------------------------------
