"""Decoding on the detector's device (nvImageCodec) against the CPU path (Pillow).

nvImageCodec runs here on its CPU backend (libjpeg-turbo), which is the same library and code path
the GPU run uses except for the nvJPEG kernels; the orientation, letterbox and fallback logic is all
VESL's and runs the same on either device.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from tests import images
from vesl.config import DetectConfig
from vesl.records import ImageRecord, Reason
from vesl.vision.decode import ImageDecodeError, probe_image
from vesl.vision.device_decode import (
    DecodeFailure,
    DeviceImageDecoder,
    EncodedImage,
    letterbox_tensor,
    orient,
    resolve_image_decoder,
)
from vesl.vision.geometry import letterbox
from vesl.vision.prepare import prepare_image

PHOTOS = Path(__file__).resolve().parent.parent / "fixtures" / "photos"
nvimgcodec = pytest.importorskip("nvidia.nvimgcodec", reason="nvidia-nvimgcodec-cu12 is in requirements/lock.txt")


def _photo_jpegs() -> list[bytes]:
    return [p.read_bytes() for p in sorted(PHOTOS.glob("*.jpg"))]


def _with_orientation(data: bytes, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return images.encode(Image.open(io.BytesIO(data)).convert("RGB"), "JPEG", quality=92, exif=exif.tobytes())


@pytest.fixture(scope="module")
def decoder() -> DeviceImageDecoder:
    return DeviceImageDecoder("cpu", max_pixels=10**8)


def _encoded(data: bytes) -> EncodedImage:
    return EncodedImage(data, probe_image(data, 10**8))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(orientation):
    data = _with_orientation(_photo_jpegs()[0], orientation)
    stored = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB")))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(orient(stored, orientation).numpy(), expected)
    header = probe_image(data, 10**8)
    assert (header.width, header.height) == (expected.shape[1], expected.shape[0])
    assert header.orientation == orientation


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    size=st.sampled_from([32, 96, 448]),
    seed=st.integers(0, 2**16),
)
@example(width=1, height=47, size=32, seed=0)  # one pixel wide: a PyTorch kernel quirk, worked around
def test_letterbox_tensor_matches_pillow_letterbox(width, height, size, seed):
    """Same content size, same corner, pixels within 2 grey levels of Pillow's BILINEAR (both are
    antialiased triangle filters; Pillow rounds to 8 bits in between)."""
    rng = np.random.default_rng(seed)
    # Smooth content (like photos): noise at the pixel level magnifies the two filters' rounding.
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    expected, cw, ch = letterbox(image, size)
    tensor, tcw, tch = letterbox_tensor(torch.from_numpy(np.asarray(image).copy()), size)
    assert (tcw, tch) == (cw, ch)
    got = tensor.permute(1, 2, 0).numpy() * 255.0
    assert np.all(got[ch:] == 0) and np.all(got[:, cw:] == 0)
    diff = np.abs(got[:ch, :cw] - expected[:ch, :cw].astype(np.float64))
    assert diff.max() <= 2.0 + 1e-3, diff.max()


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_device_decoder_equals_cpu_path_on_real_photos(decoder, orientation):
    jpegs = [_with_orientation(d, orientation) for d in _photo_jpegs()]
    results = decoder.letterboxed([_encoded(d) for d in jpegs], 96)
    for data, result in zip(jpegs, results, strict=True):
        assert not result.on_cpu  # decoded by nvImageCodec, not the fallback
        decoded = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        expected, cw, ch = letterbox(decoded, 96)
        assert (result.content_width, result.content_height) == (cw, ch)
        got = result.pixels.permute(1, 2, 0).numpy() * 255.0
        diff = np.abs(got - expected.astype(np.float64))
        # Pillow's two rounded passes, reproduced: mostly identical values, none off by more than 2.
        assert diff.max() <= 2.0 + 1e-3 and (diff < 0.5).mean() >= 0.9 and diff.mean() < 0.15


def test_grayscale_and_progressive_jpegs_decode_on_the_device(decoder):
    photo = Image.open(PHOTOS / "chelsea.jpg")
    for data in (images.encode(photo.convert("L"), "JPEG"), images.encode(photo, "JPEG", progressive=True)):
        (result,) = decoder.letterboxed([_encoded(data)], 64)
        assert not result.on_cpu
        assert result.pixels.shape == (3, 64, 64)


def test_truncated_jpeg_is_a_decode_failure_with_the_cpu_decoders_reason(decoder):
    """The header parses, the data does not: the device decoder fails, the CPU fallback fails, and the
    image comes back as a DecodeFailure (rejected, not dropped) while the batch goes on."""
    good = _photo_jpegs()[0]
    truncated = good[: len(good) // 3]
    results = decoder.letterboxed([_encoded(good), _encoded(truncated), _encoded(good)], 64)
    assert not isinstance(results[0], DecodeFailure) and not isinstance(results[2], DecodeFailure)
    assert isinstance(results[1], DecodeFailure)
    assert results[1].reason == Reason.CORRUPT_IMAGE and "JPEG" in results[1].detail


def test_device_failure_falls_back_to_the_cpu_decoder(decoder, monkeypatch):
    """When the device decoder returns nothing for an image Pillow can read, the CPU path decodes it."""
    data = _photo_jpegs()[1]
    monkeypatch.setattr(decoder, "_decode_batch", lambda encoded: [None] * len(encoded))
    (result,) = decoder.letterboxed([_encoded(data)], 64)
    assert result.on_cpu
    expected, _, _ = letterbox(Image.open(io.BytesIO(data)).convert("RGB"), 64)
    np.testing.assert_allclose(result.pixels.permute(1, 2, 0).numpy() * 255.0, expected, atol=1e-3)


def test_prepare_image_sends_only_plain_jpegs_to_the_device():
    config = DetectConfig(image_size=64)
    photo = _photo_jpegs()[0]
    cases = {
        "rgb jpeg": (photo, True),
        "exif-rotated jpeg": (images.exif_rotated_jpeg(), True),
        "cmyk jpeg": (images.cmyk_jpeg(), False),
        "png": (images.grayscale_png(), False),
        "rgba png": (images.rgba_png(), False),
        "gif": (images.animated_gif(), False),
    }
    for name, (data, on_device) in cases.items():
        record = ImageRecord(name, "s", 0, "a cat", data)
        prepared = prepare_image(record, config, keep_image_bytes=False, decode_on_device=True)
        reference = prepare_image(record, config, keep_image_bytes=False)
        assert isinstance(prepared.image, EncodedImage) == on_device, name
        # Same size, format and content size as the CPU path reports.
        assert dataclasses.replace(prepared.record) == reference.record, name
        assert (prepared.content_width, prepared.content_height) == (
            reference.content_width,
            reference.content_height,
        ), name


def test_header_checks_still_reject_before_the_device():
    config = DetectConfig(image_size=64, max_image_pixels=100)
    for data, reason in ((b"", Reason.EMPTY_IMAGE), (b"not an image", Reason.NOT_AN_IMAGE)):
        with pytest.raises(ImageDecodeError) as err:
            prepare_image(ImageRecord("k", "s", 0, "", data), config, False, decode_on_device=True)
        assert err.value.reason == reason
    with pytest.raises(ImageDecodeError) as err:
        prepare_image(ImageRecord("k", "s", 0, "", _photo_jpegs()[0]), config, False, decode_on_device=True)
    assert err.value.reason == Reason.TOO_MANY_PIXELS


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 50), max_size=30), budget=st.integers(1, 120))
def test_pixel_bounded_chunks_keep_order_and_bound(sizes, budget):
    from vesl.vision.decode import ImageHeader
    from vesl.vision.device_decode import pixel_bounded_chunks

    items = [EncodedImage(bytes([i % 256]), ImageHeader("JPEG", "RGB", n, 1, 1)) for i, n in enumerate(sizes)]
    chunks = pixel_bounded_chunks(items, budget)
    assert [item for chunk in chunks for item in chunk] == items
    for chunk in chunks:
        assert len(chunk) == 1 or sum(item.header.width for item in chunk) <= budget


def test_a_batch_decodes_in_memory_bounded_chunks(decoder, monkeypatch):
    calls = []
    decode = decoder._decode_batch
    monkeypatch.setattr(decoder, "_decode_batch", lambda data: calls.append(len(data)) or decode(data))
    monkeypatch.setattr("vesl.vision.device_decode.DECODE_CHUNK_PIXELS", 2 * 160 * 108)
    results = decoder.letterboxed([_encoded(d) for d in _photo_jpegs()], 32)
    assert calls == [2, 1] and not any(isinstance(r, DecodeFailure) for r in results)


def test_resolve_image_decoder(monkeypatch):
    assert resolve_image_decoder("pil", "cuda") == "pil"
    assert resolve_image_decoder("auto", "cpu") == "pil"  # the CPU path is the faster one on a CPU
    assert resolve_image_decoder("auto", "cuda") == "nvimgcodec"
    assert resolve_image_decoder("nvimgcodec", "cpu") == "nvimgcodec"
    with pytest.raises(ValueError):
        resolve_image_decoder("dali", "cpu")
    monkeypatch.setattr("vesl.vision.device_decode.nvimgcodec_installed", lambda: False)
    assert resolve_image_decoder("auto", "cuda") == "pil"
    with pytest.raises(ImportError, match="pip install nvidia-nvimgcodec"):
        resolve_image_decoder("nvimgcodec", "cuda")
