"""One reader per kind of config value: each returns the value, or None after reporting why.

Functions of a YAML node; the only I/O is reading a notice template or a token file that
the config names.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from governor.config.composer import Node
from governor.config.model import (
    NOTICE_STATUSES,
    AtCap,
    ClientForm,
    CountMode,
    LogFormat,
    OnStoreFailure,
    PeriodKind,
)
from governor.config.nodes import Ctx, T, items_of, scalar
from governor.config.notice_template import PLACEHOLDERS, validate_template
from governor.sizes import parse_duration, parse_size

DEFAULT_STORE: Final = "sqlite:///state/usage.db"

DURATION_KEYS: Final = (
    "upstream_connect",
    "upstream_response",
    "keepalive",
    "shutdown",
    "request_header",
    "websocket_idle",
    "send",
    "tls_handshake",
)
HEAD_SIZE_KEYS: Final = ("request_line", "header_field", "header_total")
HEAD_SIZE_MAX: Final = 2**20  # a request head larger than 1 MiB is no sane limit
COUNT_MAX: Final = 10_000_000
SHARED_KEYS: Final = (
    "daily_cap",
    "cap",
    "period",
    "week_starts",
    "timezone",
    "reset_at",
    "count",
    "at_cap",
    "notice",
    "exempt_paths",
    "exempt_clients",
    "on_store_failure",
    "warn_at",
    "forecast_window",
    "enforce",
    "admission",
    "large",
    "pacing",
    "client_share",
    "crawlers",
    "https_redirect",
    "hsts",
)
_COUNT_MODES: Final[dict[str, CountMode]] = {
    "egress": "egress",
    "ingress": "ingress",
    "both": "both",
}
_AT_CAP_MODES: Final[dict[str, AtCap]] = {"finish": "finish", "cut": "cut"}
_STORE_FAILURE_MODES: Final[dict[str, OnStoreFailure]] = {"open": "open", "closed": "closed"}
_CLIENT_FORMS: Final[dict[str, ClientForm]] = {
    "truncated": "truncated",
    "hashed": "hashed",
    "full": "full",
}
_SWITCH: Final[dict[str, bool]] = {"on": True, "off": False, "true": True, "false": False}
DEFAULT_SPOOL: Final = "state/spool.json"

_WHOLE: Final = re.compile(r"\+?[0-9]{1,18}", re.ASCII)
_RESET_AT: Final = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?", re.ASCII)


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


def read_duration_or_zero(node: Node, key: str, ctx: Ctx) -> float | None:
    """A duration; 0 means none."""
    text = scalar(node, key, "a duration such as 5s, or 0 for none", ctx)
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        ctx.error(node, key, str(exc))
        return None


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


# A hundred years: the prune's cutoff date and the store's key expiry must stay in range.
MAX_HISTORY_DAYS: Final = 36_600


def read_history_days(node: Node, key: str, ctx: Ctx) -> int | None:
    text = scalar(node, key, "a whole number of days", ctx)
    if text is None:
        return None
    if not _WHOLE.fullmatch(text) or not 1 <= int(text) <= MAX_HISTORY_DAYS:
        ctx.error(node, key, f"{text!r} is not a whole number of days from 1 to {MAX_HISTORY_DAYS}")
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


_PERIODS: Final[dict[str, PeriodKind]] = {"day": "day", "week": "week", "month": "month"}
_WEEKDAYS: Final = {
    name: i
    for i, name in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}


def read_period(node: Node, key: str, ctx: Ctx) -> PeriodKind | None:
    return _choice(node, key, _PERIODS, ctx)


def read_weekday(node: Node, key: str, ctx: Ctx) -> int | None:
    return _choice(node, key, _WEEKDAYS, ctx)


def read_on_store_failure(node: Node, key: str, ctx: Ctx) -> OnStoreFailure | None:
    return _choice(node, key, _STORE_FAILURE_MODES, ctx)


def read_switch(node: Node, key: str, ctx: Ctx) -> bool | None:
    """``on`` or ``off`` (``true`` and ``false`` too)."""
    return _choice(node, key, _SWITCH, ctx)


def _share(text: str) -> float:
    """``80%`` or ``0.8`` as a number; -1.0 when it is neither."""
    raw = text.strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        return -1.0


def read_share(node: Node, key: str, ctx: Ctx) -> float | None:
    """A share of the cap from 0 up to (not including) 1: ``90%`` or ``0.9``."""
    text = scalar(node, key, "a share of the cap like 90% or 0.9", ctx)
    if text is None:
        return None
    share = _share(text)
    if not 0 <= share < 1:
        ctx.error(node, key, f"{text!r}: expected a share of the cap like 90% or 0.9 (below 100%)")
        return None
    return share


def read_part(node: Node, key: str, ctx: Ctx) -> float | None:
    """A share of the cap above 0 and up to (not including) 1: ``10%`` or ``0.1``."""
    text = scalar(node, key, "a share of the cap like 10% or 0.1", ctx)
    if text is None:
        return None
    share = _share(text)
    if not 0 < share < 1:
        ctx.error(node, key, f"{text!r}: expected a share of the cap above 0 and below 100%")
        return None
    return share


def read_floor(node: Node, key: str, ctx: Ctx) -> int | None:
    """A rate above zero: ``64 KiB/s``."""
    rate = read_rate(node, key, ctx)
    if rate == 0:
        ctx.error(node, key, "a floor must be above zero, e.g. 64 KiB/s")
        return None
    return rate


def read_agents(node: Node, key: str, ctx: Ctx) -> tuple[str, ...] | None:
    """User-Agent substrings, kept in lower case; an empty one would match every request."""
    items = items_of(node, key, ("a User-Agent substring", "User-Agent substrings"), ctx)
    if items is None:
        return None
    ok = True
    for item, item_key, text in items:
        if not text.strip():
            ctx.error(item, item_key, "an empty User-Agent substring would match every request")
            ok = False
    return tuple(dict.fromkeys(text.strip().lower() for _, _, text in items)) if ok else None


def read_warn_at(node: Node, key: str, ctx: Ctx) -> tuple[float, ...] | None:
    items = items_of(node, key, ("a share of the cap", "shares of the cap, e.g. [80%, 95%]"), ctx)
    if items is None:
        return None
    shares: list[float] = []
    for item, item_key, text in items:
        share = _share(text)
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


_LOG_FORMATS: Final[dict[str, LogFormat]] = {"plain": "plain", "json": "json"}


def read_log_format(node: Node, key: str, ctx: Ctx) -> LogFormat | None:
    return _choice(node, key, _LOG_FORMATS, ctx)


def read_text(node: Node, key: str, ctx: Ctx) -> str | None:
    """A short line of text (1 to 200 characters, one line)."""
    text = scalar(node, key, "a line of text", ctx)
    if text is None:
        return None
    if not text.strip() or len(text) > 200 or "\n" in text:
        ctx.error(node, key, "expected one line of 1 to 200 characters")
        return None
    return text.strip()


def read_top_clients(node: Node, key: str, ctx: Ctx) -> ClientForm | None:
    return _choice(node, key, _CLIENT_FORMS, ctx)


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
