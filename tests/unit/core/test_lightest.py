"""governor.core.lightest: the lightest counter of a space-saving table, without a scan."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from governor.core.lightest import Lightest
from governor.core.shares import SpaceSaving
from governor.core.top import TopTable

# An operation on a table of counters: ("new", weight), ("grow", which, by), ("pop",)
# (a replacement: the lightest out, a new item in its place).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.integers(0, 50)),
        st.tuples(st.just("grow"), st.integers(0, 1000), st.integers(0, 50)),
        st.tuples(st.just("pop")),
    ),
    max_size=200,
)


@given(ops)
def test_replace_takes_out_a_lightest_counter_whatever_grew_since(
    steps: list[tuple[object, ...]],
) -> None:
    weights: dict[str, int] = {}
    lightest = Lightest()
    made = 0
    for step in steps:
        if step[0] == "new":
            made += 1
            item, weight = f"i{made}", int(str(step[1]))
            weights[item] = weight
            lightest.add(item, weight)
        elif step[0] == "grow" and weights:
            item = sorted(weights)[int(str(step[1])) % len(weights)]
            weights[item] += int(str(step[2]))  # Lightest is not told
        elif step[0] == "pop" and weights:
            least = min(weights.values())
            made += 1
            item = lightest.replace(weights.__getitem__, f"i{made}", 1)
            assert weights.pop(item) == least
            weights[f"i{made}"] = least + 1  # in its place, as space-saving replaces
        assert len(lightest) == len(weights)


def test_a_stream_of_new_items_reads_one_weight_per_replacement() -> None:
    """A crawl of distinct paths replaces a counter on every request: each replacement
    reads one weight, not all of them (a scan read 100 per request)."""
    table = TopTable(100)
    for i in range(10_000):
        table.add(f"/page/{i}", 1000 + i % 7)
    assert table.lightest.checks == 10_000 - 100
    assert len(table) == 100


def test_each_growth_costs_at_most_one_more_read_later() -> None:
    rng = random.Random(5)
    table = SpaceSaving(64)
    replaced = grown = 0
    for _ in range(20_000):
        item = f"v{min(int(rng.paretovariate(0.7)), 5000)}"
        if item in table.counts:
            grown += 1
        elif len(table.counts) == table.capacity:
            replaced += 1
        table.add(item, rng.randint(1, 2000))
    assert replaced > 1000  # both kinds happened, many times
    assert grown > 1000
    assert table.lightest.checks <= replaced + grown
    assert len(table.lightest) == len(table.counts) == 64
