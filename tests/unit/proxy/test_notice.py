"""governor.notice: negotiation, Retry-After, local reset display, escaping, templates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from governor.proxy.notice import (
    PLACEHOLDERS,
    NoticeFacts,
    RenderedNotice,
    choose_language,
    render_notice,
    validate_template,
    wants_json,
)

SEOUL = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")
GIB = 1024**3
EXAMPLE_TEMPLATE = Path(__file__).resolve().parents[3] / "config" / "notice.html"


def facts(
    *,
    tenant: str = "blog",
    host: str = "blog.example.com",
    used: int = 2 * GIB,
    cap: int = 2 * GIB,
    resets_at: dt.datetime | None = None,
    seconds_left: float = 3 * 3600 + 12 * 60,
) -> NoticeFacts:
    when = resets_at or dt.datetime(2024, 2, 22, tzinfo=SEOUL)
    return NoticeFacts(
        tenant=tenant,
        host=host,
        used_bytes=used,
        cap_bytes=cap,
        resets_at=when,
        now=when.timestamp() - seconds_left,
    )


def render(
    f: NoticeFacts | None = None,
    *,
    status: int = 503,
    template: str | None = None,
    accept: str | None = None,
    accept_language: str | None = None,
    method: str = "GET",
) -> RenderedNotice:
    return render_notice(
        f or facts(),
        status=status,
        template=template,
        accept=accept,
        accept_language=accept_language,
        method=method,
    )


def header(notice: RenderedNotice, name: str) -> str | None:
    values = [v for k, v in notice.headers if k.lower() == name.lower()]
    assert len(values) <= 1, f"{name} repeated"
    return values[0] if values else None


# --------------------------------------------------------------------------- language


@pytest.mark.parametrize(
    ("accept_language", "expected"),
    [
        ("ko-KR,ko;q=0.9,en;q=0.8", "ko"),
        ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"),
        ("en-US", "en"),
        ("en-US,en;q=0.9,ko;q=0.8", "en"),
        ("ko", "ko"),
        ("KO-kr", "ko"),
        ("ko-KR", "ko"),
        ("*", "en"),
        ("", "en"),
        (None, "en"),
        ("fr-FR,fr;q=0.9,de;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,ko;q=0.1", "ko"),
        ("en;q=0.5,ko;q=0.6", "ko"),
        ("en;q=0.6,ko;q=0.5", "en"),
        ("en , ko", "en"),  # equal q: the first listed
        ("ko, en", "ko"),
        ("en;q=0, ko;q=0.1", "ko"),
        ("en;q=0, *", "ko"),  # q=0 excludes English; * admits Korean
        ("ko;q=0, *", "en"),
        ("ko;q=0, ko-KR", "en"),  # the exact range is the more specific one
        ("ko-KR;q=0, ko;q=0.5, en;q=0.4", "ko"),
        ("ko;q=0, en;q=0", "en"),  # nothing acceptable: the default
        ("ko;q=0.000", "en"),
        ("ko;q=1.000", "ko"),
        ("ko;q=1.5, en;q=0.1", "en"),  # malformed q: ignore the element
        ("ko;q=abc", "en"),
        ("ko;Q=0.9,en;q=0.8", "ko"),
        ("ko_KR, en;q=0.1", "en"),  # not a language range
        (",,ko,,", "ko"),
        ("zh-Hant-TW;q=0.9, ko-Kore-KR;q=0.8", "ko"),
    ],
)
def test_choose_language(accept_language: str | None, expected: str) -> None:
    assert choose_language(accept_language) == expected


# --------------------------------------------------------------------------- JSON choice


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", True),
        ("Application/JSON", True),
        ("application/json; charset=utf-8", True),
        ("text/html", False),
        ("application/json, text/html", False),  # exact tie: HTML
        ("text/html, application/json", False),
        ("text/html;q=0.9, application/json", True),
        ("application/json;q=0.9, text/html", False),
        ("application/json, text/plain, */*", True),  # axios: JSON named, HTML only via */*
        ("application/json, */*;q=0.1", True),
        ("application/*", True),
        ("application/*, text/*", False),
        ("application/json;q=0, */*", False),
        ("application/json;q=0", False),
        (
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8",
            False,
        ),  # a browser
        ("text/*;q=0.5, application/json;q=0.6", True),
        ("text/html;q=0, */*", True),
        ("application/json;q=2", False),  # malformed q: ignored
        ("*/json", False),  # not a media range
        ("garbage", False),
    ],
)
def test_wants_json(accept: str | None, expected: bool) -> None:
    assert wants_json(accept) is expected


# --------------------------------------------------------------------------- headers


def test_html_headers() -> None:
    n = render(accept_language="ko-KR,ko;q=0.9,en;q=0.8")
    assert n.status == 503
    assert [k for k, _ in n.headers] == [
        "Content-Type",
        "Content-Length",
        "Retry-After",
        "Cache-Control",
        "Content-Language",
        "Vary",
    ]
    assert header(n, "Content-Type") == "text/html; charset=utf-8"
    assert header(n, "Content-Length") == str(len(n.body))
    assert header(n, "Retry-After") == str(3 * 3600 + 12 * 60)
    assert header(n, "Cache-Control") == "no-store"
    assert header(n, "Content-Language") == "ko"
    assert header(n, "Vary") == "Accept, Accept-Language"


@pytest.mark.parametrize("status", [503, 509, 429, 402])
def test_configured_status(status: int) -> None:
    assert render(status=status).status == status


@pytest.mark.parametrize("status", [200, 500, 404])
def test_other_statuses_are_refused(status: int) -> None:
    with pytest.raises(ValueError, match="status"):
        render(status=status)


def test_naive_reset_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        NoticeFacts(
            tenant="t",
            host="h",
            used_bytes=0,
            cap_bytes=1,
            resets_at=dt.datetime(2024, 2, 22),
            now=0.0,
        )


@pytest.mark.parametrize(
    ("seconds_left", "expected"),
    [
        (3600.0, 3600),
        (3599.2, 3600),  # rounded up
        (0.001, 1),
        (1.0, 1),
        (1.5, 2),
        (0.0, 1),  # floor of 1
        (-30.0, 1),  # reset already passed (clock skew): still 1
    ],
)
def test_retry_after_rounds_up_with_a_floor_of_one(seconds_left: float, expected: int) -> None:
    n = render(facts(seconds_left=seconds_left))
    assert header(n, "Retry-After") == str(expected)


def test_head_has_empty_body_and_get_length() -> None:
    f = facts()
    for accept in (None, "application/json"):
        get = render(f, accept=accept)
        head = render(f, accept=accept, method="HEAD")
        assert get.body
        assert head.body == b""
        assert head.headers == get.headers
        assert header(head, "Content-Length") == str(len(get.body))
    assert render(f, method="head").body == b""


# --------------------------------------------------------------------------- HTML content


def test_english_html() -> None:
    n = render(accept_language="en-US")
    page = n.body.decode("utf-8")
    assert header(n, "Content-Language") == "en"
    assert '<html lang="en">' in page
    assert '<meta name="viewport"' in page
    assert "daily data-transfer allowance" in page
    assert (
        "It will reopen at 00:00 (Asia/Seoul, UTC+09:00) on 2024-02-22, in 3 hours 12 minutes."
    ) in page
    assert "2.0 GiB" in page
    assert "blog.example.com" in page
    # self-contained: no external assets
    for needle in ("<link", "<script", "src=", "url(", "@import", "http://", "https://"):
        assert needle not in page


def test_korean_html() -> None:
    n = render(accept_language="ko-KR,ko;q=0.9,en;q=0.8")
    page = n.body.decode("utf-8")
    assert '<html lang="ko">' in page
    assert "이 사이트는 오늘의 데이터 전송 허용량을 모두 사용했습니다." in page
    assert "2024-02-22 00:00 (Asia/Seoul, UTC+09:00)에 다시 열립니다." in page
    assert "3시간 12분 후" in page


def test_human_sizes() -> None:
    page = render(facts(used=1536 * 1024**2, cap=1024**3)).body.decode()
    assert "1.5 GiB" in page
    assert "1.0 GiB" in page
    page = render(facts(used=512, cap=10 * 1024**2), accept_language="en").body.decode()
    assert "512 B" in page
    assert "10.0 MiB" in page


@pytest.mark.parametrize(
    ("seconds_left", "en", "ko"),
    [
        (30, "in less than a minute", "1분 이내"),
        (60, "in 1 minute", "1분 후"),
        (61, "in 2 minutes", "2분 후"),
        (3600, "in 1 hour.", "1시간 후"),
        (3 * 3600 + 60, "in 3 hours 1 minute", "3시간 1분 후"),
    ],
)
def test_time_remaining_wording(seconds_left: int, en: str, ko: str) -> None:
    f = facts(seconds_left=seconds_left)
    assert en in render(f, accept_language="en").body.decode()
    assert ko in render(f, accept_language="ko").body.decode()


def test_dst_correct_local_reset_new_york() -> None:
    # DST starts in New York at 02:00 on 2024-03-10, so that day is 23 hours long.
    midnight_before = dt.datetime(2024, 3, 10, tzinfo=NEW_YORK)  # EST, UTC-05:00
    reset = dt.datetime(2024, 3, 11, tzinfo=NEW_YORK)  # EDT, UTC-04:00
    f = NoticeFacts(
        tenant="nyc",
        host="nyc.example",
        used_bytes=1,
        cap_bytes=1,
        resets_at=reset,
        now=midnight_before.timestamp(),
    )
    html = render(f, accept_language="en")
    assert header(html, "Retry-After") == str(23 * 3600)
    page = html.body.decode()
    assert "It will reopen at 00:00 (America/New_York, UTC-04:00) on 2024-03-11" in page
    assert "in 23 hours." in page

    data = json.loads(render(f, accept="application/json").body)
    assert data["resets_at"] == "2024-03-11T00:00:00-04:00"
    assert data["retry_after"] == 23 * 3600

    local = render(f, template="$resets_at_local|$resets_at|$timezone").body.decode()
    assert local == "2024-03-11 00:00 EDT|2024-03-11T00:00:00-04:00|America/New_York"

    # and in winter the same zone shows standard time
    winter = facts(resets_at=dt.datetime(2024, 1, 16, tzinfo=NEW_YORK))
    page = render(winter, accept_language="en").body.decode()
    assert "00:00 (America/New_York, UTC-05:00) on 2024-01-16" in page


def test_hostile_host_and_tenant_are_escaped() -> None:
    evil_host = '"><script>alert(1)</script>'
    evil_tenant = "<img src=x onerror=alert('t')>&"
    f = facts(host=evil_host, tenant=evil_tenant)
    for lang in ("en", "ko"):
        page = render(f, accept_language=lang).body.decode()
        assert "<script" not in page
        assert evil_host not in page
        assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    custom = render(
        f, template="<a title=\"$host\">$host</a> <b data-t='$tenant'>$tenant</b>"
    ).body.decode()
    assert "<script" not in custom
    assert "<img" not in custom
    assert custom == (
        '<a title="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">'
        "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;</a> "
        "<b data-t='&lt;img src=x onerror=alert(&#x27;t&#x27;)&gt;&amp;'>"
        "&lt;img src=x onerror=alert(&#x27;t&#x27;)&gt;&amp;</b>"
    )


# --------------------------------------------------------------------------- JSON body


def test_json_body() -> None:
    f = facts(tenant="블로그", host="blog.example.com", used=2 * GIB + 7)
    n = render(f, accept="application/json", accept_language="ko")
    assert header(n, "Content-Type") == "application/json"
    assert header(n, "Content-Language") is None
    assert header(n, "Vary") == "Accept, Accept-Language"
    assert header(n, "Content-Length") == str(len(n.body))
    assert json.loads(n.body.decode("utf-8")) == {
        "error": "daily_transfer_limit_exceeded",
        "period": "day",
        "tenant": "블로그",
        "host": "blog.example.com",
        "used_bytes": 2 * GIB + 7,
        "cap_bytes": 2 * GIB,
        "resets_at": "2024-02-22T00:00:00+09:00",
        "retry_after": 11520,
        "message": (
            "This site has used its daily data-transfer allowance. It will reopen at "
            "00:00 (Asia/Seoul, UTC+09:00) on 2024-02-22, in 3 hours 12 minutes."
        ),
    }


def test_json_ignores_the_operator_template() -> None:
    n = render(template="<p>$host</p>", accept="application/json")
    assert json.loads(n.body)["error"] == "daily_transfer_limit_exceeded"


# --------------------------------------------------------------------------- operator template


def test_operator_template_substitution() -> None:
    template = " | ".join(f"{name}=${name}" for name in sorted(PLACEHOLDERS))
    n = render(template=template, accept_language="ko")
    assert header(n, "Content-Type") == "text/html; charset=utf-8"
    assert header(n, "Content-Language") == "ko"
    assert n.body.decode() == " | ".join(
        [
            "cap=2.0 GiB",
            f"cap_bytes={2 * GIB}",
            "host=blog.example.com",
            "lang=ko",
            "resets_at=2024-02-22T00:00:00+09:00",
            "resets_at_local=2024-02-22 00:00 KST",
            "retry_after=11520",
            "tenant=blog",
            "timezone=Asia/Seoul",
            "topup_url=",  # none configured
            "used=2.0 GiB",
            f"used_bytes={2 * GIB}",
        ]
    )


def test_operator_template_braces_dollars_and_unknowns() -> None:
    template = "${tenant}s costs $$5, $ alone, $unknown and ${host}!"
    body = render(template=template).body.decode()
    assert body == "blogs costs $5, $ alone, $unknown and blog.example.com!"


def test_operator_template_non_ascii() -> None:
    n = render(template="<p>$host 사이트는 쉬는 중입니다 ☕</p>")
    assert n.body == "<p>blog.example.com 사이트는 쉬는 중입니다 ☕</p>".encode()
    assert header(n, "Content-Length") == str(len(n.body))


def test_validate_template() -> None:
    assert validate_template("") == []
    assert validate_template("$tenant ${host} $used $$notaplaceholder $ 5$") == []
    assert validate_template(" ".join(f"${n}" for n in PLACEHOLDERS)) == []
    assert validate_template("$tenat $host ${cap_byte} $tenat $Host") == [
        "tenat",
        "cap_byte",
        "Host",
    ]


def test_example_template_is_valid_and_renders() -> None:
    text = EXAMPLE_TEMPLATE.read_text(encoding="utf-8")
    assert validate_template(text) == []
    page = render(template=text, accept_language="ko").body.decode()
    assert '<body class="visitor-ko">' in page
    assert "2024-02-22 00:00 KST" in page
    assert "blog-limit" in page
    assert '<meta name="viewport"' in page


# --------------------------------------------------------------------------- the notice's defects


def test_template_comments_never_reach_visitors() -> None:
    template = (
        "<!doctype html>\n<!-- operator notes: $tenant, ${cap}, $$5, $typo -->\n"
        "<p>$host</p><!---->\n<!--\nmulti\nline\n--><p>a<!-->b<!--->c</p>\n"
        "<style>/* $$ */</style>\n<!-- unclosed, as a browser sees it: to the end $host"
    )
    assert validate_template(template) == []  # $typo is in a comment: not a placeholder
    body = render(template=template).body.decode()
    assert (
        body == "<!doctype html>\n\n<p>blog.example.com</p>\n<p>abc</p>\n<style>/* $ */</style>\n"
    )
    assert validate_template("<!-- fine --> $typo") == ["typo"]


def test_the_example_template_sends_no_comment() -> None:
    text = EXAMPLE_TEMPLATE.read_text(encoding="utf-8")
    assert "<!--" in text  # the operator's notes are in the file
    for lang in ("en", "ko"):
        page = render(template=text, accept_language=lang).body.decode()
        assert "<!--" not in page
        assert "Placeholders" not in page
        assert "admin@example.com" in page  # the visible footer is still there


@pytest.mark.parametrize(
    ("accept_language", "lang"), [("ko-KR,ko;q=0.9", "ko"), ("en-US", "en"), (None, "en")]
)
@pytest.mark.parametrize("which", ["example", "builtin"])
def test_the_page_language_is_the_visitors(
    which: str, accept_language: str | None, lang: str
) -> None:
    template = EXAMPLE_TEMPLATE.read_text(encoding="utf-8") if which == "example" else None
    n = render(template=template, accept_language=accept_language)
    page = n.body.decode()
    assert re.search(r"<html\b[^>]*>", page)[0] == f'<html lang="{lang}">'  # type: ignore[index]
    assert header(n, "Content-Language") == lang


@pytest.mark.parametrize("which", ["example", "builtin"])
def test_korean_wraps_between_words(which: str) -> None:
    template = EXAMPLE_TEMPLATE.read_text(encoding="utf-8") if which == "example" else None
    page = render(template=template, accept_language="ko").body.decode()
    rules = re.findall(r"([^{}]+)\{([^{}]*)\}", page.split("<style>", 1)[1].split("</style>")[0])
    keep_all = [sel for sel, decl in rules if re.search(r"word-break\s*:\s*keep-all", decl)]
    assert any(":lang(ko)" in sel for sel in keep_all), rules


def test_the_example_usage_bar_is_not_a_green_meter_at_the_cap() -> None:
    """Browsers paint a <meter> without low/high/optimum green, "all is well", even full."""
    text = EXAMPLE_TEMPLATE.read_text(encoding="utf-8")
    page = render(facts(used=3 * GIB, cap=2 * GIB), template=text).body.decode()
    assert "<meter" not in page
    bars = re.findall(r"<progress\b[^>]*>", page)
    assert bars
    for bar in bars:
        assert f'max="{2 * GIB}"' in bar
        assert f'value="{3 * GIB}"' in bar
    assert re.search(r"\.usage\s*\{[^}]*accent-color\s*:\s*var\(--accent\)", page)


@pytest.mark.parametrize("which", ["example", "builtin"])
@pytest.mark.parametrize("lang", ["en", "ko"])
def test_the_reset_is_shown_as_a_time_not_as_seconds(which: str, lang: str) -> None:
    template = EXAMPLE_TEMPLATE.read_text(encoding="utf-8") if which == "example" else None
    page = render(template=template, accept_language=lang).body.decode()
    visible = re.sub(r"<style>.*?</style>|<[^>]+>", " ", page, flags=re.DOTALL)
    assert "11520" not in visible  # the seconds to the reset (Retry-After has them)
    assert re.search(r"\b11520\s*s\b", page) is None
    assert "00:00" in visible
    assert "2024-02-22" in visible


# --- the "large" variant: large files paused, pages go on ---------------------------------


@pytest.mark.parametrize(
    ("accept_language", "heading", "pages"),
    [
        (None, "Large files are paused until the reset", "pages remain available."),
        ("ko-KR,ko;q=0.9", "큰 파일은 잠시 내려받을 수 없습니다", "사이트의 페이지는 계속"),
    ],
)
def test_the_large_notice_says_pages_go_on_in_the_visitors_language(
    accept_language: str | None, heading: str, pages: str
) -> None:
    n = render_notice(
        facts(used=GIB),
        status=429,  # the operator's status and template word the cap notice only
        template="<p>$used of $cap</p>",
        accept="text/html",
        accept_language=accept_language,
        variant="large",
    )
    text = n.body.decode()
    assert n.status == 503
    assert heading in text
    assert pages in text
    assert "<p>1.0 GiB of 2.0 GiB</p>" not in text
    assert dict(n.headers)["Retry-After"] == str(3 * 3600 + 12 * 60)


def test_the_large_notice_in_json() -> None:
    n = render_notice(
        facts(used=GIB),
        status=503,
        template=None,
        accept="application/json",
        accept_language=None,
        variant="large",
    )
    document = json.loads(n.body)
    assert document["error"] == "large_files_paused"
    assert "pages remain available" in document["message"]
    assert document["retry_after"] == 3 * 3600 + 12 * 60
    assert (document["used_bytes"], document["cap_bytes"]) == (GIB, 2 * GIB)


@pytest.mark.parametrize(
    ("accept_language", "words"),
    [
        (None, ["This file is larger than what is left today", "16.0 MiB", "1.0 GiB"]),
        ("ko", ["오늘 남은 전송 허용량보다 큰 파일입니다", "16.0 MiB"]),
    ],
)
def test_the_admission_notice_names_the_file_and_what_is_left(
    accept_language: str | None, words: list[str]
) -> None:
    f = dataclasses.replace(facts(used=GIB), response_bytes=16 * 2**20)
    n = render_notice(
        f,
        status=429,
        template="$used",
        accept=None,
        accept_language=accept_language,
        variant="admission",
    )
    assert n.status == 503
    text = n.body.decode()
    for word in words:
        assert word in text
    document = json.loads(
        render_notice(
            f,
            status=503,
            template=None,
            accept="application/json",
            accept_language=None,
            variant="admission",
        ).body
    )
    assert document["error"] == "response_exceeds_remaining_allowance"
    assert (document["response_bytes"], document["remaining_bytes"]) == (16 * 2**20, GIB)


# --- the "client_share" (429) and "crawler" (503) variants -----------------------------------


@pytest.mark.parametrize(
    ("variant", "status", "error", "en", "ko"),
    [
        (
            "client_share",
            429,
            "client_share_exceeded",
            "You have used your share of today's allowance",
            "오늘 이용하실 수 있는 전송량을 모두 사용하셨습니다",
        ),
        (
            "crawler",
            503,
            "crawlers_paused",
            "Automated crawling is paused until the reset",
            "자동 수집(크롤러)은 초기화 시각까지 멈춰 두었습니다",
        ),
    ],
)
def test_the_visitor_and_crawler_notices_in_both_languages_and_json(
    variant: Any, status: int, error: str, en: str, ko: str
) -> None:
    for language, heading in ((None, en), ("ko-KR,ko;q=0.9", ko)):
        n = render_notice(
            facts(used=GIB),
            status=402,  # the operator's status words the cap notice only
            template="$used",
            accept="text/html",
            accept_language=language,
            variant=variant,
        )
        assert n.status == status
        assert heading in html.unescape(n.body.decode())
        assert dict(n.headers)["Retry-After"] == str(3 * 3600 + 12 * 60)
    document = json.loads(
        render_notice(
            facts(used=GIB),
            status=503,
            template=None,
            accept="application/json",
            accept_language=None,
            variant=variant,
        ).body
    )
    assert document["error"] == error
    assert document["retry_after"] == 3 * 3600 + 12 * 60


def test_the_admission_notice_names_the_visitors_share_when_it_leaves_less() -> None:
    f = dataclasses.replace(facts(used=GIB), response_bytes=16 * 2**20, left_bytes=3 * 2**20)
    n = render_notice(
        f, status=503, template=None, accept=None, accept_language=None, variant="admission"
    )
    assert "allowance for you (3.0 MiB)" in n.body.decode()


def test_the_topup_link_in_both_languages_and_json() -> None:
    f = dataclasses.replace(facts(), topup_url="https://host.example/topup?site=blog&x=<1>")
    pages = {
        lang: render_notice(
            f, status=503, template=None, accept=None, accept_language=lang
        ).body.decode()
        for lang in ("en", "ko")
    }
    href = 'href="https://host.example/topup?site=blog&amp;x=&lt;1&gt;"'
    assert href in pages["en"]
    assert "The site&#x27;s owner can add allowance here" in pages["en"]
    assert href in pages["ko"]
    assert "사이트 운영자는 여기에서 전송 허용량을 추가할 수 있습니다" in pages["ko"]
    document = json.loads(
        render_notice(
            dataclasses.replace(f, topup_text="Buy more"),
            status=503,
            template=None,
            accept="application/json",
            accept_language=None,
        ).body
    )
    assert document["topup_url"] == "https://host.example/topup?site=blog&x=<1>"
    assert document["topup_text"] == "Buy more"
    plain = render_notice(facts(), status=503, template=None, accept=None, accept_language=None)
    assert b"topup" not in plain.body


def test_an_operator_template_may_place_the_topup_url() -> None:
    f = dataclasses.replace(facts(), topup_url="https://host.example/t")
    n = render_notice(
        f, status=503, template='<a href="$topup_url">more</a>', accept=None, accept_language=None
    )
    assert n.body == b'<a href="https://host.example/t">more</a>'
