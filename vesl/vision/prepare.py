"""Record -> detector input (the CPU half of the detection stage).

With the CPU decoder: decode, validate, letterbox. With decoding on the device
(``decode_on_device``): JPEGs only have their header checked here and travel encoded to the detector
(``vesl.vision.device_decode``); other formats are decoded here as before.
"""

from __future__ import annotations

import dataclasses

from vesl.config import DetectConfig
from vesl.records import DetectorInput, ImageRecord
from vesl.vision.decode import decode_image, probe_image
from vesl.vision.device_decode import EncodedImage, decodes_on_device
from vesl.vision.geometry import content_size, letterbox


def prepare_image(
    record: ImageRecord, config: DetectConfig, keep_image_bytes: bool, decode_on_device: bool = False
) -> DetectorInput:
    """Decode (or probe), validate and letterbox one record (raises ImageDecodeError)."""
    kept_bytes = record.image_bytes if keep_image_bytes else b""
    if decode_on_device:
        header = probe_image(record.image_bytes, config.max_image_pixels)
        if decodes_on_device(header):
            sized = dataclasses.replace(
                record, width=header.width, height=header.height, image_format=header.format, image_bytes=kept_bytes
            )
            cw, ch = content_size(header.width, header.height, config.image_size)
            return DetectorInput(sized, EncodedImage(record.image_bytes, header), cw, ch)
    decoded = decode_image(record.image_bytes, config.max_image_pixels, config.alpha_background)
    pixels, cw, ch = letterbox(decoded.image, config.image_size)
    sized = dataclasses.replace(
        record,
        width=decoded.image.width,
        height=decoded.image.height,
        image_format=decoded.format,
        image_bytes=kept_bytes,
    )
    return DetectorInput(sized, pixels, cw, ch)
