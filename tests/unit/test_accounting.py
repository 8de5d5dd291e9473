"""The accounting fold behind summary.json."""

from __future__ import annotations

import json

from vesl.accounting import Tally, read_event, rejected_event, shard_event, written_event
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


def populated_tally() -> Tally:
    from vesl.records import Region

    phrases = (Phrase("a cat", 0, 5, "cloc"), Phrase("a mat", 9, 14, "spacy"))
    record = ImageRecord("k", "s", 0, "a cat on a mat", b"", phrases=phrases)
    region = Region("a cat", 0, 5, "cloc", 0, (0.1, 0.1, 0.5, 0.5), 0.9, 0.5)
    tally = Tally()
    tally.add(shard_event(None)).add(shard_event(None))
    for _ in range(5):
        tally.add(read_event(None))
    tally.add(written_event(LabeledImage(record, (region,) * 3, (("below_threshold", 4), ("nms", 1)))))
    tally.add(written_event(LabeledImage(record, (region,), (("below_threshold", 2),))))
    tally.add(written_event(LabeledImage(ImageRecord("n", "s", 3, "it is", b""), ())))
    tally.add(rejected_event(Reject("x", "s", 1, "decode", "corrupt_image")))
    tally.add(rejected_event(Reject("y", "s", 2, "read", "empty_caption")))
    return tally


# summary.json's counts, key by key: dashboards and the stats-file merge read these names.
GOLDEN_COUNTS = {
    "shards": 2,
    "read": 5,
    "written": 3,
    "rejected": 2,
    "balanced": True,
    "rejected_by_stage": {"decode": {"corrupt_image": 1}, "read": {"empty_caption": 1}},
    "written_without_phrases": 1,
    "written_without_regions": 1,
    "phrases": 4,
    "phrases_per_image": 1.333,
    "regions": 4,
    "regions_per_image": 1.333,
    "regions_per_image_histogram": {"0": 1, "1": 1, "3-4": 1},
    "candidates_dropped_by_reason": {"below_threshold": 6, "nms": 1},
}


def test_to_dict_is_the_documented_summary_and_from_dict_inverts_it():
    tally = populated_tally()
    counts = tally.to_dict()
    assert {k: v for k, v in counts.items() if k != "source_checks"} == GOLDEN_COUNTS
    again = Tally.from_dict(json.loads(json.dumps(counts)))  # through a stats file
    assert again.to_dict() == counts
    assert again.read == 5 and again.written == 3 and again.rejected == 2 and again.phrases == 4
    doubled = Tally.from_dict(counts).merge(Tally.from_dict(counts)).to_dict()
    assert (
        doubled["read"] == 10
        and doubled["shards"] == 4
        and doubled["rejected_by_stage"]["decode"] == {"corrupt_image": 2}
    )
    assert doubled["regions_per_image_histogram"] == {"0": 2, "1": 2, "3-4": 2}


def test_a_stats_file_from_an_older_vesl_without_some_counts_reads_as_zeros():
    assert Tally.from_dict({}).to_dict() == Tally().to_dict()
    assert Tally.from_dict({"read": 3, "written": 3}).to_dict()["balanced"]
