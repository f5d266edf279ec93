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

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template
from typing import Final

from governor.config import NOTICE_STATUSES
from governor.config.notice_template import PLACEHOLDERS, operator_template, validate_template
from governor.proxy.negotiation import choose_language, wants_json
from governor.proxy.wording import (
    JSON_ERRORS,
    PERIOD_WORD,
    TOPUP_TEXT,
    VARIANT_STATUS,
    WORDING,
    Derived,
    NoticeFacts,
    Variant,
    derive,
    left_of,
    message_en,
)

__all__ = [
    "PLACEHOLDERS",
    "NoticeFacts",
    "RenderedNotice",
    "Variant",
    "choose_language",
    "render_notice",
    "validate_template",
    "wants_json",
]

_STATUSES: Final = frozenset(NOTICE_STATUSES)  # the statuses a notice may be served with


@dataclass(frozen=True, slots=True)
class RenderedNotice:
    """A ready response: write the status, the headers, then the body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


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
$topup</main>
</body>
</html>
"""
)


# --------------------------------------------------------------------------- rendering


def _placeholder_values(facts: NoticeFacts, d: Derived, lang: str) -> dict[str, str]:
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
        "topup_url": facts.topup_url or "",
    }


def _topup(facts: NoticeFacts, lang: str) -> str:
    """The top-up link's paragraph (escaped), or nothing."""
    if facts.topup_url is None:
        return ""
    text = facts.topup_text or TOPUP_TEXT.get(lang, TOPUP_TEXT["en"])
    url = html.escape(facts.topup_url, quote=True)
    return f'<p class="topup"><a href="{url}">{html.escape(text)}</a></p>\n'


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
    "cap" notice. The other variants always have the built-in wording and their own
    status: 429 for "client_share", 503 for the rest.
    For ``HEAD`` the body is empty and ``Content-Length`` is the GET body's length.
    """
    if status not in _STATUSES:
        raise ValueError(f"notice status must be one of {sorted(_STATUSES)}, not {status}")
    d = derive(facts)
    lang = choose_language(accept_language)
    if variant != "cap":
        status, template = VARIANT_STATUS[variant], None
    wording = WORDING[variant]

    headers: list[tuple[str, str]]
    as_json = wants_json(accept)
    if as_json:
        document: dict[str, object] = {
            "error": f"{PERIOD_WORD[facts.period]}_transfer_limit_exceeded",
            "period": facts.period,
            "tenant": facts.tenant,
            "host": facts.host,
            "used_bytes": facts.used_bytes,
            "cap_bytes": facts.cap_bytes,
            "resets_at": d.resets_at_iso,
            "retry_after": d.retry_after,
            "message": message_en(d, facts.period),
        }
        if variant != "cap":
            strings = wording("en", facts, d)
            document["error"] = JSON_ERRORS[variant]
            document["message"] = f"{strings['exhausted']} {strings['reopen']}"
        if variant == "admission":
            document["response_bytes"] = facts.response_bytes
            document["remaining_bytes"] = left_of(facts)
        if facts.topup_url is not None and variant != "crawler":
            document["topup_url"] = facts.topup_url
            document["topup_text"] = facts.topup_text or TOPUP_TEXT["en"]
        body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        headers = [("Content-Type", "application/json")]
    else:
        values = _placeholder_values(facts, d, lang)
        if template is None:
            values |= wording(lang, facts, d)
            text = _BUILTIN.substitute(
                _escaped(values),
                style=_STYLE,
                topup="" if variant == "crawler" else _topup(facts, lang),
            )
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
