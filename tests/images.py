"""Generators of real encoded images in the modes and states VESL must handle."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def rgb_with_rectangle(width: int, height: int, box_px: tuple[int, int, int, int], color=(255, 0, 0)) -> Image.Image:
    """A grey image with a solid rectangle covering pixels [x0, x1) x [y0, y1)."""
    array = np.full((height, width, 3), 90, np.uint8)
    x0, y0, x1, y1 = box_px
    array[y0:y1, x0:x1] = color
    return Image.fromarray(array, "RGB")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG")  # red in CMYK


def grayscale_png() -> bytes:
    return encode(Image.new("L", (40, 30), 200), "PNG")


def palette_png(transparent: bool = False) -> bytes:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    return encode(image, "PNG", transparency=1) if transparent else encode(image, "PNG")


def rgba_png() -> bytes:
    array = np.zeros((30, 40, 4), np.uint8)
    array[..., 2] = 255  # blue
    array[:, :20, 3] = 255  # left half opaque, right half fully transparent
    return encode(Image.fromarray(array, "RGBA"), "PNG")


def gray16_png(value: int = 65535) -> bytes:
    return encode(Image.fromarray(np.full((30, 40), value, np.uint16)), "PNG")


def exif_rotated_jpeg(width: int = 60, height: int = 30, orientation: int = 6) -> bytes:
    """Displayed size width x height; stored rotated with EXIF orientation 6 (stored height x width)."""
    displayed = rgb_with_rectangle(width, height, (0, 0, width // 4, height // 3))
    stored = displayed.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (40, 30), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated_jpeg() -> bytes:
    data = encode(rgb_with_rectangle(64, 48, (5, 5, 20, 20)), "JPEG", quality=95)
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    data = bytearray(encode(rgb_with_rectangle(64, 48, (5, 5, 20, 20)), "PNG"))
    data[60:120] = b"\x00" * 60  # damage the image data chunk
    return bytes(data)


def bomb_png(side: int = 10_000) -> bytes:
    """A 1-bit PNG of side x side pixels: small on disk, huge once decoded (100M pixels by default)."""
    return encode(Image.new("1", (side, side), 0), "PNG")
