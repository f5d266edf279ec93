"""The keys a tenant may take from ``defaults``: read where written, merged per tenant.

A tenant's own key wins over the defaults' one; a nested key (``large.size``) is merged
key by key, so ``defaults: {large: {size: 1 MiB}}`` and a tenant's ``large: {from: 80%}``
make one setting. Each distinct nested setting is one shared object however many
tenants have it.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from governor.config.addresses import read_exempt_paths, read_link, read_networks
from governor.config.listeners import read_hsts
from governor.config.model import (
    DEFAULT_CRAWLER_AGENTS,
    AtCap,
    CountMode,
    CrawlerConfig,
    LargeConfig,
    Network,
    OnStoreFailure,
    PacingConfig,
    PeriodKind,
)
from governor.config.nodes import Ctx, Fields, T, get_field, join_key, line_of, mapping
from governor.config.values import (
    SHARED_KEYS,
    read_agents,
    read_at_cap,
    read_count,
    read_duration,
    read_floor,
    read_on_store_failure,
    read_part,
    read_period,
    read_reset_at,
    read_share,
    read_size,
    read_status,
    read_switch,
    read_template,
    read_text,
    read_timezone,
    read_warn_at,
    read_weekday,
)

_NOTICE_KEYS: Final = ("status", "template", "topup_url", "topup_text")
_LARGE_KEYS: Final = ("size", "from")
_PACING_KEYS: Final = ("from", "floor")
_CRAWLER_KEYS: Final = ("share", "agents", "clients")
DEFAULT_PACING_FROM: Final = 0.5
DEFAULT_PACING_FLOOR: Final = 64 * 1024
DEFAULT_LARGE_FROM: Final = 0.9


@dataclass(slots=True)
class Shared:
    """The keys a tenant may take from ``defaults``; None means not set (or invalid)."""

    present: frozenset[str] = frozenset()
    daily_cap: int | None = None
    cap: int | None = None
    period: PeriodKind | None = None
    week_starts: int | None = None
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
    forecast_window: float | None = None
    topup_url: str | None = None
    topup_text: str | None = None
    enforce: bool | None = None
    admission: bool | None = None
    large_size: int | None = None
    large_from: float | None = None
    pacing_from: float | None = None
    pacing_floor: int | None = None
    client_share: float | None = None
    crawler_share: float | None = None
    crawler_agents: tuple[str, ...] | None = None
    crawler_clients: tuple[Network, ...] | None = None
    https_redirect: bool | None = None
    hsts: int | None = None


NOTHING_SHARED: Final = Shared()


def read_shared(fields: Fields, parent: str, ctx: Ctx) -> Shared:
    """The keys a tenant may inherit, as written at ``parent`` (defaults or a tenant)."""
    if fields.keys().isdisjoint(SHARED_KEYS):  # most tenants: all from defaults
        return NOTHING_SHARED
    notice: Fields = {}
    if "notice" in fields:
        notice = mapping(fields["notice"][1], join_key(parent, "notice"), _NOTICE_KEYS, ctx) or {}
    notice_key = join_key(parent, "notice")
    large: Fields = {}
    large_key = join_key(parent, "large")
    if "large" in fields:
        large = mapping(fields["large"][1], large_key, _LARGE_KEYS, ctx) or {}
    pacing: Fields = {}
    pacing_key = join_key(parent, "pacing")
    if "pacing" in fields:
        pacing = mapping(fields["pacing"][1], pacing_key, _PACING_KEYS, ctx) or {}
    crawlers: Fields = {}
    crawlers_key = join_key(parent, "crawlers")
    if "crawlers" in fields:
        crawlers = mapping(fields["crawlers"][1], crawlers_key, _CRAWLER_KEYS, ctx) or {}
    if "https_redirect" in fields:  # its line, for the loader's check of a TLS listener
        ctx.lines[join_key(parent, "https_redirect")] = line_of(fields["https_redirect"][0])
    return Shared(
        present=frozenset(fields),
        daily_cap=get_field(fields, "daily_cap", parent, read_size, ctx),
        cap=get_field(fields, "cap", parent, read_size, ctx),
        period=get_field(fields, "period", parent, read_period, ctx),
        week_starts=get_field(fields, "week_starts", parent, read_weekday, ctx),
        timezone=get_field(fields, "timezone", parent, read_timezone, ctx),
        reset_at=get_field(fields, "reset_at", parent, read_reset_at, ctx),
        count=get_field(fields, "count", parent, read_count, ctx),
        at_cap=get_field(fields, "at_cap", parent, read_at_cap, ctx),
        status=get_field(notice, "status", notice_key, read_status, ctx),
        template=get_field(notice, "template", notice_key, read_template, ctx),
        topup_url=get_field(notice, "topup_url", notice_key, read_link, ctx),
        topup_text=get_field(notice, "topup_text", notice_key, read_text, ctx),
        exempt_paths=get_field(fields, "exempt_paths", parent, read_exempt_paths, ctx),
        exempt_clients=get_field(fields, "exempt_clients", parent, read_networks, ctx),
        on_store_failure=get_field(fields, "on_store_failure", parent, read_on_store_failure, ctx),
        warn_at=get_field(fields, "warn_at", parent, read_warn_at, ctx),
        forecast_window=get_field(fields, "forecast_window", parent, read_duration, ctx),
        enforce=get_field(fields, "enforce", parent, read_switch, ctx),
        admission=get_field(fields, "admission", parent, read_switch, ctx),
        large_size=get_field(large, "size", large_key, read_size, ctx),
        large_from=get_field(large, "from", large_key, read_share, ctx),
        pacing_from=get_field(pacing, "from", pacing_key, read_share, ctx),
        pacing_floor=get_field(pacing, "floor", pacing_key, read_floor, ctx),
        client_share=get_field(fields, "client_share", parent, read_part, ctx),
        crawler_share=get_field(crawlers, "share", crawlers_key, read_share, ctx),
        crawler_agents=get_field(crawlers, "agents", crawlers_key, read_agents, ctx),
        crawler_clients=get_field(crawlers, "clients", crawlers_key, read_networks, ctx),
        https_redirect=get_field(fields, "https_redirect", parent, read_switch, ctx),
        hsts=get_field(fields, "hsts", parent, read_hsts, ctx),
    )


def large_of(own: Shared, defaults: Shared, line: int, path: str, ctx: Ctx) -> LargeConfig | None:
    """The tenant's ``large`` (its own keys over the defaults'), or None: off."""
    size = first(own.large_size, defaults.large_size)
    share = first(own.large_from, defaults.large_from)
    if size is None:
        if share is not None:
            ctx.error(line, f"{path}.large.size", "required key missing (here or in defaults)")
        return None
    return _shared_large(size, DEFAULT_LARGE_FROM if share is None else share)


@functools.lru_cache(maxsize=256)
def _shared_large(size: int, share: float) -> LargeConfig:
    """One object per distinct setting, shared by the tenants that have it."""
    return LargeConfig(size, share)


def pacing_of(own: Shared, defaults: Shared) -> PacingConfig | None:
    """The tenant's ``pacing`` (its own keys over the defaults'), or None: off."""
    if "pacing" not in own.present and "pacing" not in defaults.present:
        return None
    share = first(own.pacing_from, defaults.pacing_from)
    floor = first(own.pacing_floor, defaults.pacing_floor)
    return _shared_pacing(
        DEFAULT_PACING_FROM if share is None else share, floor or DEFAULT_PACING_FLOOR
    )


@functools.lru_cache(maxsize=256)
def _shared_pacing(share: float, floor: int) -> PacingConfig:
    return PacingConfig(share, floor)


def crawlers_of(own: Shared, defaults: Shared) -> CrawlerConfig | None:
    """The tenant's ``crawlers`` (its own keys over the defaults'), or None: off."""
    if "crawlers" not in own.present and "crawlers" not in defaults.present:
        return None
    agents = first(own.crawler_agents, defaults.crawler_agents)
    return _shared_crawlers(
        first(own.crawler_share, defaults.crawler_share),
        DEFAULT_CRAWLER_AGENTS if agents is None else agents,
        first(own.crawler_clients, defaults.crawler_clients) or (),
    )


@functools.lru_cache(maxsize=256)
def _shared_crawlers(
    share: float | None, agents: tuple[str, ...], clients: tuple[Network, ...]
) -> CrawlerConfig:
    return CrawlerConfig(share, agents, clients)


def period_caps(
    own: Shared, defaults: Shared, fields: Fields, line: int, path: str, ctx: Ctx
) -> tuple[PeriodKind, int, int | None] | None:
    """The tenant's period, its cap, and a daily guard within a week or a month.

    ``cap`` is the period's cap (``daily_cap`` is its spelling for a day; both at once, in
    one place, is an error). A weekly or monthly tenant needs ``cap``, and its
    ``daily_cap``, if any, is a cap on each day within the period.
    """
    for where, shared in ((path, own), ("defaults", defaults)):
        if {"cap", "daily_cap"} <= shared.present and (shared.period or "day") == "day":
            ctx.error(
                line if where == path else None,
                join_key(where, "cap"),
                "cap and daily_cap both set: daily_cap is the day's spelling of cap, keep one",
            )
    period: PeriodKind = first(own.period, defaults.period) or "day"
    if period == "day":
        cap = first(first(own.cap, own.daily_cap), first(defaults.cap, defaults.daily_cap))
        if cap is None and not {"cap", "daily_cap"} & (set(fields) | defaults.present):
            ctx.error(
                line, join_key(path, "daily_cap"), "required key missing (here or in defaults)"
            )
        return None if cap is None else (period, cap, None)
    cap = first(own.cap, defaults.cap)
    if cap is None:
        if "cap" not in fields and "cap" not in defaults.present:
            ctx.error(
                line,
                join_key(path, "cap"),
                f"required for a {period}ly period (here or in defaults)",
            )
        return None
    guard = first(own.daily_cap, defaults.daily_cap)
    return period, cap, guard


def first(value: T | None, fallback: T | None) -> T | None:
    """``value`` unless it is None, else ``fallback``."""
    return fallback if value is None else value
