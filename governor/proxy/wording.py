"""What a notice says: the facts the proxy gathers, and each variant's words, pure.

The variants and their wording (Korean and English) live here; :mod:`governor.proxy.notice`
renders them (HTML or JSON, the built-in page or the operator's template).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Final, Literal

from governor.config.model import PeriodKind
from governor.sizes import format_size

# "cap": the tenant's notice (at its cap, or nearly, see core.policy.as_good_as_out);
# "large": large files are paused from large.from on, pages go on; "admission": this
# response is larger than what is left; "client_share": this visitor used its share
# (429), the site goes on for others; "crawler": crawlers are paused (the crawlers'
# share is used, or the tenant is past large.from). All but "cap" have built-in wording.
Variant = Literal["cap", "large", "admission", "client_share", "crawler", "day"]


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
    # The "admission" notice's: what may still be sent (None: what is left of the cap).
    left_bytes: int | None = None
    period: PeriodKind = "day"  # the tenant's period: the words ("this month's allowance")
    topup_url: str | None = None  # where more allowance can be bought (notice.topup_url)
    topup_text: str | None = None  # its link text (None: the built-in one)

    def __post_init__(self) -> None:
        if self.resets_at.utcoffset() is None:
            raise ValueError("NoticeFacts.resets_at must be timezone-aware")


# --------------------------------------------------------------------------- formatting


def retry_after_of(facts: NoticeFacts) -> int:
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
class Derived:
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


def derive(facts: NoticeFacts) -> Derived:
    when = facts.resets_at
    timezone = _zone_name(when)
    abbreviation = when.tzname() or _utc_offset(when)
    return Derived(
        retry_after=retry_after_of(facts),
        used=format_size(facts.used_bytes),
        cap=format_size(facts.cap_bytes),
        resets_at_iso=when.isoformat(timespec="seconds"),
        resets_at_local=f"{when:%Y-%m-%d %H:%M} {abbreviation}",
        date=f"{when:%Y-%m-%d}",
        time=f"{when:%H:%M}",
        zone=f"{timezone}, {_utc_offset(when)}",
        timezone=timezone,
    )


def _reopen_en(d: Derived) -> str:
    return f"It will reopen at {d.time} ({d.zone}) on {d.date}, {_duration_en(d.retry_after)}."


# The top-up link's text (notice.topup_url) when the operator gives none.
TOPUP_TEXT: Final = {
    "en": "The site's owner can add allowance here",
    "ko": "사이트 운영자는 여기에서 전송 허용량을 추가할 수 있습니다",
}


def _reopen_ko(d: Derived) -> str:
    left = _duration_ko(d.retry_after)
    return f"{d.date} {d.time} ({d.zone})에 다시 열립니다. 지금부터 {left}입니다."


def _labels(lang: str, facts: NoticeFacts) -> dict[str, str]:
    """The notice's labels of the site, the period's use and its allowance."""
    if lang == "ko":
        return {
            "site_label": "사이트",
            "used_label": _USED_KO[facts.period],
            "cap_label": _CAP_KO[facts.period],
        }
    return {
        "site_label": "Site",
        "used_label": _USED_EN[facts.period],
        "cap_label": _CAP_EN[facts.period],
    }


def message_en(d: Derived, period: PeriodKind = "day") -> str:
    what = _ADJ_EN[period].lower()
    return f"This site has used its {what} data-transfer allowance. {_reopen_en(d)}"


# The words of each period, in English and Korean.
_ADJ_EN: Final[dict[PeriodKind, str]] = {"day": "Daily", "week": "Weekly", "month": "Monthly"}
_USED_EN: Final[dict[PeriodKind, str]] = {
    "day": "Used today",
    "week": "Used this week",
    "month": "Used this month",
}
_CAP_EN: Final = {k: f"{v} allowance" for k, v in _ADJ_EN.items()}
PERIOD_WORD: Final = {k: v.lower() for k, v in _ADJ_EN.items()}  # "daily", "weekly", "monthly"
_ADJ_KO: Final[dict[PeriodKind, str]] = {"day": "일일", "week": "주간", "month": "월간"}
_OF_KO: Final[dict[PeriodKind, str]] = {"day": "오늘의", "week": "이번 주의", "month": "이번 달의"}
_USED_KO: Final[dict[PeriodKind, str]] = {
    "day": "오늘 사용량",
    "week": "이번 주 사용량",
    "month": "이번 달 사용량",
}
_CAP_KO: Final = {k: f"{v} 허용량" for k, v in _ADJ_KO.items()}


def _day_strings(lang: str, facts: NoticeFacts, d: Derived) -> dict[str, str]:
    """The "day" notice: a weekly or monthly tenant used today's part (its daily_cap)."""
    if lang == "ko":
        return {
            "title": f"오늘의 전송 한도 도달 — {facts.host}",
            "heading": "오늘 사용할 수 있는 전송량을 모두 사용했습니다",
            "exhausted": (
                f"이 사이트의 {_ADJ_KO[facts.period]} 허용량에는 하루 한도가 있으며, "
                "오늘의 한도를 모두 사용했습니다."
            ),
            "reopen": _reopen_ko(d),
            **_labels("ko", facts),
            "hint": "따로 하실 일은 없습니다. 위 시각 이후에 다시 방문해 주세요.",
        }
    return {
        "title": f"Today's data limit reached — {facts.host}",
        "heading": "Today's data limit reached",
        "exhausted": (
            f"This site's {_ADJ_EN[facts.period].lower()} data-transfer allowance has a daily "
            "limit, and today's is used."
        ),
        "reopen": _reopen_en(d),
        **_labels("en", facts),
        "hint": "There is nothing you need to do: please come back after the time above.",
    }


