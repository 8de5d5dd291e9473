"""Detector-input geometry and the one box conversion each way.

Stored convention (``vesl.schema.BOX_CONVENTION``): ``(xmin, ymin, xmax, ymax)`` normalized by the
width and height of the original image as displayed, in [0, 1].

OWLv2 sees the image padded to a square on the bottom/right and resized to ``size``; its boxes are
``(cx, cy, w, h)`` normalized by that square. VESL resizes first and pads after, so the image fills
exactly the top-left ``content_width x content_height`` pixels of the detector input; converting with
those integer sizes (not ``max(w, h)``) keeps boxes on the right pixels whatever the rounding.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def content_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Size of the image inside the ``size x size`` detector input (longer side = ``size``)."""
    scale = size / max(width, height)
    return max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale)))


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, int, int]:
    """RGB image -> (``size x size x 3`` uint8 with the image resized into the top-left corner,
    content width, content height). The padding is filled by the detector (with ``DetectConfig.pad_value``)."""
    cw, ch = content_size(image.width, image.height, size)
    resized = image.resize((cw, ch), Image.Resampling.BILINEAR) if (cw, ch) != image.size else image
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:ch, :cw] = np.asarray(resized, dtype=np.uint8)
    return canvas, cw, ch


def detector_to_stored(boxes_cxcywh: np.ndarray, content_fraction: tuple[float, float]) -> np.ndarray:
    """Detector boxes (normalized cxcywh on the padded square) -> stored normalized xyxy, clipped.

    ``content_fraction`` = (content_width / size, content_height / size).
    """
    boxes = np.asarray(boxes_cxcywh, np.float64).reshape(-1, 4)
    fx, fy = content_fraction
    cx, cy, w, h = boxes.T
    xyxy = np.stack([(cx - w / 2) / fx, (cy - h / 2) / fy, (cx + w / 2) / fx, (cy + h / 2) / fy], axis=1)
    return np.clip(xyxy, 0.0, 1.0).astype(np.float32)


def stored_to_detector(boxes_xyxy: np.ndarray, content_fraction: tuple[float, float]) -> np.ndarray:
    """Inverse of ``detector_to_stored`` (for boxes inside the image)."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    fx, fy = content_fraction
    x0, y0, x1, y1 = boxes.T
    return np.stack([(x0 + x1) / 2 * fx, (y0 + y1) / 2 * fy, (x1 - x0) * fx, (y1 - y0) * fy], axis=1).astype(np.float32)


def stored_to_pixels(boxes_xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Stored boxes -> absolute pixel xyxy on the original image (pixel edges, not centres)."""
    return np.asarray(boxes_xyxy, np.float64).reshape(-1, 4) * np.array([width, height, width, height])


def pixels_to_stored(boxes_px: np.ndarray, width: int, height: int) -> np.ndarray:
    return (np.asarray(boxes_px, np.float64).reshape(-1, 4) / np.array([width, height, width, height])).astype(
        np.float32
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (n, 4) x (m, 4) -> (n, m)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy class-agnostic NMS; returns kept indices, best score first. A box is suppressed when its
    IoU with a kept box is > ``iou_threshold``."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    keep: list[int] = []
    suppressed = np.zeros(len(order), bool)
    ious = box_iou(boxes, boxes)
    for rank, i in enumerate(order):
        if suppressed[rank]:
            continue
        keep.append(int(i))
        suppressed[rank + 1 :] |= ious[i, order[rank + 1 :]] > iou_threshold
    return np.array(keep, dtype=np.int64)
