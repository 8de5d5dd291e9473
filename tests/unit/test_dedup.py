"""The pure core of duplicate-key detection (``vesl.dedup``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vesl.dedup import Duplicate, duplicates_of, losers_by_index, reject_duplicates
from vesl.records import ImageRecord, Reject

occurrence = st.tuples(st.sampled_from(["s0", "s1", "s10", "s2"]), st.integers(0, 5), st.booleans())


@given(st.lists(occurrence, max_size=12, unique_by=lambda o: o[:2]))
def test_every_occurrence_but_the_first_loses_and_committed_ones_are_never_rejected(occurrences):
    losers = list(duplicates_of("k", occurrences))
    if len(occurrences) < 2:
        assert losers == []
        return
    first = min((shard, index) for shard, index, _ in occurrences)  # the reference: sort and take the head
    expected = sorted((s, i) for s, i, committed in occurrences if (s, i) != first and not committed)
    assert sorted((d.shard, d.index) for d in losers) == expected
    assert all((d.first_shard, d.first_index) == first and d.key == "k" for d in losers)


def test_first_is_by_shard_path_then_index_whatever_the_arrival_order():
    occurrences = [("s1", 0, False), ("s0", 9, False), ("s0", 2, False)]
    assert [(d.shard, d.index, d.detail) for d in duplicates_of("a", occurrences)] == [
        ("s1", 0, "key already read from s0 record 2"),
        ("s0", 9, "key already read from s0 record 2"),
    ]


def test_a_committed_copy_wins_and_is_not_rejected_again():
    occurrences = [("s1", 3, False), ("s0", 1, True)]
    assert [(d.shard, d.index, d.first_shard) for d in duplicates_of("a", occurrences)] == [("s1", 3, "s0")]
    assert list(duplicates_of("a", [("s1", 3, True), ("s2", 0, False)])) == [Duplicate("a", "s2", 0, "s1", 3)]


def test_a_single_occurrence_is_no_duplicate_even_when_a_generator_is_passed():
    assert list(duplicates_of("a", iter([("s0", 0, False)]))) == []


def record(key, index):
    return ImageRecord(key, "s1", index, "a cat", b"jpeg")


def test_reject_duplicates_replaces_exactly_the_losing_records():
    items = [record("a", 0), Reject("x", "s1", 1, "read", "missing_image"), record("b", 2), record("c", 3)]
    losers = losers_by_index([Duplicate("b", "s1", 2, "s0", 7)])
    out = list(reject_duplicates(items, losers))
    assert out[0] is items[0] and out[1] is items[1] and out[3] is items[3]
    assert (out[2].key, out[2].index, out[2].stage, out[2].reason, out[2].detail) == (
        "b",
        2,
        "dedup",
        "duplicate_key",
        "key already read from s0 record 7",
    )


def test_a_verdict_for_another_key_at_that_index_is_not_applied():
    """The shard changed between the keys pass and the read: the record is kept, not wrongly rejected."""
    items = [record("changed", 0)]
    assert list(reject_duplicates(items, losers_by_index([Duplicate("a", "s1", 0, "s0", 0)]))) == items