def _large_strings(lang: str, facts: NoticeFacts, d: Derived) -> dict[str, str]:
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
            **_labels("ko", facts),
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
        **_labels("en", facts),
        "hint": "Please ask for this file again after the time above.",
    }


def _admission_strings(lang: str, facts: NoticeFacts, d: Derived) -> dict[str, str]:
    """The "admission" notice's wording in ``lang`` (raw text; escaped later)."""
    size = format_size(facts.response_bytes or 0)
    left = format_size(left_of(facts))
    if lang == "ko":
        return {
            "title": f"남은 전송 허용량보다 큰 파일 — {facts.host}",
            "heading": "오늘 남은 전송 허용량보다 큰 파일입니다",
            "exhausted": (
                f"이 파일({size})은 이 사이트가 오늘 보내 드릴 수 있는 남은 전송량({left})보다 "
                "커서 보내 드리지 않았습니다. 더 작은 페이지와 파일은 계속 이용하실 수 있습니다."
            ),
            "reopen": (
                f"허용량은 {d.date} {d.time} ({d.zone})에 초기화됩니다. "
                f"지금부터 {_duration_ko(d.retry_after)}입니다."
            ),
            **_labels("ko", facts),
            "hint": "위 시각 이후에 이 파일을 다시 요청해 주세요.",
        }
    return {
        "title": f"Larger than what is left today — {facts.host}",
        "heading": "This file is larger than what is left today",
        "exhausted": (
            f"This file ({size}) is larger than what is left of the site's daily "
            f"data-transfer allowance for you ({left}), so it was not started. "
            "Smaller pages and files still load."
        ),
        "reopen": f"The allowance resets at {d.time} ({d.zone}) on {d.date}, "
        f"{_duration_en(d.retry_after)}.",
        **_labels("en", facts),
        "hint": "Please ask for this file again after the time above.",
    }


def left_of(facts: NoticeFacts) -> int:
    """What may still be sent: the facts' own figure, else what is left of the cap."""
    if facts.left_bytes is not None:
        return max(facts.left_bytes, 0)
    return max(facts.cap_bytes - facts.used_bytes, 0)


def _client_share_strings(lang: str, facts: NoticeFacts, d: Derived) -> dict[str, str]:
    """The "client_share" notice's wording in ``lang`` (raw text; escaped later)."""
    if lang == "ko":
        return {
            "title": f"방문자별 전송 허용량 소진 — {facts.host}",
            "heading": "오늘 이용하실 수 있는 전송량을 모두 사용하셨습니다",
            "exhausted": (
                "이 사이트는 하루 데이터 전송 허용량을 방문자들이 나누어 쓰며, 이 주소에서의 "
                "접속은 오늘 몫을 모두 사용했습니다. 사이트는 다른 방문자에게 계속 열려 있습니다."
            ),
            "reopen": (
                f"{d.date} {d.time} ({d.zone})부터 다시 이용하실 수 있습니다. "
                f"지금부터 {_duration_ko(d.retry_after)}입니다."
            ),
            "site_label": "사이트",
            "used_label": "사이트의 오늘 사용량",
            "cap_label": "일일 허용량",
            "hint": "회사나 학교처럼 여러 사람이 같은 주소를 쓰면 그분들께도 함께 적용됩니다.",
        }
    return {
        "title": f"Your share of this site's allowance is used — {facts.host}",
        "heading": "You have used your share of today's allowance",
        "exhausted": (
            "This site shares its daily data-transfer allowance among its visitors, and "
            "your address has used its share for today. The site stays open to others."
        ),
        "reopen": f"You can use the site again at {d.time} ({d.zone}) on {d.date}, "
        f"{_duration_en(d.retry_after)}.",
        "site_label": "Site",
        "used_label": "Site's use today",
        "cap_label": "Daily allowance",
        "hint": "If others share your address (an office or a school), this applies to them too.",
    }


