"""Does a fast path give the reference's boxes? Compares detections of a candidate configuration
(bf16, SDPA, torch.compile, text cache, ...) with the fp32 eager reference on the same weights and
inputs.

A reference box is matched when the candidate has a box with the same query (phrase) and IoU >= 0.9;
matching is one-to-one, closest score first among such pairs (detectors emit near-duplicate boxes
from neighbouring patches, so the closest geometric match is not always the same patch). Boxes with a
side under ``min_side`` (one detector-input pixel in ``check_fast_path``) are not compared: slivers
left by clipping a box that lies in the padding change IoU wildly under rounding (random weights
make many; the filter stage drops zero-area ones). The verdict needs >= 99% of the reference's kept boxes
matched and every matched score within 0.02. To keep boundary effects out, the candidate is read
with a threshold lowered by the score tolerance and twice the candidate budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from vesl.records import Detections
from vesl.vision.geometry import box_iou

MIN_MATCHED = 0.99
MAX_SCORE_DIFF = 0.02
MIN_IOU = 0.9


@dataclass(frozen=True)
class EqualityReport:
    images: int
    reference_boxes: int
    matched_boxes: int
    matched_fraction: float
    max_score_diff: float
    mean_score_diff: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def compare_detections(
    reference: Sequence[Detections],
    candidate: Sequence[Detections],
    min_iou: float = MIN_IOU,
    min_matched: float = MIN_MATCHED,
    max_score_diff: float = MAX_SCORE_DIFF,
    min_side: float = 0.0,
) -> EqualityReport:
    total = matched = 0
    diffs: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        ref_boxes, ref_scores, ref_queries = boxes_above(ref, min_side)
        cand_boxes, cand_scores, cand_queries = boxes_above(cand, 0.0)
        total += len(ref_scores)
        if not len(ref_scores) or not len(cand_scores):
            continue
        ious = box_iou(ref_boxes, cand_boxes)
        score_gap = np.abs(ref_scores[:, None] - cand_scores[None, :])
        allowed = (ious >= min_iou) & (ref_queries[:, None] == cand_queries[None, :])
        pairs = np.argwhere(allowed)
        order = np.argsort(score_gap[allowed], kind="stable")
        used_ref, used_cand = set(), set()
        for i, j in pairs[order]:
            if i in used_ref or j in used_cand:
                continue
            used_ref.add(i)
            used_cand.add(j)
            diffs.append(float(score_gap[i, j]))
        matched += len(used_ref)
    fraction = matched / total if total else 1.0
    worst = max(diffs, default=0.0)
    return EqualityReport(
        images=len(reference),
        reference_boxes=total,
        matched_boxes=matched,
        matched_fraction=round(fraction, 5),
        max_score_diff=round(worst, 5),
        mean_score_diff=round(float(np.mean(diffs)) if diffs else 0.0, 6),
        passed=fraction >= min_matched and worst <= max_score_diff,
    )


def boxes_above(det: Detections, min_side: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, scores, query indices) of the boxes whose both sides exceed ``min_side``: the ones compared."""
    boxes = det.boxes.astype(np.float64)
    keep = (boxes[:, 2] - boxes[:, 0] > min_side) & (boxes[:, 3] - boxes[:, 1] > min_side)
    return boxes[keep], det.scores[keep].astype(np.float64), det.query_index[keep]


def read_candidate(detector, images, sizes, queries, min_score: float, max_candidates: int, query_buckets=()) -> list:
    """A candidate's detections as the check reads them: the threshold lowered by the score tolerance and
    twice the budget, so boxes at the reference's boundary are not missed for being just under it."""
    return detector.detect(
        images, sizes, queries, max(0.0, min_score - MAX_SCORE_DIFF), 2 * max_candidates, query_buckets
    )


def check_fast_path(
    reference_detector,
    candidate_detector,
    batches,
    min_score: float,
    max_candidates: int,
    query_buckets: Sequence[int] = (),
) -> EqualityReport:
    """Run both detectors on the same batches and compare. A batch is (images, content sizes, queries)
    for both, or (reference images, candidate images, content sizes, queries) when the candidate
    takes the same images in another form (encoded, to decode on its device)."""
    reference: list[Detections] = []
    candidate: list[Detections] = []
    for batch in batches:
        reference_images, candidate_images, sizes, queries = batch if len(batch) == 4 else (batch[0], *batch)
        reference += reference_detector.detect(reference_images, sizes, queries, min_score, max_candidates)
        candidate += read_candidate(
            candidate_detector, candidate_images, sizes, queries, min_score, max_candidates, query_buckets
        )
    return compare_detections(reference, candidate, min_side=1.0 / reference_detector.image_size)
