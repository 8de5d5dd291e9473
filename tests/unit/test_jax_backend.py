"""The jax detector backend against the torch one, on the same weights (the tiny random checkpoint) and
the same real photos: float32 gives the same kept boxes with the same labels, boxes and scores within
1e-4, at three image sizes and both position-embedding modes; bfloat16 matches the float32 torch boxes
(same label, IoU >= 0.9, score within 0.02) at least as well as torch's own bfloat16. Also: every program compiled once, at load;
the phrase table on the device; a batch sharded over several devices; JAX or a platform asked for
and absent is a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTOS
from vesl.config import DetectConfig
from vesl.models.equality import check_fast_path
from vesl.models.owlv2 import Owlv2Detector
from vesl.vision.geometry import letterbox

jax = pytest.importorskip(
    "jax", reason="JAX is not installed (make test installs requirements/jax.txt; see its warning)"
)

from vesl.models.jax_backend import load_jax_detector  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PHOTOS = ROOT / "sample" / "photos"
MIN_SCORE, TOLERANCE = 0.1, 1e-4
QUERIES = [
    ["a cat", "a tabby cat", "whiskers"],
    ["a red motorcycle", "a garage"],
    ["a rocket", "a launchpad", "the sky", "smoke", "a tower"],
    ["a page", "text"],
    ["a cat"],
    ["an astronaut", "the American flag", "a portrait"],
    ["a camera", "a man", "a tripod", "grass", "a building", "a coat", "a field", "a hat", "a lens"],
    ["a cup of coffee", "a saucer"],
    ["a horse", "a field"],
    ["a motorcycle"],
    ["a rocket", "a launch pad"],
]


def photos() -> list[Image.Image]:
    """The real photos of the fixtures and of the bundled sample (11, of many sizes and aspects)."""
    paths = [PHOTOS / json.loads(line)["image"] for line in (PHOTOS / "manifest.jsonl").read_text().splitlines()]
    paths += [
        SAMPLE_PHOTOS / json.loads(line)["image"]
        for line in (SAMPLE_PHOTOS / "manifest.jsonl").read_text().splitlines()
    ]
    return [Image.open(path).convert("RGB") for path in paths]


@pytest.fixture(scope="module")
def images():
    return photos()


def batch_at(images, size: int):
    letterboxed = [letterbox(image, size) for image in images]
    return [px for px, _, _ in letterboxed], [(cw, ch) for _, cw, ch in letterboxed], QUERIES[: len(images)]


def config(
    checkpoint: str, size: int, mode: str, backend: str = "torch", dtype: str = "float32", **extra
) -> DetectConfig:
    return DetectConfig(
        backend=backend, checkpoint=checkpoint, image_size=size, device="cpu", dtype=dtype, position_embedding=mode,
        batch_size=4, query_buckets=(4, 12), **extra,
    )  # fmt: skip


def detect_in_batches(detector, images, sizes, queries, batch: int = 4, **kwargs):
    out = []
    for i in range(0, len(images), batch):
        out += detector.detect(images[i : i + batch], sizes[i : i + batch], queries[i : i + batch], MIN_SCORE, **kwargs)
    return out


def max_differences(reference, candidate) -> tuple[float, float]:
    """(largest box coordinate difference, largest score difference) of two detectors' kept boxes, matched
    one to one by label and position; AssertionError when the kept boxes or their labels differ."""
    worst_box = worst_score = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        assert len(ref) == len(cand), "the kept boxes differ"
        unused = set(range(len(cand)))
        for box, score, label in zip(ref.boxes, ref.scores, ref.query_index):
            gaps = {j: float(np.abs(cand.boxes[j] - box).max()) for j in unused if cand.query_index[j] == label}
            assert gaps, f"no box with label {label}"
            j = min(gaps, key=gaps.get)
            unused.remove(j)
            worst_box = max(worst_box, gaps[j])
            worst_score = max(worst_score, abs(float(cand.scores[j]) - float(score)))
    return worst_box, worst_score


CASES = [(64, "truncate"), (32, "truncate"), (32, "interpolate"), (96, "truncate"), (96, "interpolate")]


@pytest.mark.parametrize(("size", "mode"), CASES)
def test_float32_gives_the_torch_backends_boxes(tiny_checkpoint, images, size, mode):
    """64 px is the checkpoint's own size; 32 truncates or interpolates its position grid; 96 interpolates."""
    pixels, sizes, queries = batch_at(images, size)
    torch_detector = Owlv2Detector.from_config(config(tiny_checkpoint, size, mode))
    reference = detect_in_batches(torch_detector, pixels, sizes, queries, max_candidates=300, query_buckets=(4, 12))
    jax_detector = load_jax_detector(config(tiny_checkpoint, size, mode, backend="jax"))
    worst_box, worst_score = max_differences(reference, detect_in_batches(jax_detector, pixels, sizes, queries))
    assert sum(len(r) for r in reference) > 20  # boxes were compared
    assert worst_box <= TOLERANCE and worst_score <= TOLERANCE, (worst_box, worst_score)