def _crawler_strings(lang: str, facts: NoticeFacts, d: Derived) -> dict[str, str]:
    """The "crawler" notice's wording in ``lang`` (raw text; escaped later)."""
    if lang == "ko":
        return {
            "title": f"자동 수집 일시 중지 — {facts.host}",
            "heading": "자동 수집(크롤러)은 초기화 시각까지 멈춰 두었습니다",
            "exhausted": (
                "이 사이트의 오늘 데이터 전송 허용량이 부족해, 사람이 계속 이용할 수 있도록 "
                "크롤러와 자동 수집 프로그램을 잠시 멈춰 두었습니다."
            ),
            "reopen": (
                f"{d.date} {d.time} ({d.zone})부터 다시 수집할 수 있습니다. "
                f"지금부터 {_duration_ko(d.retry_after)}입니다."
            ),
            **_labels("ko", facts),
            "hint": "Retry-After 헤더가 기다릴 시간(초)을 알려 줍니다. 브라우저 이용자에게는 "
            "해당되지 않습니다.",
        }
    return {
        "title": f"Crawlers paused — {facts.host}",
        "heading": "Automated crawling is paused until the reset",
        "exhausted": (
            "This site's daily data-transfer allowance is running short, so crawlers and "
            "other automated clients are paused to keep the site available to people."
        ),
        "reopen": f"Crawling may resume at {d.time} ({d.zone}) on {d.date}, "
        f"{_duration_en(d.retry_after)}.",
        **_labels("en", facts),
        "hint": "Retry-After gives the seconds to wait. People using a browser are not affected.",
    }


def _builtin_strings(lang: str, facts: NoticeFacts, d: Derived) -> dict[str, str]:
    """The built-in template's wording in ``lang`` (raw text; escaped later)."""
    if lang == "ko":
        return {
            "title": f"{_ADJ_KO[facts.period]} 데이터 전송 한도 도달 — {facts.host}",
            "heading": f"{_ADJ_KO[facts.period]} 데이터 전송 한도에 도달했습니다",
            "exhausted": (
                f"이 사이트는 {_OF_KO[facts.period]} 데이터 전송 허용량을 모두 사용했습니다."
            ),
            "reopen": _reopen_ko(d),
            **_labels("ko", facts),
            "hint": "따로 하실 일은 없습니다. 위 시각 이후에 다시 방문해 주세요.",
        }
    return {
        "title": f"{_ADJ_EN[facts.period]} data limit reached — {facts.host}",
        "heading": f"{_ADJ_EN[facts.period]} data limit reached",
        "exhausted": f"This site has used its {_ADJ_EN[facts.period].lower()} data-transfer "
        "allowance.",
        "reopen": _reopen_en(d),
        **_labels("en", facts),
        "hint": "There is nothing you need to do: please come back after the time above.",
    }


WORDING: Final = {
    "cap": _builtin_strings,
    "large": _large_strings,
    "admission": _admission_strings,
    "client_share": _client_share_strings,
    "day": _day_strings,
    "crawler": _crawler_strings,
}
JSON_ERRORS: Final = {
    "large": "large_files_paused",
    "admission": "response_exceeds_remaining_allowance",
    "client_share": "client_share_exceeded",
    "crawler": "crawlers_paused",
    "day": "daily_limit_within_period_exceeded",
}
# Every variant but the tenant's own has its status: 429 is the visitor's own limit.
VARIANT_STATUS: Final = {
    "large": 503,
    "admission": 503,
    "client_share": 429,
    "crawler": 503,
    "day": 503,
}
