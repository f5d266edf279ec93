"""The blocked notice: facts in, a ready response (status, headers, body) out.

This module is pure: no aiohttp, no I/O, no clock. The proxy gathers the facts
(:class:`NoticeFacts`, including ``now``), calls :func:`render_notice` with the
request's ``Accept`` / ``Accept-Language`` / method, and writes the
:class:`RenderedNotice` as is.

JSON or HTML, Korean or English: :mod:`governor.proxy.negotiation`.

An operator template (``string.Template`` text with ``$``-placeholders, see
:data:`PLACEHOLDERS`) replaces the built-in HTML; every substituted value is
HTML-escaped, and :func:`validate_template` lists unknown placeholders so the
config loader can reject typos. HTML comments in a template are the operator's notes:
they are removed before anything is substituted or sent, so no visitor sees them
(and a placeholder named in one is neither filled in nor checked).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template
from typing import Final, Literal

from governor.config import NOTICE_STATUSES
from governor.config.notice_template import PLACEHOLDERS, operator_template, validate_template
from governor.proxy.negotiation import choose_language, wants_json
from governor.sizes import format_size

__all__ = [
    "PLACEHOLDERS",
    "NoticeFacts",
    "RenderedNotice",
    "choose_language",
    "render_notice",
    "validate_template",
    "wants_json",
]

_STATUSES: Final = frozenset(NOTICE_STATUSES)  # the statuses a notice may be served with

# "cap": the tenant's notice (at its cap, or nearly, see core.policy.as_good_as_out);
# "large": large files are paused from large.from on, pages go on; "admission": this
# response is larger than what is left (both built-in wording, always 503).
Variant = Literal["cap", "large", "admission"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeFacts:
    """Everything a notice says, gathered by the proxy."""

    tenant: str
    host: str  # the Host the visitor asked for, for display
    used_bytes: int
    cap_bytes: int
    resets_at: dt.datetime  # aware, in the tenant's time zone
    now: float  # Unix time, to compute Retry-After
    response_bytes: int | None = None  # the "admission" notice's: the refused Content-Length

    def __post_init__(self) -> None:
        if self.resets_at.utcoffset() is None:
            raise ValueError("NoticeFacts.resets_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class RenderedNotice:
    """A ready response: write the status, the headers, then the body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


# --------------------------------------------------------------------------- formatting


def _retry_after(facts: NoticeFacts) -> int:
    """Whole seconds until the reset, rounded up, at least 1."""
    return max(1, math.ceil(facts.resets_at.timestamp() - facts.now))


def _zone_name(when: dt.datetime) -> str:
    """The IANA key (``Asia/Seoul``) when known, else the zone's abbreviation or offset."""
    key = getattr(when.tzinfo, "key", None)
    if isinstance(key, str) and key:
        return key
    return when.tzname() or _utc_offset(when)


def _utc_offset(when: dt.datetime) -> str:
    """``UTC+09:00``, ``UTC-04:00``, ``UTC+05:30``."""
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{mins:02d}"


def _duration_en(seconds: int) -> str:
    if seconds < 60:
        return "in less than a minute"
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if minutes:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return "in " + " ".join(parts)


def _duration_ko(seconds: int) -> str:
    if seconds < 60:
        return "1분 이내"
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    parts = []
    if hours:
        parts.append(f"{hours}시간")
    if minutes:
        parts.append(f"{minutes}분")
    return " ".join(parts) + " 후"


@dataclass(frozen=True, slots=True)
class _Derived:
    """The facts, formatted once for every output."""

    retry_after: int
    used: str
    cap: str
    resets_at_iso: str
    resets_at_local: str  # "2024-02-22 00:00 KST"
    date: str  # "2024-02-22"
    time: str  # "00:00"
    zone: str  # "Asia/Seoul, UTC+09:00"
    timezone: str  # "Asia/Seoul"


def _derive(facts: NoticeFacts) -> _Derived:
    when = facts.resets_at
    timezone = _zone_name(when)
    abbreviation = when.tzname() or _utc_offset(when)
    return _Derived(
        retry_after=_retry_after(facts),
        used=format_size(facts.used_bytes),
        cap=format_size(facts.cap_bytes),
        resets_at_iso=when.isoformat(timespec="seconds"),
        resets_at_local=f"{when:%Y-%m-%d %H:%M} {abbreviation}",
        date=f"{when:%Y-%m-%d}",
        time=f"{when:%H:%M}",
        zone=f"{timezone}, {_utc_offset(when)}",
        timezone=timezone,
    )


def _reopen_en(d: _Derived) -> str:
    return f"It will reopen at {d.time} ({d.zone}) on {d.date}, {_duration_en(d.retry_after)}."


def _message_en(d: _Derived) -> str:
    return f"This site has used its daily data-transfer allowance. {_reopen_en(d)}"


# --------------------------------------------------------------------------- built-in HTML

