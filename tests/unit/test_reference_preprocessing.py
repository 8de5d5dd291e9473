"""VESL's detector input and boxes against the references on the other side: scenic's preprocessing (with
scikit-image, as scenic's OWL-ViT/OWLv2 inference notebook does it) and transformers' Owlv2ImageProcessor
+ Owlv2ForObjectDetection + post_process_object_detection, on real non-square photos.

The stated tolerances (README, "Box convention"): VESL resizes the
image with Pillow's antialiased bilinear filter into the top-left corner and pads after; the references
pad first and resize the padded square with a Gaussian prefilter and bilinear interpolation. Outside a
2-pixel band at the content's edge the padding is exactly ``pad_value``; inside, the mean absolute
difference (pixel values in [0, 1]) is at most 0.025 and the 99th percentile at most 0.12 (measured:
mean 0.002-0.019, p99 0.007-0.104 at 64-448 px; largest when downscaling, where the two antialiasing filters differ).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTOS
from vesl.config import DetectConfig
from vesl.models.owlv2 import Owlv2Detector
from vesl.vision.geometry import letterbox

skimage_transform = pytest.importorskip("skimage.transform")  # in requirements/dev.txt: never skipped in CI

EDGE_BAND = 2  # pixels at the content's right/bottom edge, where the references blend image and padding
MEAN_TOLERANCE = 0.025
P99_TOLERANCE = 0.12


def real_photos() -> list[tuple[str, Image.Image]]:
    """The bundled photos (landscape) and each one transposed (portrait): real, non-square content."""
    photos = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        photos += [(path.stem, image), (f"{path.stem}-portrait", image.transpose(Image.Transpose.TRANSPOSE))]
    return photos


def scenic_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """scenic's notebook, verbatim in substance: [0, 1] floats, pad bottom/right to a square with grey 0.5,
    then ``skimage.transform.resize(..., anti_aliasing=True)``."""
    pixels = np.asarray(image).astype(np.float32) / 255.0
    h, w, _ = pixels.shape
    side = max(h, w)
    padded = np.pad(pixels, ((0, side - h), (0, side - w), (0, 0)), constant_values=0.5)
    return skimage_transform.resize(padded, (size, size), anti_aliasing=True)


def transformers_preprocess(image: Image.Image, size: int, detector: Owlv2Detector) -> np.ndarray:
    """transformers' own processor (the PIL backend here: its torchvision backend needs torchvision),
    un-normalized back to [0, 1]."""
    from transformers import Owlv2ImageProcessorPil

    processor = Owlv2ImageProcessorPil(size={"height": size, "width": size})
    values = processor(images=image, return_tensors="pt")["pixel_values"]
    return (values * detector._std + detector._mean)[0].permute(1, 2, 0).numpy()


def vesl_input(image: Image.Image, detector: Owlv2Detector) -> tuple[np.ndarray, int, int]:
    """What VESL's detector is given, un-normalized back to [0, 1] (HWC), with the content size."""
    canvas, cw, ch = letterbox(image, detector.image_size)
    x = detector.pixel_values([canvas], [(cw, ch)])
    return (x.float() * detector._std + detector._mean)[0].permute(1, 2, 0).numpy(), cw, ch


def assert_close_to_reference(ours: np.ndarray, reference: np.ndarray, cw: int, ch: int, pad_value: float):
    content = np.abs(ours - reference)[: ch - EDGE_BAND, : cw - EDGE_BAND]
    assert content.mean() <= MEAN_TOLERANCE, content.mean()
    assert np.percentile(content, 99) <= P99_TOLERANCE, np.percentile(content, 99)
    # Past the edge band both sides hold the padding value and nothing else.
    for ours_pad, ref_pad in (
        (ours[:, cw + EDGE_BAND :], reference[:, cw + EDGE_BAND :]),
        (ours[ch + EDGE_BAND :], reference[ch + EDGE_BAND :]),
    ):
        np.testing.assert_allclose(ours_pad, pad_value, atol=1e-6)
        np.testing.assert_allclose(ref_pad, pad_value, atol=1e-6)


@pytest.fixture(scope="module")
def detectors(tiny_checkpoint):
    """(size, pad value) -> detector: 64 and 96 px downscale the 160-px photos, 224 upscales them."""
    return {
        (size, pad): Owlv2Detector.from_config(DetectConfig(checkpoint=tiny_checkpoint, image_size=size, pad_value=pad))
        for size in (64, 96, 224)
        for pad in (0.5, 0.0)
    }


