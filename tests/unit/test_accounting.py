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
