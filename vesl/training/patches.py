"""Patch-level targets for locality objectives: which ViT patches of the training input each region
covers.

A patch belongs to a region when its centre lies inside the region's box (boxes in training pixels).
``patch_region_index`` gives, per patch, the index of the smallest region containing its centre (the
most specific one), or -1. ``PatchClassTargets`` gives patch-seg's per-patch class targets (Locality
Alignment's benchmark) from the regions' phrases through a class vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vesl.patchseg.targets import PatchGrid, patch_targets
from vesl.patchseg.vocabulary import Matcher, Vocabulary, matched_boxes


def patch_centres(size: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    if size % patch:
        raise ValueError(f"training size {size} is not a multiple of the patch size {patch}")
    centres = (np.arange(size // patch) + 0.5) * patch
    return centres, centres


def patch_masks(boxes_px: np.ndarray, size: int, patch: int) -> np.ndarray:
    """[M, 4] boxes -> [M, G, G] bool, G = size // patch."""
    xs, ys = patch_centres(size, patch)
    boxes = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    inside_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])  # [M, G]
    inside_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])
    return inside_y[:, :, None] & inside_x[:, None, :]


def patch_region_index(boxes_px: np.ndarray, size: int, patch: int, valid: np.ndarray | None = None) -> np.ndarray:
    """[M, 4] boxes -> [G, G] int32: smallest containing region per patch, -1 where none."""
    masks = patch_masks(boxes_px, size, patch)
    if valid is not None:
        masks &= np.asarray(valid, bool)[:, None, None]
    g = size // patch
    if not len(masks):
        return np.full((g, g), -1, np.int32)
    boxes = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cost = np.where(masks, area[:, None, None], np.inf)
    index = cost.argmin(axis=0).astype(np.int32)
    index[~masks.any(axis=0)] = -1
    return index


READER_CROPS = {"center_crop": "center", "pad_bottom_right": "letterbox", "resize": "none"}


@dataclass(frozen=True)
class PatchClassTargets:
    """Per-patch class targets of a whole image in patch-seg's geometry (``vesl.patchseg.targets``):
    each region's phrase through the vocabulary (a ``Vocabulary``, matched by head noun, or your own
    ``Matcher``, e.g. with the detector's text embedding), unmatched regions left out, every region of
    the image (not only the ones sampled for the contrastive loss). ``union`` gives ``(G, G, C)`` bool
    with ``C = len(vocabulary) + 1`` (0 = unlabeled), ``majority`` ``(G, G)`` class ids."""

    vocabulary: Vocabulary | Matcher
    grid: PatchGrid
    reduction: str = "union"
    crop: str = "center"
    matcher: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocabulary = self.vocabulary
        object.__setattr__(self, "matcher", vocabulary if isinstance(vocabulary, Matcher) else Matcher(vocabulary))

    @property
    def num_classes(self) -> int:
        return len(self.matcher.vocabulary) + 1

    def __call__(self, boxes, phrases: Sequence[str], width: int, height: int) -> np.ndarray:
        named, classes, _ = matched_boxes(boxes, phrases, self.matcher)
        return patch_targets(named, classes, width, height, self.grid, self.num_classes, self.reduction, self.crop)


def reader_patch_classes(
    vocabulary: Vocabulary | Matcher, size: int, patch: int, mode: str, reduction: str = "union"
) -> PatchClassTargets:
    """The targets that line up with a training reader's input: its mode decides the crop."""
    if mode not in READER_CROPS:
        raise ValueError(
            f"patch class targets need the reader's mode to be one of {sorted(READER_CROPS)} "
            f"(patch-seg's geometry has no centred letterbox), got {mode!r}"
        )
    return PatchClassTargets(vocabulary, PatchGrid(size, patch), reduction, READER_CROPS[mode])