_STYLE: Final = """\
:root{color-scheme:light dark;--bg:#f6f7f9;--card:#fff;--fg:#1d2330;--muted:#5a6475;\
--line:#dde1e7;--accent:#b4400a}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--card:#1d2128;--fg:#e8ebf0;\
--muted:#a3acb9;--line:#343a44;--accent:#ff9d5c}}
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;\
padding:1.5rem;background:var(--bg);color:var(--fg);line-height:1.6;\
font-family:system-ui,-apple-system,"Segoe UI","Apple SD Gothic Neo","Malgun Gothic",\
"Noto Sans KR",Roboto,sans-serif}
main{max-width:34rem;width:100%;background:var(--card);border:1px solid var(--line);\
border-radius:.75rem;padding:2rem}
:lang(ko){word-break:keep-all;overflow-wrap:break-word}
h1{margin:0 0 1rem;font-size:1.5rem;line-height:1.3}
p{margin:0 0 1rem}
.reopen{font-weight:600;color:var(--accent)}
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;margin:1.5rem 0;\
padding:1rem 0;border-top:1px solid var(--line);border-bottom:1px solid var(--line)}
dt{color:var(--muted)}
dd{margin:0;font-variant-numeric:tabular-nums}
.hint{color:var(--muted);font-size:.95rem;margin:0}"""

_BUILTIN: Final = Template(
    """\
<!doctype html>
<html lang="$lang">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>$title</title>
<style>
$style
</style>
</head>
<body>
<main>
<h1>$heading</h1>
<p>$exhausted</p>
<p class="reopen">$reopen</p>
<dl>
<dt>$site_label</dt><dd>$host</dd>
<dt>$used_label</dt><dd>$used</dd>
<dt>$cap_label</dt><dd>$cap</dd>
</dl>
<p class="hint">$hint</p>
</main>
</body>
</html>
"""
)


def _large_strings(lang: str, facts: NoticeFacts, d: _Derived) -> dict[str, str]:
    """The "large" notice's wording in ``lang`` (raw text; escaped later)."""
    if lang == "ko":
        return {
            "title": f"큰 파일 전송 일시 중지 — {facts.host}",
            "heading": "큰 파일은 잠시 내려받을 수 없습니다",
            "exhausted": (
                "이 사이트의 오늘 데이터 전송 허용량이 얼마 남지 않아, 큰 파일은 허용량이 "
                "초기화될 때까지 멈춰 두었습니다. 사이트의 페이지는 계속 이용하실 수 있습니다."
            ),
            "reopen": (
                f"큰 파일은 {d.date} {d.time} ({d.zone})부터 다시 받을 수 있습니다. "
                f"지금부터 {_duration_ko(d.retry_after)}입니다."
            ),
            "site_label": "사이트",
            "used_label": "오늘 사용량",
            "cap_label": "일일 허용량",
            "hint": "이 파일은 위 시각 이후에 다시 요청해 주세요.",
        }
    return {
        "title": f"Large files paused — {facts.host}",
        "heading": "Large files are paused until the reset",
        "exhausted": (
            "This site has little of its daily data-transfer allowance left, so large files "
            "are paused until it resets. The site's pages remain available."
        ),
        "reopen": f"Large files are available again at {d.time} ({d.zone}) on {d.date}, "
        f"{_duration_en(d.retry_after)}.",
        "site_label": "Site",
        "used_label": "Used today",
        "cap_label": "Daily allowance",
        "hint": "Please ask for this file again after the time above.",
    }


def _admission_strings(lang: str, facts: NoticeFacts, d: _Derived) -> dict[str, str]:
    """The "admission" notice's wording in ``lang`` (raw text; escaped later)."""
    size = format_size(facts.response_bytes or 0)
    left = format_size(max(facts.cap_bytes - facts.used_bytes, 0))
    if lang == "ko":
        return {
            "title": f"남은 전송 허용량보다 큰 파일 — {facts.host}",
            "heading": "오늘 남은 전송 허용량보다 큰 파일입니다",
            "exhausted": (
                f"이 파일({size})은 이 사이트의 오늘 남은 데이터 전송 허용량({left})보다 "
                "커서 보내 드리지 않았습니다. 더 작은 페이지와 파일은 계속 이용하실 수 있습니다."
            ),
            "reopen": (
                f"허용량은 {d.date} {d.time} ({d.zone})에 초기화됩니다. "
                f"지금부터 {_duration_ko(d.retry_after)}입니다."
            ),
            "site_label": "사이트",
            "used_label": "오늘 사용량",
            "cap_label": "일일 허용량",
            "hint": "위 시각 이후에 이 파일을 다시 요청해 주세요.",
        }
    return {
        "title": f"Larger than what is left today — {facts.host}",
        "heading": "This file is larger than what is left today",
        "exhausted": (
            f"This file ({size}) is larger than what is left of the site's daily "
            f"data-transfer allowance ({left}), so it was not started. "
            "Smaller pages and files still load."
        ),
        "reopen": f"The allowance resets at {d.time} ({d.zone}) on {d.date}, "
        f"{_duration_en(d.retry_after)}.",
        "site_label": "Site",
        "used_label": "Used today",
        "cap_label": "Daily allowance",
        "hint": "Please ask for this file again after the time above.",
    }


