"""What a top-list item is, and the table's bound."""

from __future__ import annotations

import random

import pytest

from governor.config.model import ClientForm
from governor.core.top import TopTable, client_item, path_item, referrer_item


@pytest.mark.parametrize(
    ("address", "form", "item"),
    [
        ("203.0.113.77", "truncated", "203.0.113.0/24"),
        ("2001:db8:aa:bb:cc::1", "truncated", "2001:db8:aa::/48"),
        ("::ffff:198.51.100.9", "truncated", "198.51.100.0/24"),
        ("203.0.113.77", "full", "203.0.113.77"),
        ("not-an-address", "truncated", "not-an-address"),
    ],
)
def test_a_visitor_is_stored_as_top_clients_says(address: str, form: ClientForm, item: str) -> None:
    assert client_item(address, form, "site/2024-02-21") == item


def test_a_hashed_visitor_adds_up_within_a_period_and_not_across() -> None:
    one = client_item("203.0.113.77", "hashed", "site/2024-02-21")
    assert one == client_item("203.0.113.77", "hashed", "site/2024-02-21")
    assert one != client_item("203.0.113.78", "hashed", "site/2024-02-21")
    assert one != client_item("203.0.113.77", "hashed", "site/2024-02-22")
    assert one.startswith("h:")
    assert "203" not in one


def test_paths_lose_their_query_and_referrers_are_hosts() -> None:
    assert path_item("/files/a.pdf?token=secret") == "/files/a.pdf"
    assert path_item("/" + "x" * 500) == "/" + "x" * 199
    assert referrer_item("https://user:pw@M.Social.example:443/p/1?q#f") == "m.social.example:443"
    assert referrer_item(None) == "-"
    assert referrer_item("android-app://x") == "x"
    assert referrer_item("not a url") == "?"


def test_the_table_overstates_by_at_most_total_over_counters() -> None:
    rng = random.Random(3)
    table = TopTable(10)
    true: dict[str, int] = {}
    total = 0
    for _ in range(5000):
        item = f"/p/{min(int(rng.paretovariate(1.0)), 300)}"
        n = rng.randint(100, 5000)
        true[item] = true.get(item, 0) + n
        total += n
        table.add(item, n)
    for item, nbytes, requests in table.items():
        assert true[item] <= nbytes <= true[item] + total / 10
        assert requests >= 1
    assert table.items()[0][0] == max(true, key=true.__getitem__)
    assert len(table) == 10
