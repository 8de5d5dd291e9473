"""Patch-level targets for locality objectives: which ViT patches of the training input each region
covers.

A patch belongs to a region when its centre lies inside the region's box (boxes in training pixels).
``patch_region_index`` gives, per patch, the index of the smallest region containing its centre (the
most specific one), or -1.
"""

from __future__ import annotations

import numpy as np


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
