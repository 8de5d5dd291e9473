"""Patch-level class targets in patch-seg's geometry, computed from stored boxes.

patch-seg (Locality Alignment's benchmark, github iancovert/patch-seg) turns a label map (one class
per pixel, 0 = unlabeled) into per-patch targets: LargestCenterCrop (a square of the short side,
offset ``(long - short) // 2``) -> ``Resize((S, S), NEAREST)`` (Pillow) -> ``ReduceAnnotation(p, C,
mode)`` over ``p x p`` blocks, row-major, leftover pixels dropped:

- ``union``: a ``(G, G, C)`` multi-hot; class 0 (unlabeled) is set only where it is the patch's only
  class;
- ``majority``: a ``(G, G)`` class id per patch, the most frequent one (ties: the smallest id, as
  ``torch.mode`` on CPU).

VESL's label map is painted from boxes (``paint_label_map``): largest area first (ties: input order),
so smaller boxes end on top; a pixel (x, y) belongs to a box when its centre lies in the half-open box,
``x1*W <= x + 0.5 < x2*W`` and ``y1*H <= y + 0.5 < y2*H`` (boxes in VESL's stored convention:
normalized xyxy on the original image).

``patch_targets`` gives the same targets without painting the full-resolution map: a NEAREST resize
only ever reads S x S source pixels, so it computes which source pixel each of the S x S pixels reads
(Pillow's own arithmetic, ``pillow_nearest_sources``), where each box's run of them starts and ends,
and paints the cells between box and patch edges, each once, weighted by its pixel count.
Equal to patch-seg's code on every case of ``../shared/data/patchseg/known_answers.json.gz`` and to
painting + Pillow + reduction on random cases (tests/unit/test_patchseg_targets.py).

Crops (how the original image becomes the S x S input):
- ``center``: patch-seg's (the largest centred square, then resized);
- ``letterbox``: VESL's detector input (the image in the top-left corner of a square of its long side,
  the rest unlabeled, then resized) -- the training readers' ``pad_bottom_right``;
- ``none``: the whole image stretched to S x S -- the training readers' ``resize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CROPS = ("center", "letterbox", "none")
REDUCTIONS = ("union", "majority")


@dataclass(frozen=True)
class PatchGrid:
    """The backbone's input: ``size`` pixels square, ``patch`` pixels a patch (224/16 -> 14 x 14)."""

    size: int
    patch: int

    def __post_init__(self) -> None:
        if self.patch < 1 or self.size < self.patch:
            raise ValueError(f"patch grid needs 1 <= patch <= size, got size {self.size}, patch {self.patch}")

    @property
    def grid(self) -> int:
        return self.size // self.patch


@lru_cache(maxsize=4096)
def _pillow_nearest_sources(source: int, target: int) -> tuple[int, ...]:
    # Pillow resizes NEAREST (no rotation) in ImagingScaleAffine: the source coordinate starts at
    # half a step and is accumulated step by step in double precision, then truncated. The
    # accumulation (not (i + 0.5) * step) is what makes it differ from the closed form on some sizes.
    step = float(source) / target
    position = step * 0.5
    out = []
    for _ in range(target):
        out.append(int(position) if position >= 0 else -1)
        position += step
    return tuple(out)


def pillow_nearest_sources(source: int, target: int) -> np.ndarray:
    """For each of ``target`` output pixels, the source pixel Pillow's NEAREST resize reads."""
    return np.asarray(_pillow_nearest_sources(source, target), np.int64)


def center_square(width: int, height: int) -> tuple[int, int, int]:
    """(left, top, side) of the largest centred square of a ``width x height`` image: the crop of
    patch-seg's LargestCenterCrop, which the training reader and the patch targets must share exactly.
    Here, not in ``vesl.vision.geometry``: this module imports numpy only (tf.data's readers import it
    in an environment without Pillow)."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def sampled_pixels(width: int, height: int, size: int, crop: str = "center") -> tuple[np.ndarray, np.ndarray]:
    """Source pixel columns and rows (``[S]`` each) that the S x S input reads; -1 where it reads
    padding (``letterbox``)."""
    if crop == "center":
        left, top, side = center_square(width, height)
        return left + pillow_nearest_sources(side, size), top + pillow_nearest_sources(side, size)
    if crop == "letterbox":
        side = max(width, height)
        xs, ys = pillow_nearest_sources(side, size), pillow_nearest_sources(side, size)
        return np.where(xs < width, xs, -1), np.where(ys < height, ys, -1)
    if crop == "none":
        return pillow_nearest_sources(width, size), pillow_nearest_sources(height, size)
    raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")


def painting_order(boxes: np.ndarray) -> np.ndarray:
    """Indices of ``boxes`` in painting order: largest area first, ties in input order."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.argsort(-area, kind="stable")


def _inside(pixels: np.ndarray, low: float, high: float, extent: int) -> np.ndarray:
    """Which pixel indices have their centre in [low * extent, high * extent); -1 (padding) never."""
    centres = pixels + 0.5
    return (pixels >= 0) & (centres >= low * extent) & (centres < high * extent)


