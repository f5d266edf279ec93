"""The allow / exempt / block decision: every branch, from plain values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
from zoneinfo import ZoneInfo

import pytest

from governor.config import LargeConfig, TenantConfig, UpstreamURL
from governor.core.policy import (
    NEAR_CAP,
    Decision,
    as_good_as_out,
    decide,
    large_limit,
    refusal,
)

CAP = 1000


def tenant(**options: object) -> TenantConfig:
    upstream = UpstreamURL(
        url="http://127.0.0.1:1", scheme="http", host="127.0.0.1", port=1, base_path=""
    )
    return TenantConfig(
        name="t",
        hosts=("a.test",),
        upstream=upstream,
        daily_cap=CAP,
        timezone=ZoneInfo("UTC"),
        reset_at=dt.time(0, 0),
        **options,  # type: ignore[arg-type]
    )


PLAIN = tenant()
CUT = tenant(at_cap="cut")
CLOSED = tenant(on_store_failure="closed")
EXEMPTING = tenant(
    exempt_paths=("/robots.txt",),
    exempt_clients=(ipaddress.ip_network("192.0.2.0/24"),),
    at_cap="cut",
    on_store_failure="closed",
)


def test_under_the_cap_a_request_is_allowed_and_finished() -> None:
    d = decide(PLAIN, used=0, cap=CAP)
    assert d == Decision("allow", reason=None, nudge=False, cut=False)
    assert d.verdict != "block"


def test_with_at_cap_cut_an_allowed_response_is_cut_at_the_cap() -> None:
    assert decide(CUT, used=10, cap=CAP) == Decision("allow", cut=True)


@pytest.mark.parametrize("used", [CAP, CAP + 1, 10 * CAP])
def test_at_or_over_the_cap_a_request_is_blocked_for_the_cap(used: int) -> None:
    d = decide(PLAIN, used=used, cap=CAP)
    assert d == Decision("block", reason="cap")
    assert d.verdict == "block"


def test_a_zero_cap_blocks_from_the_first_byte() -> None:
    assert decide(PLAIN, used=0, cap=0).verdict == "block"


def test_a_grant_raises_the_cap_the_decision_sees() -> None:
    assert decide(PLAIN, used=CAP, cap=CAP + 500).verdict == "allow"


@pytest.mark.parametrize(
    ("used", "nudge"),
    [(int(CAP * NEAR_CAP) - 1, False), (int(CAP * NEAR_CAP), True), (CAP - 1, True)],
)
def test_near_the_cap_an_allowed_request_nudges_the_flusher(used: int, nudge: bool) -> None:
    d = decide(PLAIN, used=used, cap=CAP)
    assert (d.verdict, d.nudge) == ("allow", nudge)


def test_a_store_down_blocks_under_on_store_failure_closed() -> None:
    assert decide(CLOSED, used=0, cap=CAP, store_ok=False) == Decision("block", reason="store")
    assert decide(CLOSED, used=0, cap=CAP, store_ok=True).verdict == "allow"


def test_a_store_down_does_not_block_under_on_store_failure_open() -> None:
    assert decide(PLAIN, used=0, cap=CAP, store_ok=False).verdict == "allow"


def test_the_cap_is_the_reason_when_both_apply() -> None:
    assert decide(CLOSED, used=CAP, cap=CAP, store_ok=False).reason == "cap"


@pytest.mark.parametrize(
    ("target", "client"),
    [("/robots.txt", "198.51.100.1"), ("/robots.txt?x=1", ""), ("/big", "192.0.2.7")],
)
def test_an_exempt_path_or_client_passes_a_blocked_tenant_uncut(target: str, client: str) -> None:
    for used, store_ok in [(0, True), (CAP, True), (0, False), (10 * CAP, False)]:
        d = decide(EXEMPTING, used=used, cap=CAP, store_ok=store_ok, target=target, client=client)
        assert d.verdict == "exempt"
        assert not d.cut  # an exempt response is never cut, though the tenant cuts
        assert d.nudge is (used >= CAP * NEAR_CAP)


@pytest.mark.parametrize(
    ("target", "client"), [("/robots.txtbig", ""), ("/a", "198.51.100.1"), ("/a", "")]
)
def test_a_request_neither_path_nor_client_exempts_is_not_exempt(target: str, client: str) -> None:
    d = decide(EXEMPTING, used=CAP, cap=CAP, target=target, client=client)
    assert d == Decision("block", reason="cap")


def test_an_upgrade_is_never_exempt() -> None:
    d = decide(EXEMPTING, used=CAP, cap=CAP, target="/robots.txt", client="192.0.2.7", upgrade=True)
    assert d == Decision("block", reason="cap")
    allowed = decide(EXEMPTING, used=0, cap=CAP, target="/robots.txt", upgrade=True)
    assert allowed == Decision("allow", cut=True)


def test_a_decision_is_a_frozen_value_made_once() -> None:
    d = decide(PLAIN, used=0, cap=CAP)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.cut = True  # type: ignore[misc]
    assert decide(PLAIN, used=1, cap=CAP) is d  # nothing allocated per request


# -- refusal: a response that declares more than is left, or a large one late, never starts


def admits(t: TenantConfig, *, declared: int | None, used: int, cap: int) -> bool:
    return refusal(t, declared=declared, used=used, cap=cap) is None


@pytest.mark.parametrize(
    ("declared", "used", "admitted"),
    [
        (None, 999, True),  # no declared length (chunked, until close): cannot know
        (0, CAP, True),
        (400, 600, True),  # exactly what is left
        (401, 600, False),
        (1, CAP, False),
        (10**12, 0, False),
        (CAP, 0, True),
    ],
)
def test_admits_what_fits_in_what_is_left(declared: int | None, used: int, admitted: bool) -> None:
    assert admits(PLAIN, declared=declared, used=used, cap=CAP) is admitted
    if not admitted:
        assert refusal(PLAIN, declared=declared, used=used, cap=CAP) == "admission"


def test_admits_counts_the_grant_through_the_cap_it_is_given() -> None:
    assert not admits(PLAIN, declared=1500, used=0, cap=CAP)
    assert admits(PLAIN, declared=1500, used=0, cap=CAP + 500)


@pytest.mark.parametrize("count", ["egress", "both"])
def test_admits_applies_when_responses_are_charged(count: str) -> None:
    assert not admits(tenant(count=count), declared=CAP + 1, used=0, cap=CAP)


def test_admits_anything_when_off_or_when_only_ingress_is_charged() -> None:
    assert admits(tenant(admission=False), declared=CAP * 10, used=CAP - 1, cap=CAP)
    assert admits(tenant(count="ingress"), declared=CAP * 10, used=CAP - 1, cap=CAP)


LARGE = tenant(large=LargeConfig(size=100, share=0.5))


@pytest.mark.parametrize(
    ("declared", "used", "why"),
    [
        (101, 499, None),  # before large.from: a large response goes on
        (101, 500, "large"),  # from large.from on: refused
        (100, 500, None),  # not above large.size: a page, it goes on
        (50, 950, None),  # small, and it fits in what is left
        (51, 950, "admission"),  # small, but more than what is left
        (150, 950, "large"),  # large and more than what is left: large says why
        (None, 900, None),  # undeclared: limited while it streams, not refused
    ],
)
def test_large_responses_go_first_from_large_from(
    declared: int | None, used: int, why: str | None
) -> None:
    assert refusal(LARGE, declared=declared, used=used, cap=CAP) == why


def test_large_counts_the_share_of_the_cap_with_its_grant() -> None:
    assert refusal(LARGE, declared=101, used=500, cap=2 * CAP) is None  # a grant: 25%
    assert refusal(LARGE, declared=101, used=1000, cap=2 * CAP) == "large"


def test_large_limit_applies_to_undeclared_responses_from_large_from() -> None:
    assert large_limit(PLAIN, used=CAP, cap=CAP) is None  # large is off
    assert large_limit(LARGE, used=499, cap=CAP) is None
    assert large_limit(LARGE, used=500, cap=CAP) == 100
    large_ingress = tenant(large=LargeConfig(size=100, share=0.5), count="ingress")
    assert large_limit(large_ingress, used=900, cap=CAP) is None


def test_a_site_is_as_good_as_out_from_90_percent() -> None:
    assert not as_good_as_out(899, CAP)
    assert as_good_as_out(900, CAP)
    assert as_good_as_out(CAP + 5, CAP)


def test_shadow_mode_allows_what_would_be_blocked_and_says_why() -> None:
    shadow = tenant(enforce=False, at_cap="cut", client_share=0.1)
    at_cap = decide(shadow, used=CAP, cap=CAP)
    assert (at_cap.verdict, at_cap.would_block, at_cap.cut) == ("allow", "cap", False)
    over_share = decide(shadow, used=0, cap=CAP, visitor_used=CAP)
    assert (over_share.verdict, over_share.would_block) == ("allow", "client_share")
    under = decide(shadow, used=0, cap=CAP)
    assert (under.verdict, under.would_block, under.cut) == ("allow", None, False)
    enforced = decide(tenant(at_cap="cut"), used=CAP, cap=CAP)
    assert (enforced.verdict, enforced.would_block) == ("block", None)
