"""Detections -> kept regions, and whether the image is kept.

Region rules, in order (each dropped candidate is counted under its reason):
``below_threshold`` (score <= score_threshold), ``degenerate_box`` (zero width or height after
clipping to the image), ``sub_pixel`` (a side under one pixel of the original image, always),
``too_small`` (a side under ``min_box_side_px`` original pixels), ``nms``
(class-agnostic, IoU > nms_iou with a better box), ``over_cap`` (beyond ``max_regions_per_image``).
Image rules: ``keep_image_min_score`` (OWL-ST) and ``drop_images_without_regions`` (GRIT) reject the
image with a reason; otherwise an image with zero regions is written and counted.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from vesl.config import FilterConfig
from vesl.records import Detections, ImageRecord, LabeledImage, Reason, Region
from vesl.vision.geometry import nms


def filter_detections(record: ImageRecord, detections: Detections, cfg: FilterConfig) -> LabeledImage:
    drops: Counter[str] = Counter()
    order = np.argsort(-detections.scores, kind="stable")
    boxes = detections.boxes[order].astype(np.float64)
    scores = detections.scores[order]
    keep = np.ones(len(order), bool)

    def drop(mask: np.ndarray, reason: str) -> None:
        newly = keep & mask
        if newly.any():
            drops[reason] += int(newly.sum())
            keep[newly] = False

    drop(scores <= cfg.score_threshold, "below_threshold")
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    drop((widths <= 0) | (heights <= 0), "degenerate_box")
    if record.width and record.height:  # under one original pixel on a side: no region to learn from
        drop((widths * record.width < 1) | (heights * record.height < 1), "sub_pixel")
    if cfg.min_box_side_px > 0 and record.width and record.height:
        drop(
            (widths * record.width < cfg.min_box_side_px) | (heights * record.height < cfg.min_box_side_px), "too_small"
        )
    if cfg.nms_iou is not None and keep.sum() > 1:
        alive = np.flatnonzero(keep)
        survivors = alive[nms(boxes[alive], scores[alive], cfg.nms_iou)]
        drop(~np.isin(np.arange(len(keep)), survivors), "nms")
    if cfg.max_regions_per_image is not None:
        alive = np.flatnonzero(keep)  # still best first
        drop(np.isin(np.arange(len(keep)), alive[cfg.max_regions_per_image :]), "over_cap")

    regions = []
    for rank in np.flatnonzero(keep):
        i = order[rank]
        q = int(detections.query_index[i])
        phrase = record.phrases[q]
        regions.append(
            Region(
                phrase=phrase.text,
                char_start=phrase.char_start,
                char_end=phrase.char_end,
                parser=phrase.parser,
                query_index=q,
                box=tuple(float(v) for v in detections.boxes[i]),  # type: ignore[arg-type]
                score=float(detections.scores[i]),
                objectness=float(detections.objectness[i]),
                caption_source=phrase.caption_source,
            )
        )
    return LabeledImage(record, tuple(regions), tuple(sorted(drops.items())))


def image_reject_reason(labeled: LabeledImage, cfg: FilterConfig) -> tuple[str, str] | None:
    """(reason, detail) when the image-level rules reject the image, else None."""
    if cfg.keep_image_min_score is not None:
        best = max((r.score for r in labeled.regions), default=0.0)
        if best < cfg.keep_image_min_score:
            return Reason.NO_CONFIDENT_BOX, f"best box score {best:.3f} < {cfg.keep_image_min_score}"
    if cfg.drop_images_without_regions and not labeled.regions:
        n_phrases = len(labeled.record.phrases)
        return Reason.NO_REGIONS, f"no region kept ({n_phrases} phrases)"
    return None