def _builtin_strings(lang: str, facts: NoticeFacts, d: _Derived) -> dict[str, str]:
    """The built-in template's wording in ``lang`` (raw text; escaped later)."""
    if lang == "ko":
        return {
            "title": f"일일 데이터 전송 한도 도달 — {facts.host}",
            "heading": "일일 데이터 전송 한도에 도달했습니다",
            "exhausted": "이 사이트는 오늘의 데이터 전송 허용량을 모두 사용했습니다.",
            "reopen": (
                f"{d.date} {d.time} ({d.zone})에 다시 열립니다. "
                f"지금부터 {_duration_ko(d.retry_after)}입니다."
            ),
            "site_label": "사이트",
            "used_label": "오늘 사용량",
            "cap_label": "일일 허용량",
            "hint": "따로 하실 일은 없습니다. 위 시각 이후에 다시 방문해 주세요.",
        }
    return {
        "title": f"Daily data limit reached — {facts.host}",
        "heading": "Daily data limit reached",
        "exhausted": "This site has used its daily data-transfer allowance.",
        "reopen": _reopen_en(d),
        "site_label": "Site",
        "used_label": "Used today",
        "cap_label": "Daily allowance",
        "hint": "There is nothing you need to do: please come back after the time above.",
    }


_WORDING = {"cap": _builtin_strings, "large": _large_strings, "admission": _admission_strings}
_JSON_ERRORS = {"large": "large_files_paused", "admission": "response_exceeds_remaining_allowance"}

# --------------------------------------------------------------------------- rendering


def _placeholder_values(facts: NoticeFacts, d: _Derived, lang: str) -> dict[str, str]:
    """The raw (unescaped) value of every public placeholder."""
    return {
        "tenant": facts.tenant,
        "host": facts.host,
        "used": d.used,
        "cap": d.cap,
        "used_bytes": str(facts.used_bytes),
        "cap_bytes": str(facts.cap_bytes),
        "resets_at": d.resets_at_iso,
        "resets_at_local": d.resets_at_local,
        "timezone": d.timezone,
        "retry_after": str(d.retry_after),
        "lang": lang,
    }


def _escaped(values: Mapping[str, str]) -> dict[str, str]:
    return {name: html.escape(value, quote=True) for name, value in values.items()}


def render_notice(
    facts: NoticeFacts,
    *,
    status: int,
    template: str | None,
    accept: str | None,
    accept_language: str | None,
    method: str = "GET",
    variant: Variant = "cap",
) -> RenderedNotice:
    """The complete notice response for one request.

    ``template`` is the operator's template text (None: the built-in one); it words the
    "cap" notice. The "large" and "admission" notices always have the built-in wording
    and status 503.
    For ``HEAD`` the body is empty and ``Content-Length`` is the GET body's length.
    """
    if status not in _STATUSES:
        raise ValueError(f"notice status must be one of {sorted(_STATUSES)}, not {status}")
    d = _derive(facts)
    lang = choose_language(accept_language)
    if variant != "cap":
        status, template = 503, None
    wording = _WORDING[variant]

    headers: list[tuple[str, str]]
    as_json = wants_json(accept)
    if as_json:
        document: dict[str, object] = {
            "error": "daily_transfer_limit_exceeded",
            "tenant": facts.tenant,
            "host": facts.host,
            "used_bytes": facts.used_bytes,
            "cap_bytes": facts.cap_bytes,
            "resets_at": d.resets_at_iso,
            "retry_after": d.retry_after,
            "message": _message_en(d),
        }
        if variant != "cap":
            strings = wording("en", facts, d)
            document["error"] = _JSON_ERRORS[variant]
            document["message"] = f"{strings['exhausted']} {strings['reopen']}"
        if variant == "admission":
            document["response_bytes"] = facts.response_bytes
            document["remaining_bytes"] = max(facts.cap_bytes - facts.used_bytes, 0)
        body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        headers = [("Content-Type", "application/json")]
    else:
        values = _placeholder_values(facts, d, lang)
        if template is None:
            values |= wording(lang, facts, d)
            text = _BUILTIN.substitute(_escaped(values), style=_STYLE)
        else:
            text = operator_template(template).safe_substitute(_escaped(values))
        body = text.encode("utf-8")
        headers = [("Content-Type", "text/html; charset=utf-8")]

    headers += [
        ("Content-Length", str(len(body))),
        ("Retry-After", str(d.retry_after)),
        ("Cache-Control", "no-store"),
    ]
    if not as_json:
        headers.append(("Content-Language", lang))
    headers.append(("Vary", "Accept, Accept-Language"))

    if method.upper() == "HEAD":
        body = b""
    return RenderedNotice(status, tuple(headers), body)
