"""Image decoding: every mode and broken state the issue lists."""

from __future__ import annotations

import numpy as np
import pytest

from tests import images
from vesl.records import Reason
from vesl.vision.decode import ImageDecodeError, decode_image, probe_image

LIMIT = 89_478_485


def pixel(data: bytes, xy=(0, 0)):
    return decode_image(data, LIMIT).image.getpixel(xy)


@pytest.mark.parametrize(
    ("data", "mode"),
    [
        (images.cmyk_jpeg(), "CMYK"),
        (images.grayscale_png(), "L"),
        (images.palette_png(), "P"),
        (images.rgba_png(), "RGBA"),
        (images.gray16_png(), "I;16"),
        (images.animated_gif(), "P"),
    ],
)
def test_modes_become_rgb(data, mode):
    decoded = decode_image(data, LIMIT)
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 30)
    assert decoded.source_mode.startswith(mode[:1])


def test_colours_survive_conversion():
    r, g, b = pixel(images.cmyk_jpeg())
    assert r > 200 and g < 60 and b < 60
    assert pixel(images.grayscale_png()) == (200, 200, 200)
    assert pixel(images.palette_png()) == (0, 200, 0)
    assert pixel(images.gray16_png(65535)) == (255, 255, 255)
    assert pixel(images.gray16_png(32896)) == (128, 128, 128)  # scaled, not clipped to 255


def test_alpha_is_composited_on_the_background():
    assert pixel(images.rgba_png(), (5, 5)) == (0, 0, 255)
    assert pixel(images.rgba_png(), (35, 5)) == (255, 255, 255)
    grey = decode_image(images.rgba_png(), LIMIT, alpha_background=(128, 128, 128)).image.getpixel((35, 5))
    assert grey == (128, 128, 128)
    assert pixel(images.palette_png(transparent=True)) == (255, 255, 255)


def test_animated_gif_uses_the_first_frame():
    r, _g, b = pixel(images.animated_gif())
    assert r > 200 and b < 60


def test_exif_orientation_is_applied():
    decoded = decode_image(images.exif_rotated_jpeg(60, 30), LIMIT)
    assert decoded.image.size == (60, 30)  # as displayed, not as stored (30 x 60)
    array = np.asarray(decoded.image)
    assert array[2, 2, 0] > 200 and array[2, 2, 1] < 80  # the red corner is back at the top-left


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.EMPTY_IMAGE),
        (b"<html>404 not found</html>", Reason.NOT_AN_IMAGE),
        (images.truncated_jpeg(), Reason.CORRUPT_IMAGE),
        (images.corrupt_png(), Reason.CORRUPT_IMAGE),
        (images.bomb_png(), Reason.TOO_MANY_PIXELS),
    ],
)
def test_bad_bytes_raise_with_a_reason(data, reason):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, LIMIT)
    assert info.value.reason == reason and info.value.detail


def test_pixel_limit_is_configurable():
    with pytest.raises(ImageDecodeError, match="1200 pixels > limit 1000"):
        decode_image(images.grayscale_png(), max_pixels=1000)


def test_pixel_limit_can_be_raised_above_pillows_own():
    """Pillow refuses images over 2 x 89,478,485 pixels by itself; VESL's limit is the only one."""
    big = images.bomb_png(side=14_000)  # 196M pixels, over Pillow's 178,956,970
    header = probe_image(big, max_pixels=200_000_000)
    assert (header.width, header.height) == (14_000, 14_000)
    with pytest.raises(ImageDecodeError) as info:
        probe_image(big, max_pixels=100_000_000)
    assert info.value.reason == Reason.TOO_MANY_PIXELS
    assert info.value.detail == "14000x14000 = 196000000 pixels > limit 100000000"  # VESL's number


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"root:x:0:0:root:/root:/bin/bash\n", "text"),
        (b"<!DOCTYPE html><html><body>secret</body></html>", "HTML"),
        (b"%PDF-1.7 secret", "PDF"),
        (b"PK\x03\x04secret", "ZIP archive"),
        (b"\x1f\x8bsecret", "gzip data"),
        (b'{"token": "secret"}', "JSON"),
        (bytes(range(256)), "binary data"),
    ],
)
def test_not_an_image_says_what_was_found_never_the_content(data, kind):
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, LIMIT)
    assert info.value.reason == Reason.NOT_AN_IMAGE
    assert info.value.detail == f"{len(data)} bytes, not an image (looks like {kind})"
    assert "secret" not in info.value.detail and "root" not in info.value.detail
