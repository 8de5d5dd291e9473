"""Region and image keep rules."""

from __future__ import annotations

import numpy as np

from vesl.config import FilterConfig
from vesl.filtering.rules import filter_detections, image_reject_reason
from vesl.records import Detections, ImageRecord, Phrase, Reason

RECORD = ImageRecord(
    "k",
    "s",
    0,
    "a cat and a dog",
    b"",
    None,
    (Phrase("a cat", 0, 5, "cloc"), Phrase("a dog", 10, 15, "cloc")),
    200,
    100,
)


def detections(boxes, scores, labels=None):
    n = len(scores)
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.linspace(0.1, 0.9, n).astype(np.float32),
        np.array(labels if labels is not None else [0] * n, np.int32),
    )


def test_threshold_is_strict_and_regions_are_best_first():
    det = detections([[0, 0, 0.5, 0.5], [0.1, 0.1, 0.6, 0.6], [0.2, 0.2, 0.3, 0.3]], [0.1, 0.8, 0.3], [0, 1, 0])
    out = filter_detections(RECORD, det, FilterConfig(score_threshold=0.1))
    assert [r.score for r in out.regions] == [np.float32(0.8), np.float32(0.3)]
    assert out.regions[0].phrase == "a dog" and out.regions[0].char_start == 10 and out.regions[0].query_index == 1
    assert dict(out.region_drops) == {"below_threshold": 1}


def test_degenerate_small_nms_and_cap():
    det = detections(
        [
            [0, 0, 0.5, 0.5],
            [0, 0, 0.49, 0.5],
            [0.6, 0.6, 0.6, 0.9],
            [0.7, 0.7, 0.71, 0.9],
            [0.5, 0.5, 1, 1],
            [0.1, 0.6, 0.3, 0.9],
        ],
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    )
    cfg = FilterConfig(score_threshold=0.1, min_box_side_px=3, nms_iou=0.5, max_regions_per_image=2)
    out = filter_detections(RECORD, det, cfg)
    assert [r.score for r in out.regions] == [np.float32(0.9), np.float32(0.5)]
    # 0.71-0.70 of 200 px = 2 px wide: too small; 0.49-wide box overlaps the best one: nms.
    assert dict(out.region_drops) == {"degenerate_box": 1, "too_small": 1, "nms": 1, "over_cap": 1}


def test_image_rules():
    det = detections([[0, 0, 0.5, 0.5]], [0.25])
    labeled = filter_detections(RECORD, det, FilterConfig())
    assert image_reject_reason(labeled, FilterConfig()) is None
    assert image_reject_reason(labeled, FilterConfig(keep_image_min_score=0.3))[0] == Reason.NO_CONFIDENT_BOX
    assert image_reject_reason(labeled, FilterConfig(keep_image_min_score=0.2)) is None
    empty = filter_detections(RECORD, Detections.empty(), FilterConfig())
    assert empty.regions == () and image_reject_reason(empty, FilterConfig()) is None
    assert image_reject_reason(empty, FilterConfig(drop_images_without_regions=True))[0] == Reason.NO_REGIONS


def test_every_threshold_rule_at_its_exact_boundary():
    """Scores exactly representable in float32 (0.25, 0.5), so each comparison meets its edge:
    boxes need score > score_threshold (CLOC: > 0.1), an image needs a box >= keep_image_min_score
    (OWL-ST: at least one box of 0.3), a box side needs >= min_box_side_px."""
    det = detections([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]], [0.5, 0.25, 0.75])
    out = filter_detections(RECORD, det, FilterConfig(score_threshold=0.5))
    assert [r.score for r in out.regions] == [0.75] and dict(out.region_drops) == {"below_threshold": 2}
    out = filter_detections(RECORD, det, FilterConfig(score_threshold=0.25))
    assert [r.score for r in out.regions] == [0.75, 0.5]
    at_quarter = filter_detections(RECORD, detections([[0, 0, 0.5, 0.5]], [0.25]), FilterConfig(score_threshold=0.1))
    assert image_reject_reason(at_quarter, FilterConfig(keep_image_min_score=0.25)) is None
    assert image_reject_reason(at_quarter, FilterConfig(keep_image_min_score=0.2500001))[0] == Reason.NO_CONFIDENT_BOX
    # 1/32 of the 200 x 100 px image: 6.25 px wide and 3.125 px high (exact); the side rule is inclusive
    small = detections([[0, 0, 0.03125, 0.03125]], [0.9])
    assert len(filter_detections(RECORD, small, FilterConfig(min_box_side_px=3.125)).regions) == 1
    assert len(filter_detections(RECORD, small, FilterConfig(min_box_side_px=3.1251)).regions) == 0


