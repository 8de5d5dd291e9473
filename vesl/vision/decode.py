"""Encoded bytes -> validated RGB image as displayed.

What is accepted and how (each case has a test):
- any format Pillow reads; animated images (GIF, APNG, WebP) use their first frame;
- EXIF orientation is applied (``ImageOps.exif_transpose``): width, height and boxes refer to the
  image as a viewer displays it;
- CMYK, YCbCr, LAB, HSV, 1-bit, grayscale and palette images are converted to RGB; 16-bit and 32-bit
  grayscale are scaled to 8 bits (not clipped); transparent pixels are composited onto
  ``alpha_background`` (by default ``DetectConfig``'s, declared there alone);
- zero-byte, non-image, truncated or corrupt data, and images above ``max_pixels`` (decompression
  bombs, checked from the header before any pixel is decoded) raise ``ImageDecodeError`` with a
  ``Reason`` and a detail.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vesl.config import DetectConfig
from vesl.records import Reason

# VESL checks the pixel count itself (max_pixels, from the header, before any pixel is decoded), so
# Pillow's own, lower limit is switched off: --max_image_pixels may be raised above it.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
Image.MAX_IMAGE_PIXELS = None

# Leading bytes -> what a file that is not an image looks like (a reject says this, never the content).
_SIGNATURES = (
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ", "xz data"),
    (b"\x7fELF", "ELF executable"),
)


def describe_bytes(data: bytes) -> str:
    """A name for what ``data`` looks like, from its signature: never any of its content."""
    head = data[:512]
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    try:
        text = head.decode("utf-8").lstrip("\ufeff \t\r\n").lower()
    except UnicodeDecodeError:
        return "binary data"
    if not text.isprintable() and any(c not in "\t\r\n" and not c.isprintable() for c in text):
        return "binary data"
    if text.startswith(("<!doctype html", "<html", "<head", "<body")):
        return "HTML"
    if text.startswith(("<?xml", "<svg")):
        return "XML/SVG"
    if text.startswith(("{", "[")):
        return "JSON"
    return "text"


class ImageDecodeError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # mode "RGB", as displayed
    format: str | None  # Pillow's format name of the encoded bytes ("JPEG", "PNG", ...)
    source_mode: str  # the mode before conversion, for diagnostics


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only (no pixel is decoded) and check it: not empty, an image, a sane size
    within ``max_pixels``. Raises ImageDecodeError."""
    if not data:
        raise ImageDecodeError(Reason.EMPTY_IMAGE, "0 bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(Reason.TOO_MANY_PIXELS, str(exc)) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(
            Reason.NOT_AN_IMAGE, f"{len(data)} bytes, not an image (looks like {describe_bytes(data)})"
        ) from None
    except Exception as exc:  # Pillow raises many types on malformed headers
        raise ImageDecodeError(Reason.CORRUPT_IMAGE, f"{type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError(Reason.CORRUPT_IMAGE, f"image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            Reason.TOO_MANY_PIXELS, f"{width}x{height} = {width * height} pixels > limit {max_pixels}"
        )
    return image


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before any pixel is decoded."""

    format: str | None
    mode: str
    width: int  # as displayed (EXIF orientation applied)
    height: int
    orientation: int  # EXIF orientation tag (1 = as stored)


# EXIF orientations 5-8 turn the image by 90 degrees: displayed width = stored height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def probe_image(data: bytes, max_pixels: int) -> ImageHeader:
    """The checks of ``decode_image`` that need no pixel, and the displayed size (raises
    ImageDecodeError)."""
    image = open_image(data, max_pixels)
    try:
        orientation = int(image.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1  # unreadable EXIF: decode_image keeps the stored orientation too
    if orientation not in range(1, 9):
        orientation = 1
    width, height = image.size
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ImageHeader(image.format, image.mode, width, height, orientation)


def decode_image(
    data: bytes, max_pixels: int, alpha_background: tuple[int, int, int] = DetectConfig.alpha_background
) -> DecodedImage:
    image = open_image(data, max_pixels)
    fmt, source_mode = image.format, image.mode
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.load()
    except Exception as exc:
        raise ImageDecodeError(Reason.CORRUPT_IMAGE, f"{fmt or 'image'} data: {type(exc).__name__}: {exc}") from None
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:
        pass  # unreadable EXIF: keep the stored orientation rather than lose the image
    try:
        rgb = to_rgb(image, alpha_background)
    except Exception as exc:
        raise ImageDecodeError(Reason.CORRUPT_IMAGE, f"cannot convert mode {image.mode}: {exc}") from None
    return DecodedImage(rgb, fmt, source_mode)


def to_rgb(image: Image.Image, alpha_background: tuple[int, int, int] = DetectConfig.alpha_background) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*alpha_background, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    if mode == "F":
        return np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    values = array.astype(np.int64)
    # 16-bit data scales by 257 (65535 -> 255); "I" images holding 8-bit values stay as they are.
    if mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values // 257 if values.max(initial=0) <= 65535 else values >> 24
    return np.clip(values, 0, 255).astype(np.uint8)