@pytest.mark.parametrize("size", [64, 96, 224])
def test_detector_input_matches_scenics_preprocessing(detectors, size):
    detector = detectors[(size, 0.5)]
    for name, image in real_photos():
        ours, cw, ch = vesl_input(image, detector)
        assert (cw < size) != (ch < size), name  # non-square: padding on exactly one side
        try:
            assert_close_to_reference(ours, scenic_preprocess(image, size), cw, ch, 0.5)
        except AssertionError as error:
            raise AssertionError(f"{name} at {size} px: {error}") from None


@pytest.mark.parametrize("size", [64, 96, 224])
def test_detector_input_with_pad_value_0_matches_transformers_processor(detectors, size):
    detector = detectors[(size, 0.0)]
    for name, image in real_photos():
        ours, cw, ch = vesl_input(image, detector)
        try:
            assert_close_to_reference(ours, transformers_preprocess(image, size, detector), cw, ch, 0.0)
        except AssertionError as error:
            raise AssertionError(f"{name} at {size} px: {error}") from None


def test_the_default_padding_differs_from_transformers_processor(detectors):
    """The reason ``--pad_value`` exists: with scenic's grey, the padding is 0.5 away from the processor's."""
    detector = detectors[(96, 0.5)]
    _, image = real_photos()[0]  # landscape: padded at the bottom
    ours, _, ch = vesl_input(image, detector)
    theirs = transformers_preprocess(image, 96, detector)
    np.testing.assert_allclose(np.abs(ours - theirs)[ch + EDGE_BAND :], 0.5, atol=1e-6)


@pytest.mark.parametrize("pad_value", [0.0, 0.5])
def test_boxes_equal_transformers_post_process_on_identical_pixels(tmp_path_factory, pad_value):
    """transformers' processor makes the pixel values; both VESL's detector and Owlv2ForObjectDetection +
    post_process_object_detection get exactly those. At 160 px the photos need no resize, so the content
    fraction is exact on both sides; the tiny checkpoint is made at 160 px so that transformers runs it at
    its native size, as a user of the real checkpoint at its own size does. Real queries only: VESL pads each image's query list to a bucket,
    and those padded queries must never change a score, a label or a box."""
    import torch
    from transformers import Owlv2ImageProcessorPil

    from vesl.models.tiny import write_tiny_checkpoint

    size, threshold = 160, 0.1
    checkpoint = str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-160"), seed=1, image_size=size))
    detector = Owlv2Detector.from_config(DetectConfig(checkpoint=checkpoint, image_size=size, pad_value=pad_value))
    processor = Owlv2ImageProcessorPil(size={"height": size, "width": size})
    queries = [["a tabby cat", "a red motorcycle", "a rocket"], ["a garage", "the sky"]]
    compared = 0
    for _, image in real_photos():
        if max(image.size) != size:
            continue
        w, h = image.size
        canvas, cw, ch = letterbox(image, size)
        assert (cw, ch) == (w, h)
        if pad_value == 0.0:
            pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
        else:  # same pixels on both sides: VESL's own input, handed to transformers as well
            pixel_values = detector.pixel_values([canvas], [(cw, ch)]).float()
        for image_queries in queries:
            tokens = detector.tokenizer(image_queries, padding="max_length", max_length=16, return_tensors="pt")
            with torch.inference_mode():
                outputs = detector.model(
                    input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixel_values
                )
            theirs = processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=[(h, w)])[0]
            detector.prepare_batch = lambda images, sizes, _x=pixel_values: (_x.to(detector.dtype), list(sizes), {})
            try:
                ours = detector.detect(
                    [canvas], [(cw, ch)], [image_queries], min_score=threshold, max_candidates=10**6, query_buckets=(4,)
                )[0]
            finally:
                del detector.prepare_batch
            order = np.argsort(-theirs["scores"].numpy(), kind="stable")
            their_scores = theirs["scores"].numpy()[order]
            assert 0 < len(their_scores) < (size // 8) ** 2, "the threshold must keep some boxes and drop others"
            np.testing.assert_allclose(ours.scores, their_scores, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(ours.query_index, theirs["labels"].numpy()[order])
            # transformers: xyxy pixels on the padded square, not clipped; VESL: normalized on the photo, clipped.
            their_boxes = np.clip(theirs["boxes"].numpy()[order] / [w, h, w, h], 0.0, 1.0)
            np.testing.assert_allclose(ours.boxes, their_boxes, atol=1e-5)
            compared += len(their_scores)
    assert compared > 0
