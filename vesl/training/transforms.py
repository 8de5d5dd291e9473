"""The training input: how an original image becomes a ``size x size`` training image, and how stored
boxes (normalized xyxy on the original image) follow it. The only place boxes leave the stored
convention on the training side; each mode has a round-trip test on non-square images.

Modes:
- ``resize``: stretch to size x size (aspect ratio not kept).
- ``pad_center``: keep the aspect ratio, pad equally on both sides, exactly as TensorFlow's
  ``tf.image.resize_with_pad`` (CLOC's trainer) places it: in float32, ratio = max(w/size, h/size),
  resized side = floor(side / ratio), offset = floor((size - side / ratio) / 2) (the unfloored side,
  as TensorFlow does; checked on golden values TensorFlow produced). Where TensorFlow refuses (a side
  that resizes to 0 px), VESL keeps 1 px.
- ``pad_bottom_right``: keep the aspect ratio, image in the top-left corner (OWL's detector input).
- ``center_crop``: the largest centred square (offset ``(long - short) // 2``), resized to size x size:
  patch-seg's geometry (Locality Alignment's benchmark); boxes outside the square are clipped to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from vesl.patchseg.targets import center_square
from vesl.vision.geometry import content_size

MODES = ("resize", "pad_center", "pad_bottom_right", "center_crop")


@dataclass(frozen=True)
class Placement:
    """Where the original image lands in the training input, in training pixels (``center_crop``: the
    whole image's extent, partly outside the input, so a float)."""

    offset_x: float
    offset_y: float
    content_width: float
    content_height: float


def tf_resize_with_pad_placement(width: int, height: int, size: int) -> Placement:
    """``tf.image.resize_with_pad``'s arithmetic, step by step in float32 as TensorFlow computes it."""
    f32 = np.float32
    fw, fh, fs = f32(width), f32(height), f32(size)
    ratio = max(fw / fs, fh / fs)
    rw, rh = fw / ratio, fh / ratio  # float32
    cw, ch = max(1, int(np.floor(rw))), max(1, int(np.floor(rh)))
    ox, oy = max(0, int(np.floor((fs - rw) / f32(2)))), max(0, int(np.floor((fs - rh) / f32(2))))
    return Placement(ox, oy, cw, ch)


@dataclass(frozen=True)
class TrainingTransform:
    size: int
    mode: str = "pad_center"
    pad_value: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    def placement(self, width: int, height: int) -> Placement:
        size = self.size
        if self.mode == "resize":
            return Placement(0, 0, size, size)
        if self.mode == "pad_center":
            return tf_resize_with_pad_placement(width, height, size)
        if self.mode == "center_crop":
            left, top, side = center_square(width, height)
            scale = size / side
            return Placement(-left * scale, -top * scale, width * scale, height * scale)
        cw, ch = content_size(width, height, size)
        return Placement(0, 0, cw, ch)

    def image(self, image: Image.Image) -> np.ndarray:
        """RGB image -> ``size x size x 3`` uint8."""
        if self.mode == "center_crop":
            left, top, side = center_square(image.width, image.height)
            square = image.crop((left, top, left + side, top + side))
            return np.asarray(square.resize((self.size, self.size), Image.Resampling.BILINEAR), np.uint8)
        p = self.placement(image.width, image.height)
        resized = image.resize((int(p.content_width), int(p.content_height)), Image.Resampling.BILINEAR)
        canvas = np.full((self.size, self.size, 3), self.pad_value, np.uint8)
        x, y = int(p.offset_x), int(p.offset_y)
        canvas[y : y + resized.height, x : x + resized.width] = np.asarray(resized, np.uint8)
        return canvas

    def boxes(self, stored: np.ndarray, width: int, height: int) -> np.ndarray:
        """Stored boxes -> pixel xyxy in the training input (inside [0, size])."""
        p = self.placement(width, height)
        boxes = np.asarray(stored, np.float64).reshape(-1, 4)
        sx, sy = p.content_width, p.content_height  # the content's extent in training pixels
        out = np.stack(
            [
                boxes[:, 0] * sx + p.offset_x,
                boxes[:, 1] * sy + p.offset_y,
                boxes[:, 2] * sx + p.offset_x,
                boxes[:, 3] * sy + p.offset_y,
            ],
            axis=1,
        )
        return np.clip(out, 0, self.size).astype(np.float32)

    def to_stored(self, boxes_px: np.ndarray, width: int, height: int) -> np.ndarray:
        """Inverse of ``boxes``."""
        p = self.placement(width, height)
        boxes = np.asarray(boxes_px, np.float64).reshape(-1, 4)
        sx, sy = p.content_width, p.content_height
        out = np.stack(
            [
                (boxes[:, 0] - p.offset_x) / sx,
                (boxes[:, 1] - p.offset_y) / sy,
                (boxes[:, 2] - p.offset_x) / sx,
                (boxes[:, 3] - p.offset_y) / sy,
            ],
            axis=1,
        )
        return out.astype(np.float32)
