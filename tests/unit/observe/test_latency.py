"""A LatencyTally publishes exactly what observing each time would have."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from governor.observe.latency import LatencyTally
from governor.observe.metrics import UPSTREAM_BUCKETS

# Times on and around every bound, and far past the last one.
TIMES = st.one_of(
    st.sampled_from(UPSTREAM_BUCKETS),
    st.floats(min_value=0, max_value=120, allow_nan=False),
    st.sampled_from([0.0, 0.0049999, 0.0050001, 60.000001, 1e9]),
)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def _pair() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, Histogram]:
    one, batched = CollectorRegistry(), CollectorRegistry()
    a = Histogram("t_seconds", "t", ["tenant"], buckets=UPSTREAM_BUCKETS, registry=one)
    b = Histogram("t_seconds", "t", ["tenant"], buckets=UPSTREAM_BUCKETS, registry=batched)
    return one, a, batched, b


@given(st.lists(st.lists(TIMES, max_size=30), max_size=4))
def test_published_counts_are_those_of_observing_each_time(batches: list[list[float]]) -> None:
    one, direct, batched, histogram = _pair()
    tally, child = LatencyTally(histogram.labels("site")), direct.labels("site")
    for batch in batches:
        for seconds in batch:
            child.observe(seconds)
            tally.add(seconds)
        tally.publish()
        got, want = _samples(batched), _samples(one)
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_a_publish_moves_the_counts_once() -> None:
    _, _, batched, histogram = _pair()
    tally = LatencyTally(histogram.labels("site"))
    tally.add(0.005)  # on the bound: that bucket, as Histogram.observe
    tally.add(0.3)
    tally.publish()
    tally.publish()  # nothing new: nothing added
    got = _samples(batched)
    assert got[("t_seconds_bucket", "0.005")] == 1
    assert got[("t_seconds_bucket", "0.25")] == 1
    assert got[("t_seconds_bucket", "0.5")] == 2
    assert got[("t_seconds_count", "")] == 2
    assert abs(got[("t_seconds_sum", "")] - 0.305) < 1e-12
    assert (tally.n, tally.total, sum(tally.counts)) == (0, 0.0, 0)
