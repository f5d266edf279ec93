"""Only complete TLS records count as received-and-decryptable, however the bytes arrive."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from governor.tls.channel import Records


def record(n: int) -> bytes:
    return bytes([23, 3, 3]) + n.to_bytes(2, "big") + b"x" * n


def test_a_record_split_in_its_header_and_its_body() -> None:
    records = Records()
    data = record(10) + record(0) + record(3)
    records.feed(data[:3])
    assert (records.total, records.complete) == (3, 0)
    records.feed(data[3:9])
    assert (records.total, records.complete) == (9, 0)
    records.feed(data[9:16])
    assert records.complete == 15  # the first record, and the empty one after it
    assert records.total == 16
    records.feed(data[16:])
    assert records.complete == records.total == len(data)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_any_split_counts_exactly_the_complete_records(sizes: list[int], cuts: list[int]) -> None:
    data = b"".join(record(n) for n in sizes)
    ends = set()
    end = 0
    for n in sizes:
        end += 5 + n
        ends.add(end)
    records = Records()
    last = 0
    for cut in sorted({min(c, len(data)) for c in cuts} | {len(data)}):
        records.feed(data[last:cut])
        last = cut
        assert records.total == cut
        assert records.complete == max([e for e in ends if e <= cut], default=0)
