"""The OWLv2 detector core on a tiny random-weight checkpoint loaded through from_pretrained."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests import images
from tests.conftest import TINY_IMAGE_SIZE
from vesl.config import DetectConfig, FilterConfig
from vesl.filtering.rules import filter_detections
from vesl.models.checkpoint import CheckpointError, load_checkpoint, preflight
from vesl.models.clip_tokenizer import build_clip_tokenizer
from vesl.models.devices import DeviceUnavailable, resolve_device
from vesl.models.owlv2 import CLIP_STD, Owlv2Detector, batch_bucket, query_bucket
from vesl.records import ImageRecord, Phrase
from vesl.vision.prepare import prepare_image


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    loaded = load_checkpoint(tiny_checkpoint)
    assert loaded.weights == "random weights"
    return Owlv2Detector(loaded.model, loaded.tokenizer, "cpu", image_size=96)


def test_vendored_clip_tokenizer_gives_clip_ids(tiny_checkpoint):
    expected = [49406, 320, 1125, 539, 320, 2368, 49407]
    assert build_clip_tokenizer()("a photo of a cat")["input_ids"] == expected
    assert load_checkpoint(tiny_checkpoint).tokenizer("a photo of a cat")["input_ids"] == expected


def test_query_bucket():
    assert [query_bucket(n, (4, 8, 20)) for n in (1, 4, 5, 20, 23)] == [4, 4, 8, 20, 23]


def test_forward_equals_transformers_forward(detector):
    """Our module-by-module forward gives the model's own logits/boxes/objectness (no padding)."""
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(2)]
    queries = [["a cat", "a red car", "grass"], ["a dog", "a cat", "the sky"]]
    x = detector.pixel_values(pixels, [(96, 96), (96, 96)])
    phrases, index, mask = detector.query_inputs(queries)
    with torch.inference_mode():
        logits, boxes, objectness = detector.forward(x, phrases, index, mask)
        tokens = detector.tokenizer(
            [q for qs in queries for q in qs], padding="max_length", max_length=16, return_tensors="pt"
        )
        ref = detector.model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=x,
            interpolate_pos_encoding=True,
        )
    torch.testing.assert_close(logits, ref.logits.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(boxes, ref.pred_boxes.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(objectness, torch.sigmoid(ref.objectness_logits), rtol=1e-5, atol=1e-5)


def test_padded_queries_never_win_and_batching_does_not_change_results(detector):
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    sizes = [(96, 60), (40, 96), (96, 96)]
    queries = [["a cat"], ["a dog", "a tree", "a car"], ["grass", "sky"]]
    together = detector.detect(pixels, sizes, queries, min_score=0.0, max_candidates=1000, query_buckets=(8,))
    for i, det in enumerate(together):
        assert len(det) > 0 and det.query_index.max() < len(queries[i])
        alone = detector.detect([pixels[i]], [sizes[i]], [queries[i]], min_score=0.0, max_candidates=1000)[0]
        np.testing.assert_allclose(alone.scores, det.scores, atol=1e-4)
        np.testing.assert_allclose(alone.boxes, det.boxes, atol=1e-4)
        assert (det.boxes >= 0).all() and (det.boxes <= 1).all()
        assert np.all(np.diff(det.scores) <= 0)  # best first


def test_min_score_and_max_candidates(detector):
    pixels = [np.zeros((96, 96, 3), np.uint8)]
    det = detector.detect(pixels, [(96, 96)], [["a cat", "a dog"]], min_score=0.0, max_candidates=5)[0]
    assert len(det) == 5
    assert len(detector.detect(pixels, [(96, 96)], [["a cat"]], min_score=1.0, max_candidates=5)[0]) == 0


def test_min_score_is_strict_at_an_exact_score(detector, photo_samples):
    """A candidate whose score equals min_score exactly is dropped; the ones above it stay (CLOC:
    score > 0.1). The scores are the model's own float32 values, so the comparison is exact."""
    from vesl.vision.decode import decode_image
    from vesl.vision.geometry import letterbox

    image = decode_image(photo_samples[0].image, max_pixels=10**8).image
    pixels, cw, ch = letterbox(image, 96)
    size = (cw, ch)
    queries = [["a rocket", "a launch pad", "the sky"]]
    everything = detector.detect([pixels], [size], queries, min_score=0.0, max_candidates=20)[0]
    scores = sorted(float(s) for s in everything.scores)
    assert len(set(scores)) == len(scores) >= 3
    at = scores[len(scores) // 2]
    kept = detector.detect([pixels], [size], queries, min_score=at, max_candidates=20)[0]
    assert sorted(float(s) for s in kept.scores) == [s for s in scores if s > at]


def _red_box_in_detector_input(pixels: np.ndarray, size: int) -> list[float]:
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    ys, xs = np.nonzero(red)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return [(x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size]


@pytest.mark.parametrize(
    ("width", "height", "rect", "exif"),
    [(300, 120, (60, 30, 150, 90), False), (90, 240, (10, 150, 70, 230), False), (240, 120, (0, 0, 60, 40), True)],
)
def test_injected_detector_boxes_land_on_the_original_pixels(detector, monkeypatch, width, height, rect, exif):
    """Non-square (and EXIF-rotated) images through decode -> letterbox -> detect -> filter: a detector
    that reports exactly the red rectangle it is shown yields a stored box on the rectangle's pixels."""
    if exif:
        data = images.exif_rotated_jpeg(width, height)  # red top-left quarter x third, as displayed
        rect = (0, 0, width // 4, height // 3)
    else:
        data = images.encode(images.rgb_with_rectangle(width, height, rect), "PNG")
    record = ImageRecord("k", "s", 0, "a red box", data, phrases=(Phrase("a red box", 0, 9, "cloc"),))
    prepared = prepare_image(record, DetectConfig(image_size=96), keep_image_bytes=False)
    assert (prepared.record.width, prepared.record.height) == (width, height)
    injected = torch.tensor(_red_box_in_detector_input(prepared.image, 96))

    def box_predictor(image_feats, feature_map, interpolate_pos_encoding=False):
        return injected.expand(image_feats.shape[0], image_feats.shape[1], 4).clone()

    monkeypatch.setattr(detector.model, "box_predictor", box_predictor)
    det = detector.detect(
        [prepared.image],
        [(prepared.content_width, prepared.content_height)],
        [["a red box"]],
        min_score=0.0,
        max_candidates=3,
    )[0]
    labeled = filter_detections(prepared.record, det, FilterConfig(score_threshold=0.0))
    assert labeled.regions
    box_px = np.array(labeled.regions[0].box) * [width, height, width, height]
    # Within one detector-input pixel (plus resampling blur) of the truth, in original pixels.
    tolerance = max(width, height) / 96 * 1.5
    np.testing.assert_allclose(box_px, rect, atol=tolerance)


def test_device_resolution():
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
            resolve_device("cuda")


def test_checkpoint_errors_are_one_clear_line(tmp_path, tiny_checkpoint):
    assert preflight(tiny_checkpoint) == "random weights"
    with pytest.raises(CheckpointError, match="no such folder"):
        load_checkpoint(str(tmp_path / "missing"))
    (tmp_path / "notowl").mkdir()
    (tmp_path / "notowl" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError) as info:
        preflight(str(tmp_path / "notowl"))
    assert "\n" not in str(info.value) and "notowl" in str(info.value)


def test_image_size_must_fit_the_patch_grid(tiny_checkpoint):
    loaded = load_checkpoint(tiny_checkpoint)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        Owlv2Detector(loaded.model, loaded.tokenizer, "cpu", image_size=100)
    native = Owlv2Detector(loaded.model, loaded.tokenizer, "cpu", image_size=TINY_IMAGE_SIZE)
    assert native.interpolate_pos_encoding is False
    assert dataclasses.is_dataclass(DetectConfig())


def test_remote_checkpoints_are_copied_once_and_loaded(tiny_checkpoint, tmp_path, monkeypatch):
    """A gs://-style folder (fsspec's memory filesystem stands in for GCS) loads through the cache."""
    import fsspec

    monkeypatch.setenv("VESL_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    fs.put(tiny_checkpoint.rstrip("/") + "/", "/remote-tiny/", recursive=True)
    assert preflight("memory://remote-tiny") == "random weights"
    loaded = load_checkpoint("memory://remote-tiny")
    assert loaded.weights == "random weights" and loaded.tokenizer("a cat")["input_ids"][0] == 49406
    assert len(list((tmp_path / "cache" / "checkpoints").iterdir())) == 1
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_checkpoint("memory://nothing-here")


def test_processor_loads_from_the_tiny_checkpoint(tiny_checkpoint):
    from transformers import Owlv2Processor

    processor = Owlv2Processor.from_pretrained(tiny_checkpoint)
    assert processor.tokenizer("a photo of a cat")["input_ids"][:3] == [49406, 320, 1125]


def test_truncated_position_embedding_is_the_top_left_grid(tiny_checkpoint):
    from vesl.models.owlv2 import truncate_position_embedding

    loaded = load_checkpoint(tiny_checkpoint)
    embeddings = loaded.model.owlv2.vision_model.embeddings
    weight = embeddings.position_embedding.weight  # [1 + 8*8, D] for 64 px / patch 8
    truncated = truncate_position_embedding(embeddings, 32, 32)[0]  # a 4 x 4 grid
    assert truncated.shape == (1 + 16, weight.shape[1])
    torch.testing.assert_close(truncated[0], weight[0])  # the class token's embedding stays
    for r in range(4):
        for c in range(4):
            torch.testing.assert_close(truncated[1 + r * 4 + c], weight[1 + r * 8 + c])
    full = truncate_position_embedding(embeddings, 64, 64)[0]
    torch.testing.assert_close(full, weight)
    with pytest.raises(ValueError, match="cannot truncate"):
        truncate_position_embedding(embeddings, 72, 72)


def test_truncate_and_interpolate_both_run_and_differ(tiny_checkpoint):
    pixels = [np.full((32, 32, 3), 120, np.uint8)]
    results = {}
    for mode in ("truncate", "interpolate"):
        loaded = load_checkpoint(tiny_checkpoint)
        detector = Owlv2Detector(loaded.model, loaded.tokenizer, "cpu", image_size=32, position_embedding=mode)
        results[mode] = detector.detect(pixels, [(32, 32)], [["a cat"]], min_score=0.0, max_candidates=16)[0]
        assert len(results[mode]) == 16  # 4 x 4 patches
    assert not np.allclose(results["truncate"].scores, results["interpolate"].scores)


def test_equality_check_passes_for_the_fast_path_and_fails_for_other_weights(tiny_checkpoint):
    from vesl.models.equality import check_fast_path

    rng = np.random.default_rng(3)
    batch = (
        [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)],
        [(64, 64), (64, 40), (30, 64), (64, 64)],
        [["a cat", "a dog"], ["grass"], ["a red car", "a tree", "sky"], ["a cat"]],
    )
    eager = load_checkpoint(tiny_checkpoint, attn_implementation="eager")
    reference = Owlv2Detector(eager.model, eager.tokenizer, "cpu", 64, text_cache_size=0)
    sdpa = load_checkpoint(tiny_checkpoint, attn_implementation="sdpa")
    fast = Owlv2Detector(sdpa.model, sdpa.tokenizer, "cpu", 64, text_cache_size=8)
    report = check_fast_path(reference, fast, [batch, batch], min_score=0.1, max_candidates=12, query_buckets=(4, 8))
    assert report.passed and report.matched_fraction == 1.0 and report.reference_boxes > 0
    other = load_checkpoint(tiny_checkpoint)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.model.box_head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    report = check_fast_path(reference, Owlv2Detector(other.model, other.tokenizer, "cpu", 64), [batch], 0.1, 12)
    assert not report.passed


def test_text_cache_returns_the_same_embeddings_and_stays_bounded(tiny_checkpoint):
    loaded = load_checkpoint(tiny_checkpoint)
    cached = Owlv2Detector(loaded.model, loaded.tokenizer, "cpu", 64, text_cache_size=3)
    plain = Owlv2Detector(loaded.model, loaded.tokenizer, "cpu", 64, text_cache_size=0)
    phrases = ["a cat", "a dog", "grass", "a cat", "sky"]
    with torch.inference_mode():
        torch.testing.assert_close(cached.text_embeddings(phrases[:3]), plain.text_embeddings(phrases[:3]))
        torch.testing.assert_close(cached.text_embeddings(phrases[2:]), plain.text_embeddings(phrases[2:]))
    assert len(cached._text_cache) == 3 and "a dog" not in cached._text_cache


def test_encoded_inputs_decoded_on_the_device_give_the_cpu_paths_boxes(tiny_checkpoint, photo_samples):
    """The same photos through Pillow + letterbox on the host and through nvImageCodec + letterbox on
    the detector's device: the batches the model sees differ by at most 2 grey levels (padding
    included), and the detections pass the equality check (>= 99% of boxes matched, scores within
    0.02), although the tiny random model's boxes swing with small input changes (bf16 alone moves 7%
    of them)."""
    pytest.importorskip("nvidia.nvimgcodec")
    from vesl.models.equality import compare_detections
    from vesl.vision.device_decode import DecodeFailure, EncodedImage

    loaded = load_checkpoint(tiny_checkpoint)
    config = DetectConfig(image_size=TINY_IMAGE_SIZE, options={"image_decoder": "nvimgcodec"})
    detector = Owlv2Detector.for_model(loaded.model, loaded.tokenizer, "cpu", config)
    records = [ImageRecord(s.key, "s", i, s.caption, s.image) for i, s in enumerate(photo_samples)]
    on_host = [prepare_image(r, config, keep_image_bytes=False) for r in records]
    on_device = [prepare_image(r, config, keep_image_bytes=False, decode_on_device=True) for r in records]
    assert all(isinstance(item.image, EncodedImage) for item in on_device)
    queries = [["a cat", "a motorcycle", "a rocket"]] * len(records)
    sizes = [(item.content_width, item.content_height) for item in on_host]
    host_batch, _, _ = detector.prepare_batch([item.image for item in on_host], sizes)
    mixed_batch, mixed_sizes, failures = detector.prepare_batch(
        [on_host[0].image] + [item.image for item in on_device[1:]], sizes
    )
    assert not failures and mixed_sizes == sizes
    grey_level = 1 / 255 / min(CLIP_STD)  # one grey level in normalized units
    assert torch.equal(mixed_batch[0], host_batch[0])
    assert (mixed_batch - host_batch).abs().max() <= 2 * grey_level + 1e-5

    def run(items, extra=(), budget=50):
        images_ = [item.image for item in items] + [e.image for e in extra]
        sizes = [(item.content_width, item.content_height) for item in [*items, *extra]]
        return detector.detect(images_, sizes, queries + [queries[0]] * len(extra), 0.0, budget)

    # As in check_fast_path: the candidate is read with twice the budget, so boxes ranked near the
    # reference's cut-off are not counted as missing.
    reference, candidate = run(on_host), run(on_device, budget=100)
    report = compare_detections(reference, candidate, min_side=1.0 / TINY_IMAGE_SIZE)
    assert report.reference_boxes > 0 and report.passed, report
    # A corrupt image in the batch gets a DecodeFailure; the others' results do not change.
    broken = dataclasses.replace(
        on_device[0], image=EncodedImage(photo_samples[0].image[:300], on_device[0].image.header)
    )
    mixed = run(on_device, extra=[broken], budget=100)
    assert isinstance(mixed[-1], DecodeFailure)
    assert compare_detections(candidate, mixed[:-1]).matched_fraction == 1.0


def test_batch_bucket():
    assert [batch_bucket(n, 128) for n in (1, 2, 3, 5, 64, 65, 128)] == [1, 2, 4, 8, 64, 128, 128]
    assert [batch_bucket(n, 96) for n in (33, 65, 96)] == [64, 96, 96]
    assert len({batch_bucket(n, 128) for n in range(1, 129)}) == 8


def test_partial_batches_are_padded_to_a_bucket_when_compiled(tiny_checkpoint, photo_samples):
    """With a compiled tower, a 3-image batch runs the tower at 4 images (one shape per bucket) and
    gives exactly the unpadded results."""
    loaded = load_checkpoint(tiny_checkpoint)
    config = DetectConfig(image_size=TINY_IMAGE_SIZE, batch_size=8, options={"image_decoder": "pil"})
    plain = Owlv2Detector.for_model(loaded.model, loaded.tokenizer, "cpu", config)
    padded = Owlv2Detector.for_model(loaded.model, loaded.tokenizer, "cpu", config)
    padded.pad_batches_to = 8  # what compile=True sets; the eager tower keeps the test fast
    seen = []
    heads = padded._image_heads
    padded._image_heads = lambda x: seen.append(x.shape[0]) or heads(x)
    prepared = [prepare_image(ImageRecord(s.key, "s", 0, "", s.image), config, False) for s in photo_samples]
    args = (
        [p.image for p in prepared],
        [(p.content_width, p.content_height) for p in prepared],
        [["a cat", "a rocket"]] * len(prepared),
        0.0,
        20,
    )
    expected, got = plain.detect(*args), padded.detect(*args)
    assert seen == [4]
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-5)
        np.testing.assert_allclose(g.boxes, e.boxes, atol=1e-5)


@pytest.mark.parametrize("pad_value", [0.5, 0.0])
def test_the_detector_input_is_padded_with_pad_value(tiny_checkpoint, pad_value):
    """Outside the image content every pixel is pad_value before CLIP's normalization: 0.5 as scenic
    pads, 0.0 as transformers' Owlv2ImageProcessor does; the content itself is the same."""
    import torch

    from vesl.config import DetectConfig
    from vesl.models.owlv2 import Owlv2Detector

    detector = Owlv2Detector.from_config(DetectConfig(checkpoint=tiny_checkpoint, image_size=64, pad_value=pad_value))
    pixels = np.full((64, 64, 3), 200, np.uint8)
    x = detector.pixel_values([pixels], [(40, 24)])  # content: 40 wide, 24 high, top-left
    raw = x.float() * detector._std + detector._mean  # back to [0, 1]
    assert torch.allclose(raw[0, :, :, 40:], torch.full_like(raw[0, :, :, 40:], pad_value), atol=1e-6)
    assert torch.allclose(raw[0, :, 24:, :], torch.full_like(raw[0, :, 24:, :], pad_value), atol=1e-6)
    assert torch.allclose(raw[0, :, :24, :40], torch.full_like(raw[0, :, :24, :40], 200 / 255), atol=1e-6)


def test_pad_value_is_an_option_recorded_in_the_config_digest():
    from vesl.config import build_config
    from vesl.options import VeslOptions, config_from_options

    default = build_config("cloc")
    transformers_like = config_from_options(VeslOptions(["--pad_value", "0.0"]))
    assert default.detect.pad_value == 0.5 and transformers_like.detect.pad_value == 0.0
    assert default.digest() != transformers_like.digest()
    with pytest.raises(ValueError, match="pad_value"):
        build_config("cloc", {"detect": {"pad_value": 1.5}})