@pytest.mark.parametrize(("size", "mode"), [(64, "truncate"), (32, "interpolate")])
def test_bfloat16_matches_the_float32_torch_boxes_as_well_as_torchs_own_bfloat16(tiny_checkpoint, images, size, mode):
    """The equality check (vesl.models.equality: same label, IoU >= 0.9, score within 0.02) of bfloat16
    against the float32 torch boxes. The tiny random model's boxes are thin and swing under bf16 (torch's
    own bf16 matches 85% at 64 px), so its 99% bar is out of reach for either backend here; the jax
    backend in bf16 must match at least as many boxes as torch in bf16, and keep every score within 0.02."""
    pixels, sizes, queries = batch_at(images, size)
    batches = [(pixels[i : i + 4], sizes[i : i + 4], queries[i : i + 4]) for i in range(0, len(pixels), 4)]
    reference = Owlv2Detector.from_config(config(tiny_checkpoint, size, mode))
    torch_bf16 = Owlv2Detector.from_config(config(tiny_checkpoint, size, mode, dtype="bfloat16"))
    jax_bf16 = load_jax_detector(config(tiny_checkpoint, size, mode, backend="jax", dtype="bfloat16"))
    torch_report = check_fast_path(reference, torch_bf16, batches, MIN_SCORE, 300, (4, 12))
    jax_report = check_fast_path(reference, jax_bf16, batches, MIN_SCORE, 300, (4, 12))
    assert jax_report.reference_boxes > 20
    assert jax_report.matched_fraction >= max(0.9, torch_report.matched_fraction), (jax_report, torch_report)
    assert jax_report.max_score_diff <= 0.02, jax_report


def test_every_program_is_compiled_once_at_load(tiny_checkpoint, images):
    """Mixed batch sizes (1..4) and query counts (1..9) after load trace nothing new: the programs stay
    those of the buckets (batch 1, 2, 4 x queries 4, 12, and the text buckets)."""
    detector = load_jax_detector(config(tiny_checkpoint, 64, "truncate", backend="jax"))
    at_load = dict(detector.traces)
    assert set(at_load) == {
        *(("image", b) for b in (1, 2, 4)),
        *(("head", b, q, 64) for b in (1, 2, 4) for q in (4, 12)),
        *(("text", t) for t in detector.text_buckets),
    }
    assert all(count == 1 for count in at_load.values())
    pixels, sizes, queries = batch_at(images, 64)
    for n in (1, 3, 2, 4, 1):
        detector.detect(pixels[:n], sizes[:n], [queries[6][: k + 1] for k in range(n)], MIN_SCORE)
        detector.detect(pixels[-n:], sizes[-n:], queries[-n:], MIN_SCORE)
    assert dict(detector.traces) == at_load


def test_the_phrase_table_evicts_least_recent_phrases_and_gives_the_same_boxes(tiny_checkpoint, images):
    pixels, sizes, queries = batch_at(images, 64)
    roomy = load_jax_detector(config(tiny_checkpoint, 64, "truncate", backend="jax"))
    cramped = load_jax_detector(config(tiny_checkpoint, 64, "truncate", backend="jax", text_cache_size=0))
    assert cramped.slots.capacity == 4 * 12  # never below one batch's phrases
    for _ in range(2):  # the second round reads phrases back from the table, or embeds evicted ones again
        expected, got = (
            detect_in_batches(roomy, pixels, sizes, queries),
            detect_in_batches(cramped, pixels, sizes, queries),
        )
        assert max_differences(expected, got) == (0.0, 0.0)
    assert len(cramped.slots.rows) <= cramped.slots.capacity