def test_a_kept_region_carries_every_field_of_its_phrase_and_detection():
    from vesl.records import Region

    record = ImageRecord("k", "s", 0, "a cat and a dog", b"", None,
                         (Phrase("a cat", 0, 5, "cloc"), Phrase("a dog", 10, 15, "spacy", "generated")), 200, 100)  # fmt: skip
    det = Detections(
        np.array([[0.25, 0.5, 0.75, 1.0]], np.float32), np.array([0.5], np.float32),
        np.array([0.25], np.float32), np.array([1], np.int32),
    )  # fmt: skip
    (region,) = filter_detections(record, det, FilterConfig(score_threshold=0.1)).regions
    assert region == Region("a dog", 10, 15, "spacy", 1, (0.25, 0.5, 0.75, 1.0), 0.5, 0.25, "generated")


def test_degenerate_boxes_in_either_direction_and_nms_with_two_boxes():
    det = detections([[0.1, 0.5, 0.4, 0.5], [0.5, 0.2, 0.5, 0.6], [0.2, 0.3, 0.1, 0.8], [0, 0, 1, 1]], [0.9] * 4)
    out = filter_detections(RECORD, det, FilterConfig())
    assert dict(out.region_drops) == {"degenerate_box": 3} and len(out.regions) == 1
    pair = detections([[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.52]], [0.9, 0.8])
    out = filter_detections(RECORD, pair, FilterConfig(nms_iou=0.5))
    assert [r.score for r in out.regions] == [np.float32(0.9)] and dict(out.region_drops) == {"nms": 1}


def test_min_side_needs_the_image_size_and_is_off_at_zero():
    small = detections([[0, 0, 0.0078125, 0.5]], [0.9])  # 1.5625 px wide on the 200 px image
    assert len(filter_detections(RECORD, small, FilterConfig(min_box_side_px=0)).regions) == 1
    assert len(filter_detections(RECORD, small, FilterConfig(min_box_side_px=2)).regions) == 0
    sizeless = ImageRecord("k", "s", 0, "a cat", b"", None, RECORD.phrases, None, None)
    assert len(filter_detections(sizeless, small, FilterConfig(min_box_side_px=2)).regions) == 1


def test_an_image_without_regions_fails_the_min_score_rule():
    empty = filter_detections(RECORD, Detections.empty(), FilterConfig())
    reason, detail = image_reject_reason(empty, FilterConfig(keep_image_min_score=0.3))
    assert reason == Reason.NO_CONFIDENT_BOX and detail == "best box score 0.000 < 0.3"
    reason, detail = image_reject_reason(empty, FilterConfig(drop_images_without_regions=True))
    assert reason == Reason.NO_REGIONS and detail == "no region kept (2 phrases)"


def test_boxes_under_one_original_pixel_are_dropped_and_counted():
    # RECORD is 200 x 100 px: 0.004 of its width is 0.8 px, 0.008 of its height is 0.8 px
    det = detections([[0, 0, 0.004, 0.5], [0, 0, 0.5, 0.008], [0, 0, 0.0078125, 0.015625], [0, 0, 0.5, 0.5]], [0.9] * 4)
    out = filter_detections(RECORD, det, FilterConfig())
    assert len(out.regions) == 2 and dict(out.region_drops) == {"sub_pixel": 2}  # 1.5625 px x 1.5625 px stays
    sizeless = ImageRecord("k", "s", 0, "a cat", b"", None, RECORD.phrases, None, None)
    assert len(filter_detections(sizeless, det, FilterConfig()).regions) == 4  # no size, no pixel rule
