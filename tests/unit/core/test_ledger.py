"""Ledger: counting, batching, commit/fail/retry, and never losing or doubling a byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governor.core.ledger import Batch, Key, Ledger, is_blocked

A: Key = ("acme", "2024-05-17")
B: Key = ("bolt", "2024-05-17")
A_OLD: Key = ("acme", "2024-05-16")


def test_add_and_used() -> None:
    ledger = Ledger()
    assert ledger.used(A) == 0
    ledger.add(A, 10)
    ledger.add(A, 5)
    ledger.add(B, 1)
    ledger.add(B, 0)
    assert ledger.used(A) == 15
    assert ledger.used(B) == 1
    assert ledger.pending_bytes() == 16


def test_add_rejects_negative() -> None:
    ledger = Ledger()
    with pytest.raises(ValueError, match="negative"):
        ledger.add(A, -1)


def test_take_nothing_returns_none() -> None:
    ledger = Ledger()
    assert ledger.take() is None
    ledger.add(A, 0)
    assert ledger.take() is None


def test_take_moves_pending_into_a_batch() -> None:
    ledger = Ledger()
    ledger.add(A, 10)
    ledger.add(B, 3)
    batch = ledger.take()
    assert batch is not None
    assert dict(batch.deltas) == {A: 10, B: 3}
    assert len(batch.flush_id) == 32
    assert ledger.used(A) == 10  # in flight still counts
    assert ledger.pending_bytes() == 13


def test_pending_added_during_flight_is_not_lost() -> None:
    ledger = Ledger()
    ledger.add(A, 10)
    batch = ledger.take()
    assert batch is not None
    ledger.add(A, 7)  # arrives while the flush is in flight
    assert ledger.used(A) == 17
    ledger.commit(batch, {A: 10})
    assert ledger.used(A) == 17
    assert ledger.pending_bytes() == 7
    nxt = ledger.take()
    assert nxt is not None
    assert dict(nxt.deltas) == {A: 7}
    assert nxt.flush_id != batch.flush_id


def test_fail_then_take_returns_the_same_batch() -> None:
    ledger = Ledger()
    ledger.add(A, 10)
    batch = ledger.take()
    assert batch is not None
    ledger.add(A, 4)
    ledger.fail(batch)
    again = ledger.take()
    assert again is batch
    assert again.flush_id == batch.flush_id
    assert dict(again.deltas) == {A: 10}  # new bytes wait for the next batch
    assert ledger.used(A) == 14
    assert ledger.pending_bytes() == 14
    ledger.commit(again, {A: 10})
    nxt = ledger.take()
    assert nxt is not None
    assert dict(nxt.deltas) == {A: 4}


def test_take_while_in_flight_returns_the_same_batch() -> None:
    ledger = Ledger()
    ledger.add(A, 1)
    batch = ledger.take()
    ledger.add(B, 2)
    assert ledger.take() is batch


def test_batch_deltas_are_read_only() -> None:
    ledger = Ledger()
    ledger.add(A, 1)
    batch = ledger.take()
    assert batch is not None
    with pytest.raises(TypeError):
        batch.deltas[A] = 2  # type: ignore[index]
    ledger.add(A, 5)
    assert dict(batch.deltas) == {A: 1}


def test_used_is_continuous_across_commit_and_store_is_authoritative() -> None:
    ledger = Ledger()
    ledger.seed({A: 100})
    ledger.add(A, 10)
    batch = ledger.take()
    assert batch is not None
    ledger.add(A, 1)
    before = ledger.used(A)
    ledger.commit(batch, {A: 110})
    assert ledger.used(A) == before == 111
    # Other instances' bytes show up through the totals, including keys not in the batch.
    ledger.add(A, 2)
    batch = ledger.take()
    assert batch is not None
    ledger.commit(batch, {A: 500, B: 42})
    assert ledger.used(A) == 500
    assert ledger.used(B) == 42
    assert ledger.pending_bytes() == 0


def test_commit_or_fail_of_a_batch_not_in_flight_is_an_error() -> None:
    ledger = Ledger()
    stray = Batch("0" * 32, {A: 1})
    with pytest.raises(ValueError, match="not the batch in flight"):
        ledger.commit(stray, {})
    with pytest.raises(ValueError, match="not the batch in flight"):
        ledger.fail(stray)
    ledger.add(A, 1)
    batch = ledger.take()
    assert batch is not None
    with pytest.raises(ValueError, match="not the batch in flight"):
        ledger.commit(stray, {})
    ledger.commit(batch, {A: 1})
    with pytest.raises(ValueError, match="not the batch in flight"):
        ledger.commit(batch, {A: 1})


def test_seed_keeps_pending_and_in_flight() -> None:
    ledger = Ledger()
    ledger.add(A, 10)
    batch = ledger.take()
    ledger.add(A, 5)
    ledger.seed({A: 1000, B: 7})
    assert ledger.used(A) == 1015
    assert ledger.used(B) == 7
    assert ledger.take() is batch
    assert ledger.pending_bytes() == 15


def test_used_is_never_negative() -> None:
    ledger = Ledger()
    ledger.seed({A: -5})
    assert ledger.used(A) == 0


def test_forget_drops_known_totals_but_never_unflushed_bytes() -> None:
    ledger = Ledger()
    ledger.seed({A_OLD: 100, A: 50})
    ledger.add(A_OLD, 3)
    batch = ledger.take()
    ledger.add(A_OLD, 4)
    ledger.forget(lambda key: key[1] >= "2024-05-17")
    assert ledger.used(A) == 50
    assert ledger.used(A_OLD) == 7  # known total gone; in-flight + pending kept
    assert ledger.pending_bytes() == 7
    assert ledger.take() is batch


def test_is_blocked() -> None:
    assert not is_blocked(99, 100)
    assert is_blocked(100, 100)
    assert is_blocked(101, 100)
    assert is_blocked(0, 0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from([A, B, A_OLD]), st.integers(0, 10_000)),
        st.tuples(st.just("flush_ok"), st.none(), st.none()),
        st.tuples(st.just("flush_fail"), st.none(), st.none()),
        st.tuples(st.just("flush_lost_reply"), st.none(), st.none()),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(ops=ops)
def test_no_byte_is_lost_or_counted_twice(ops: list[tuple[str, Key | None, int | None]]) -> None:
    """Against a model store that applies each flush id at most once."""
    ledger = Ledger()
    store: dict[Key, int] = {}
    applied: set[str] = set()
    added: dict[Key, int] = {}

    def apply(batch: Batch) -> dict[Key, int]:
        if batch.flush_id not in applied:
            applied.add(batch.flush_id)
            for k, n in batch.deltas.items():
                store[k] = store.get(k, 0) + n
        return {k: store.get(k, 0) for k in batch.deltas}

    for op, key, n in ops:
        if op == "add":
            assert key is not None
            assert n is not None
            ledger.add(key, n)
            added[key] = added.get(key, 0) + n
        else:
            batch = ledger.take()
            if batch is None:
                continue
            if op == "flush_ok":
                ledger.commit(batch, apply(batch))
            elif op == "flush_lost_reply":  # the store applied it, but we never heard back
                apply(batch)
                ledger.fail(batch)
            else:
                ledger.fail(batch)
        for k in (A, B, A_OLD):
            assert ledger.used(k) == added.get(k, 0)  # continuous: one instance, nothing lost
    # Drain.
    while (batch := ledger.take()) is not None:
        ledger.commit(batch, apply(batch))
    assert ledger.pending_bytes() == 0
    for k in (A, B, A_OLD):
        assert store.get(k, 0) == added.get(k, 0)
        assert ledger.used(k) == added.get(k, 0)


def test_seal_and_carry_keep_every_batch_id_and_every_count() -> None:
    ledger = Ledger()
    ledger.add(("a", "2024-02-21"), 10)
    batch = ledger.take()
    assert batch is not None
    ledger.fail(batch)
    ledger.add(("a", "2024-02-21"), 5)
    ledger.add(("b", "2024-02-21"), 7)
    sealed = ledger.seal(now=123.0)
    assert len(sealed) == 2
    assert sealed[0].flush_id == batch.flush_id
    assert ledger.seal() == sealed  # sealing again changes nothing: the ids are fixed
    assert sealed[1].at == 123.0
    assert ledger.used(("a", "2024-02-21")) == 15  # sealed counts still count
    again = Ledger()
    again.carry(sealed)
    assert again.used(("a", "2024-02-21")) == 15
    assert again.used(("b", "2024-02-21")) == 7
    assert again.pending_bytes() == 22
    again.add(("a", "2024-02-21"), 1)  # counted after the restart: flushed after them
    taken = []
    while (b := again.take()) is not None:
        taken.append(b)
        again.commit(b, {})
    assert [b.flush_id for b in taken[:2]] == [s.flush_id for s in sealed]
    assert dict(taken[2].deltas) == {("a", "2024-02-21"): 1}
    assert again.pending_bytes() == 0


def test_carry_refuses_a_ledger_that_already_counted() -> None:
    ledger = Ledger()
    ledger.add(("a", "p"), 1)
    with pytest.raises(ValueError, match="carry"):
        ledger.carry([])


def test_served_keys_are_those_asked_and_those_taken_until_unserved() -> None:
    ledger = Ledger()
    assert ledger.served() == frozenset()
    ledger.serve(A)
    ledger.add(B, 3)  # counted, not yet taken: a flush takes it with the batch anyway
    assert ledger.served() == {A}
    batch = ledger.take()
    assert batch is not None
    assert ledger.served() == {A, B}
    ledger.commit(batch, {A: 5, B: 3})
    ledger.unserve([A])
    assert ledger.served() == {B}
    assert ledger.known(A) is None  # its known total is forgotten with it
    assert ledger.known(B) == 3


def test_learn_waits_for_a_batch_in_flight_that_holds_the_key() -> None:
    ledger = Ledger()
    ledger.add(A, 10)
    batch = ledger.take()
    assert batch is not None
    assert not ledger.learn(A, 10)  # the store may or may not hold the batch yet
    assert ledger.learn(B, 7)
    assert ledger.used(A) == 10
    assert ledger.used(B) == 7
