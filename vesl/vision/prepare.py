"""Record -> detector input: decode, validate, letterbox (the CPU half of the detection stage)."""

from __future__ import annotations

import dataclasses

from vesl.config import DetectConfig
from vesl.records import DetectorInput, ImageRecord
from vesl.vision.decode import decode_image
from vesl.vision.geometry import letterbox


def prepare_image(record: ImageRecord, config: DetectConfig, keep_image_bytes: bool) -> DetectorInput:
    """Decode, validate and letterbox one record (raises ImageDecodeError)."""
    decoded = decode_image(record.image_bytes, config.max_image_pixels, config.alpha_background)
    pixels, cw, ch = letterbox(decoded.image, config.image_size)
    sized = dataclasses.replace(
        record,
        width=decoded.image.width,
        height=decoded.image.height,
        image_format=decoded.format,
        image_bytes=record.image_bytes if keep_image_bytes else b"",
    )
    return DetectorInput(sized, pixels, cw, ch)
