"""The accounting fold behind summary.json."""

from __future__ import annotations

from vesl.accounting import Tally, read_event, rejected_event, written_event
from vesl.records import ImageRecord, LabeledImage, Phrase, Reject


def test_tally_balances_and_merges():
    record = ImageRecord("k", "s", 0, "a cat", b"", phrases=(Phrase("a cat", 0, 5, "cloc"),))
    a, b = Tally(), Tally()
    for _ in range(3):
        a.add(read_event(None))
    a.add(written_event(LabeledImage(record, (), (("below_threshold", 4),))))
    a.add(rejected_event(Reject("x", "s", 1, "decode", "corrupt_image")))
    b.add(read_event(None)).add(rejected_event(Reject("y", "s", 2, "read", "empty_caption")))
    assert not a.balanced  # one record of a is still in flight
    merged = Tally().merge(a).merge(b)
    assert merged.read == 4 and merged.written == 1 and merged.rejected == 2 and not merged.balanced
    merged.add(written_event(LabeledImage(record, ())))
    out = merged.to_dict()
    assert out["balanced"] and out["rejected_by_stage"] == {
        "decode": {"corrupt_image": 1},
        "read": {"empty_caption": 1},
    }
    assert out["written_without_regions"] == 2 and out["candidates_dropped_by_reason"] == {"below_threshold": 4}
    assert out["regions_per_image_histogram"] == {"0": 2} and out["phrases_per_image"] == 1.0


def test_source_checks_fold_merge_and_survive_the_stats_file_round_trip():
    from vesl import accounting
    from vesl.records import SourceCheck

    a, b = Tally(), Tally()
    a.add(accounting.source_event(SourceCheck("s0", 5, 4, 1, {"count": 5}, ())))
    b.add(accounting.source_event(SourceCheck("s1", 3, 1, 2, None, ("no _stats.json", "1 URLs missing"))))
    out = Tally().merge(a).merge(b).to_dict()["source_checks"]
    assert out == {
        "shards": 2,
        "shards_with_stats": 1,
        "urls_tried": 8,
        "downloaded": 5,
        "failed": 3,
        "problems": 2,
        "problems_listed": ["s1: 1 URLs missing", "s1: no _stats.json"],
    }
    again = Tally.from_dict(Tally().merge(a).merge(b).to_dict())
    assert again.to_dict()["source_checks"] == out


def test_listed_problems_are_capped_but_counted():
    from vesl import accounting
    from vesl.records import SourceCheck

    tally = Tally()
    for i in range(accounting.MAX_LISTED_PROBLEMS + 7):
        tally.add(accounting.source_event(SourceCheck(f"s{i}", 1, 1, 0, None, ("p",))))
    merged = Tally().merge(tally).merge(tally).to_dict()["source_checks"]
    assert merged["problems"] == 2 * (accounting.MAX_LISTED_PROBLEMS + 7)
    assert len(merged["problems_listed"]) == accounting.MAX_LISTED_PROBLEMS