def _boxes_and_classes(boxes, classes) -> tuple[np.ndarray, np.ndarray]:
    """``[M, 4]`` float64 boxes and ``[M]`` int64 classes; ValueError when the counts differ."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(boxes) != len(classes):
        raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes")
    return boxes, classes


def _paint(xs: np.ndarray, ys: np.ndarray, boxes, classes, width: int, height: int, dtype) -> np.ndarray:
    """The label map at the pixels (rows ``ys`` x columns ``xs``)."""
    boxes, classes = _boxes_and_classes(boxes, classes)
    out = np.zeros((len(ys), len(xs)), dtype)
    for i in painting_order(boxes):
        x1, y1, x2, y2 = boxes[i]
        cols = np.flatnonzero(_inside(xs, x1, x2, width))
        rows = np.flatnonzero(_inside(ys, y1, y2, height))
        if len(cols) and len(rows):
            out[np.ix_(rows, cols)] = classes[i]
    return out


def paint_label_map(boxes, classes, width: int, height: int, dtype=np.uint8) -> np.ndarray:
    """The full-resolution ``(H, W)`` label map of boxes (what the patch-seg export writes as PNG)."""
    return _paint(np.arange(width), np.arange(height), boxes, classes, width, height, dtype)


def sampled_label_map(boxes, classes, width: int, height: int, size: int, crop: str = "center") -> np.ndarray:
    """The ``(S, S)`` label map after crop and NEAREST resize, painted at the sampled pixels only."""
    xs, ys = sampled_pixels(width, height, size, crop)
    return _paint(xs, ys, boxes, classes, width, height, np.int64)


def reduce_patches(label_map: np.ndarray, patch: int, num_classes: int, reduction: str = "union") -> np.ndarray:
    """patch-seg's ReduceAnnotation of an ``(S, S)`` label map: ``union`` -> ``(G, G, C)`` bool,
    ``majority`` -> ``(G, G)`` int64."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    labels = np.asarray(label_map, np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"label map holds classes outside 0..{num_classes - 1}")
    g = labels.shape[0] // patch
    blocks = labels[: g * patch, : g * patch].reshape(g, patch, g, patch).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(g * g, patch * patch)
    cell = np.repeat(np.arange(g * g), patch * patch)
    counts = np.bincount(cell * num_classes + blocks.reshape(-1), minlength=g * g * num_classes)
    return _reduced(counts.reshape(g, g, num_classes), reduction)


def _box_spans(pixels: np.ndarray, low: np.ndarray, high: np.ndarray, extent: int) -> np.ndarray:
    """Per box, the ``[first, end)`` run of input pixels it covers (``pixels`` never decrease outside
    the padding, so a box covers one contiguous run); an empty run where it covers none."""
    spans = np.zeros((len(low), 2), np.int64)
    for i, (lo, hi) in enumerate(zip(low, high)):
        inside = np.flatnonzero(_inside(pixels, lo, hi, extent))
        if len(inside):
            spans[i] = inside[0], inside[-1] + 1
    return spans


def _cuts(spans: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """Where the input's label can change along one axis: box edges and patch edges (``[0, G*p]``)."""
    end = grid.grid * grid.patch
    edges = np.concatenate([np.arange(0, end + 1, grid.patch), np.clip(spans.reshape(-1), 0, end)])
    return np.unique(edges)


def patch_targets(
    boxes,
    classes,
    width: int,
    height: int,
    grid: PatchGrid,
    num_classes: int,
    reduction: str = "union",
    crop: str = "center",
) -> np.ndarray:
    """Stored boxes (normalized xyxy, ``[M, 4]``) with class ids (1..C-1) -> patch targets in patch-seg's
    geometry: ``union`` ``(G, G, C)`` bool, ``majority`` ``(G, G)`` int64.

    Exactly ``reduce_patches(sampled_label_map(...))``, in time that grows with the boxes and patches,
    not the pixels: between consecutive box or patch edges the input's label is constant, so each
    such cell is painted once and counted with its pixel area."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    boxes, classes = _boxes_and_classes(boxes, classes)
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"boxes hold classes outside 0..{num_classes - 1}")
    xs, ys = sampled_pixels(width, height, grid.size, crop)
    col_spans = _box_spans(xs, boxes[:, 0], boxes[:, 2], width)
    row_spans = _box_spans(ys, boxes[:, 1], boxes[:, 3], height)
    col_cuts, row_cuts = _cuts(col_spans, grid), _cuts(row_spans, grid)
    cells = np.zeros((len(row_cuts) - 1, len(col_cuts) - 1), np.int64)
    for i in painting_order(boxes):
        r0, r1 = np.searchsorted(row_cuts, row_spans[i])
        c0, c1 = np.searchsorted(col_cuts, col_spans[i])
        cells[r0:r1, c0:c1] = classes[i]
    g = grid.grid
    patch_of = np.add.outer(row_cuts[:-1] // grid.patch * g, col_cuts[:-1] // grid.patch)
    area = np.outer(np.diff(row_cuts), np.diff(col_cuts)).astype(np.float64)
    counts = np.bincount((patch_of * num_classes + cells).reshape(-1), area.reshape(-1), g * g * num_classes)
    return _reduced(counts.reshape(g, g, num_classes), reduction)


def _reduced(counts: np.ndarray, reduction: str) -> np.ndarray:
    """Per-patch class pixel counts ``(G, G, C)`` -> the reduction's targets."""
    if reduction == "majority":
        return counts.argmax(axis=-1)  # first maximum: ties go to the smallest class id
    present = counts > 0
    present[..., 0] &= ~present[..., 1:].any(axis=-1)
    return present


def union_entries(targets: np.ndarray) -> list[list[int]]:
    """A union target's non-zero entries as [row, col, class] (the known answers' form)."""
    return np.argwhere(targets).tolist()