SHARDED = """
import json, sys
import numpy as np
from vesl.config import DetectConfig
from vesl.models.jax_backend import load_jax_detector
config = DetectConfig(backend="jax", checkpoint=sys.argv[1], image_size=64, device="cpu", batch_size=8,
                      query_buckets=(4,), options={"all_devices": sys.argv[2] == "all"})
detector = load_jax_detector(config)
rng = np.random.default_rng(0)
images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)]
found = detector.detect(images, [(64, 48)] * 6, [["a cat", "a dog"]] * 6, 0.1)
print(json.dumps({"devices": len(detector.devices), "buckets": detector.batch_buckets,
                  "scores": [d.scores.tolist() for d in found], "boxes": [d.boxes.tolist() for d in found]}))
"""


def test_a_batch_is_sharded_over_the_hosts_devices(tiny_checkpoint):
    """Four XLA host devices stand for a 4-chip TPU host: one process splits each batch over all four
    (batch buckets are multiples of 4) and gives the boxes one device gives."""
    import os

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    runs = {}
    for devices in ("all", "one"):
        out = subprocess.run(
            [sys.executable, "-c", SHARDED, tiny_checkpoint, devices],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs[devices] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs["all"]["devices"] == 4 and runs["all"]["buckets"] == [4, 8]
    assert runs["one"]["devices"] == 1 and runs["one"]["buckets"] == [1, 2, 4, 8]
    for a, b in zip(runs["all"]["scores"], runs["one"]["scores"], strict=True):
        assert len(a) == len(b) and np.allclose(sorted(a), sorted(b), atol=1e-5)


def test_the_compilation_cache_keeps_the_programs(tiny_checkpoint, tmp_path):
    cache = tmp_path / "xla-cache"
    load_jax_detector(config(tiny_checkpoint, 32, "truncate", backend="jax", options={"compilation_cache": str(cache)}))
    assert cache.is_dir() and any(cache.iterdir())


def test_a_platform_jax_does_not_see_is_one_line(tmp_path):
    from vesl.launch import UsageError, run
    from vesl.models.detector import BackendUnavailable
    from vesl.models.jax_backend import jax_devices

    with pytest.raises(BackendUnavailable, match=r"--device tpu was asked for but JAX sees no TPU \(it sees: cpu\)"):
        jax_devices("tpu")
    (tmp_path / "in.tar").write_bytes(b"")
    argv = ["--input", str(tmp_path / "in.tar"), "--output", str(tmp_path / "out"), "--detector_backend", "jax"]
    with pytest.raises(UsageError, match="JAX sees no TPU") as error:
        run([*argv, "--device", "tpu", "--runner", "FnApiRunner"])
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()  # before any work


def test_jax_missing_is_one_line_naming_the_extra(monkeypatch):
    from vesl.models.detector import BackendUnavailable
    from vesl.models.jax_backend import jax_devices

    monkeypatch.setitem(sys.modules, "jax", None)  # what an install without the extra looks like
    with pytest.raises(
        BackendUnavailable, match=r"needs JAX, which is not installed: install the jax extra: pip install 'vesl\[jax\]'"
    ):
        jax_devices("auto")


def test_a_remote_compilation_cache_without_etils_is_one_line(monkeypatch):
    from vesl.models.detector import BackendUnavailable
    from vesl.models.jax_backend import JaxBackend

    monkeypatch.setitem(sys.modules, "etils", None)
    remote = DetectConfig(backend="jax", device="cpu", options={"compilation_cache": "gs://b/jax-cache"})
    with pytest.raises(BackendUnavailable, match=r"needs etils\[epath\]"):
        JaxBackend().check(remote)
    JaxBackend().check(DetectConfig(backend="jax", device="cpu", options={"compilation_cache": "/tmp/jax-cache"}))
