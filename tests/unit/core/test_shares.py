"""The visitor and crawler accounts: the space-saving bound, visitors, crawlers, the rules."""

from __future__ import annotations

import random

import pytest

from governor.config import CrawlerConfig, LargeConfig
from governor.core.ledger import Ledger
from governor.core.policy import decide, left_for, refusal
from governor.core.shares import (
    ShareBook,
    Shares,
    SpaceSaving,
    Visit,
    account,
    counters_for,
    is_crawler,
    period_of,
    visitor_of,
)
from tests.unit.core.test_policy import CAP, tenant

DAY = "2024-02-21"


def test_space_saving_overstates_by_at_most_total_over_k_and_never_understates() -> None:
    rng = random.Random(7)
    table = SpaceSaving(16)
    true: dict[str, int] = {}
    for _ in range(20_000):  # a skewed stream of many more items than counters
        item = f"v{min(int(rng.paretovariate(1.1)), 500)}"
        n = rng.randint(1, 2000)
        true[item] = true.get(item, 0) + n
        table.add(item, n)
    bound = table.total / table.capacity
    assert table.total == sum(true.values())
    for item, count in table.counts.items():
        assert true[item] <= count <= true[item] + bound
    heaviest = max(true, key=true.__getitem__)
    assert table.top(1)[0][0] == heaviest
    assert len(table.counts) == 16


def test_counters_follow_the_share_within_bounds() -> None:
    assert counters_for(0.1) == 80
    assert counters_for(0.9) == 16
    assert counters_for(0.001) == 256


@pytest.mark.parametrize(
    ("address", "visitor"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("not an address:", "not an address:"),
    ],
)
def test_a_visitor_is_an_ipv4_address_or_an_ipv6_64(address: str, visitor: str) -> None:
    assert visitor_of(address) == visitor


def test_a_crawler_by_user_agent_in_any_case_or_by_address() -> None:
    import ipaddress

    crawlers = CrawlerConfig(0.2, ("googlebot", "yeti"), (ipaddress.ip_network("10.9.0.0/16"),))
    assert is_crawler(crawlers, "Mozilla/5.0 (compatible; Googlebot/2.1)", "1.2.3.4")
    assert is_crawler(crawlers, "Mozilla/5.0 (compatible; Yeti/1.1; +http://naver.me/spd)", "")
    assert is_crawler(crawlers, "curl/8", "10.9.1.1")
    assert not is_crawler(crawlers, "Mozilla/5.0 Chrome/131", "1.2.3.4")
    assert not is_crawler(crawlers, None, "1.2.3.4")


def test_accounts_are_period_keys_with_a_suffix() -> None:
    key = account(DAY, "client:2001:db8::/64")
    assert period_of(key) == DAY
    assert period_of(DAY) == DAY
    assert key > DAY  # pruned with its period: "< before" holds for both or neither
    assert key < "2024-02-22"
    assert DAY < "2024-02-22"


def test_a_heavy_visitor_goes_to_the_ledger_with_its_estimate_and_a_light_one_does_not() -> None:
    ledger = Ledger()
    shares = Shares(ledger, tenant(client_share=0.1), DAY, CAP)  # heavy from 1% of the cap
    shares.charge("light", False, CAP // 200)
    assert ledger.used(shares.visitor_key("light")) == 0
    shares.charge("heavy", False, CAP // 200)
    shares.charge("heavy", False, CAP // 200)
    assert ledger.used(shares.visitor_key("heavy")) == CAP // 100
    assert ledger.is_served(shares.visitor_key("heavy"))
    ledger.seed({shares.visitor_key("heavy"): CAP // 20})  # the fleet's total, learned
    assert shares.visitor_used("heavy") == CAP // 20 + CAP // 100  # known + pending
    shares.charge("bot", True, 500)
    assert shares.crawlers_used() == 500


def test_the_book_starts_over_in_a_new_period_and_forgets_old_ones() -> None:
    book = ShareBook(Ledger())
    t = tenant(client_share=0.1)
    Visit(book, t, "v", False, CAP, DAY).charge(DAY, 100)
    assert book.get(t, DAY, CAP).visitor_used("v") == 100
    assert book.get(t, "2024-02-22", CAP).visitor_used("v") == 0
    Visit(book, t, "v", False, CAP, DAY).charge("2024-02-22", 7)  # began before midnight
    assert book.get(t, DAY, CAP).visitor_used("v") == 7  # the new period's, not a fresh old one
    book.forget(lambda name: "2024-02-23")
    assert book.peek("t") is None


def test_decide_refuses_a_visitor_past_its_share_and_crawlers_past_theirs() -> None:
    t = tenant(client_share=0.1, crawlers=CrawlerConfig(0.2), large=LargeConfig(100, 0.8))
    ok = decide(t, used=0, cap=CAP, visitor_used=CAP // 10 - 1)
    assert ok.verdict == "allow"
    assert decide(t, used=0, cap=CAP, visitor_used=CAP // 10).reason == "client_share"
    assert decide(t, used=0, cap=CAP, crawler=True, crawlers_used=CAP // 5 - 1).verdict == "allow"
    assert decide(t, used=0, cap=CAP, crawler=True, crawlers_used=CAP // 5).reason == "crawler"
    # From large.from on, crawlers go first; people go on.
    assert decide(t, used=CAP * 8 // 10, cap=CAP, crawler=True).reason == "crawler"
    assert decide(t, used=CAP * 8 // 10, cap=CAP).verdict == "allow"
    # The cap comes first, and an exempt path passes all of it.
    assert decide(t, used=CAP, cap=CAP, visitor_used=CAP).reason == "cap"
    exempt = tenant(client_share=0.1, exempt_paths=("/robots.txt",))
    assert decide(exempt, used=0, cap=CAP, target="/robots.txt", visitor_used=CAP).verdict == (
        "exempt"
    )


def test_admission_takes_the_smallest_of_what_is_left() -> None:
    t = tenant(client_share=0.1, crawlers=CrawlerConfig(0.2))
    left = left_for(t, used=0, cap=CAP, visitor_used=CAP // 20)
    assert left == CAP // 10 - CAP // 20
    assert refusal(t, declared=left + 1, used=0, cap=CAP, left=left) == "admission"
    assert refusal(t, declared=left, used=0, cap=CAP, left=left) is None
    crawl = left_for(t, used=0, cap=CAP, crawlers_used=CAP // 5 - 10)
    assert crawl == int(CAP * 0.2) - (CAP // 5 - 10)
    assert left_for(t, used=CAP - 5, cap=CAP, visitor_used=0) == 5
