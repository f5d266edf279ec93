"""Content negotiation for governor's own answers: JSON or HTML, Korean or English.

* :func:`wants_json` picks JSON when ``application/json`` is preferred over
  ``text/html`` by q-value (ties go to JSON only when the client named JSON more
  specifically than HTML, e.g. ``application/json, */*``; otherwise HTML).
* :func:`choose_language` picks ``"ko"`` or ``"en"`` from ``Accept-Language``
  (q-values, ``q=0`` excludes, English by default).
"""

from __future__ import annotations

import re
from typing import Final

LANGUAGES: Final = ("en", "ko")  # supported; the first is the default
_DEFAULT_LANGUAGE: Final = "en"

_QVALUE: Final = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
_LANGUAGE_RANGE: Final = re.compile(r"(?:\*|[a-z]{1,8}(?:-[a-z0-9]{1,8})*)\Z")
_TOKEN: Final = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_RANGE: Final = re.compile(rf"({_TOKEN})/({_TOKEN})\Z")


def _parse_weighted(header: str) -> list[tuple[str, float]]:
    """Split an ``Accept``-style list into (lower-cased value, q), in order.

    Elements whose q-value is malformed are dropped, as are empty elements.
    Parameters other than ``q`` are discarded (they do not affect the choice here).
    """
    out: list[tuple[str, float]] = []
    for element in header.split(","):
        value, *params = (part.strip() for part in element.split(";"))
        if not value:
            continue
        q = 1.0
        for param in params:
            name, sep, raw = param.partition("=")
            if name.strip().lower() != "q":
                continue
            raw = raw.strip()
            if not sep or not _QVALUE.match(raw):
                break
            q = float(raw)
        else:
            out.append((value.lower(), q))
    return out


def choose_language(accept_language: str | None) -> str:
    """``"ko"`` or ``"en"``, whichever the visitor prefers (RFC 9110 section 12.5.4).

    For each supported language the most specific matching range decides its
    weight: ``ko`` itself, else the best of ``ko-*`` ranges (``ko-KR``), else
    ``*``. ``q=0`` excludes. Equal weights go to the one listed first; with
    nothing acceptable (missing, ``*``, unsupported only) the answer is English.
    """
    if not accept_language:
        return _DEFAULT_LANGUAGE
    exact: dict[str, tuple[float, int]] = {}
    sub: dict[str, tuple[float, int]] = {}
    star: tuple[float, int] | None = None
    for position, (tag, q) in enumerate(_parse_weighted(accept_language)):
        if not _LANGUAGE_RANGE.match(tag):
            continue
        if tag == "*":
            star = star or (q, position)
            continue
        primary, _, rest = tag.partition("-")
        if primary not in LANGUAGES:
            continue
        if not rest:
            exact.setdefault(primary, (q, position))
        elif primary not in sub or q > sub[primary][0]:
            sub[primary] = (q, position)

    best = _DEFAULT_LANGUAGE
    best_key = (0.0, 0, 0)
    for lang in LANGUAGES:
        weight = exact.get(lang) or sub.get(lang) or star
        if weight is None or weight[0] <= 0:
            continue
        q, position = weight
        key = (q, -position, int(lang == _DEFAULT_LANGUAGE))
        if key > best_key:
            best, best_key = lang, key
    return best


def _media_weight(
    ranges: list[tuple[str, str, float]], type_: str, subtype: str
) -> tuple[float, int]:
    """(q, specificity) of the most specific range matching ``type_/subtype``."""
    found: tuple[float, int] = (0.0, -1)
    for rtype, rsub, q in ranges:
        if rtype == type_ and rsub == subtype:
            specificity = 2
        elif rtype == type_ and rsub == "*":
            specificity = 1
        elif rtype == "*" and rsub == "*":
            specificity = 0
        else:
            continue
        if specificity > found[1] or (specificity == found[1] and q > found[0]):
            found = (q, specificity)
    return found


def wants_json(accept: str | None) -> bool:
    """True when ``application/json`` is preferred over ``text/html`` (RFC 9110 section 12.5.1).

    Each type's q comes from its most specific matching range. JSON wins on a
    higher q, or on an equal q when it was named more specifically than HTML
    (``application/json, */*``). ``*/*``, a missing header, and exact ties
    serve HTML.
    """
    if not accept:
        return False
    ranges: list[tuple[str, str, float]] = []
    for value, q in _parse_weighted(accept):
        m = _MEDIA_RANGE.match(value)
        if m is None or (m[1] == "*" and m[2] != "*"):
            continue
        ranges.append((m[1], m[2], q))
    json_q, json_spec = _media_weight(ranges, "application", "json")
    html_q, html_spec = _media_weight(ranges, "text", "html")
    if json_q <= 0:
        return False
    return (json_q, json_spec) > (html_q, html_spec)
