"""The detector seam: backends registered by name, their own settings apart from the shared ones,
chosen with --detector_backend; a second backend runs the whole pipeline with nothing else changed."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from vesl.config import DetectConfig, build_config
from vesl.models import backends
from vesl.models.detector import BackendFlag, DetectorBackend
from vesl.models.torch_backend import TorchOptions
from vesl.options import VeslOptions, config_from_options
from vesl.records import Detections

# One box per query, the query's index pinned in its x position: what the pipeline writes can only come
# from this backend.
FAKE_BOX = (0.25, 0.25, 0.75, 0.5)


@dataclass(frozen=True)
class FakeOptions:
    score: float = 0.9

    def validate(self) -> list[str]:
        return [] if 0 < self.score <= 1 else ["score must be in (0, 1]"]


class FakeDetector:
    def __init__(self, score: float):
        self.score = score
        self.batches: list[int] = []

    def detect(self, batch, min_score):
        self.batches.append(len(batch))
        results = []
        for item in batch:
            n = len(item.record.phrases)
            boxes = np.tile(np.asarray(FAKE_BOX, np.float32), (n, 1))
            scores = np.full(n, self.score, np.float32)
            keep = scores > min_score
            results.append(Detections(boxes[keep], scores[keep], np.full(n, 0.5, np.float32)[keep], np.arange(n)[keep]))
        return results


class FakeBackend(DetectorBackend):
    name = "fake"
    options = FakeOptions
    flags = (BackendFlag("fake_score", "score", float, "the score of every box"),)

    def load(self, config, cpu_threads=None):
        return FakeDetector(config.options.score)

    def weights(self, config):
        return "no weights"

    def describe(self, config):
        return f"fake, score {config.options.score}"


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, FakeBackend.name, FakeBackend())
    return FakeBackend


def test_each_backend_has_its_own_settings_apart_from_the_shared_ones():
    config = DetectConfig()
    assert config.backend == "torch" and config.options == TorchOptions()
    assert DetectConfig(options={"compile": True}).options.compile is True
    shared = {"checkpoint", "image_size", "dtype", "batch_size", "query_buckets", "pad_value", "position_embedding"}
    assert shared <= set(vars(config))
    assert not {"compile", "attn_implementation", "image_decoder"} & set(vars(config))
    with pytest.raises(ValueError, match="unknown detector backend 'nope'; known: jax, torch"):
        DetectConfig(backend="nope")
    with pytest.raises(ValueError, match=r"detect\.options\.compile_mode"):
        build_config("cloc", {"detect": {"options": {"compile_mode": "fastest"}}})
    with pytest.raises(ValueError, match=r"unknown config field detect\.options\.turbo"):
        build_config("cloc", {"detect": {"options": {"turbo": True}}})


def test_backend_flags_set_the_chosen_backends_options(fake_backend):
    def config(*args):
        return config_from_options(VeslOptions([*args, "--runner", "FnApiRunner"]))

    assert config("--compile", "true", "--image_decoder", "pil").detect.options == TorchOptions(
        compile=True, image_decoder="pil"
    )
    fake = config("--detector_backend", "fake", "--fake_score", "0.5").detect
    assert fake.backend == "fake" and fake.options == FakeOptions(0.5)
    with pytest.raises(ValueError, match="--compile is a setting of the torch detector backend; this run uses fake"):
        config("--detector_backend", "fake", "--compile", "true")
    with pytest.raises(ValueError, match="--fake_score is a setting of the fake detector backend; this run uses torch"):
        config("--fake_score", "0.5")


def test_the_config_digest_of_the_shape_before_the_backend_split_is_known():
    """Folders written before the split recorded digests of the old shape (torch settings in ``detect``):
    these are the digests VESL 0.1.0 gave (computed with it), so such a folder resumes."""
    assert build_config("cloc").earlier_digests() == {"f5d5ab83c6e2"}
    owlst = build_config("owlst", {"detect": {"options": {"compile": True}, "dtype": "bfloat16"}})
    assert owlst.earlier_digests() == {"1f12efca11f5"}
    assert build_config("cloc").digest() not in build_config("cloc").earlier_digests()


@pytest.mark.slow
def test_a_second_backend_runs_the_pipeline_end_to_end(tmp_path, fake_backend, photo_samples):
    """Registered in the test alone (no other module touched), chosen with one flag: the whole job runs
    through it, and its boxes, its settings and its name are what the output holds."""
    import pyarrow.parquet as pq

    from pipelines.vesl import run
    from vesl.io.shard_writers import write_webdataset

    write_webdataset(str(tmp_path / "in.tar"), photo_samples)
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "in.tar"), "--output", str(out), "--runner", "FnApiRunner"]
    summary = run([*args, "--detector_backend", "fake", "--fake_score", "0.75", "--checkpoint", "none"])
    counts = summary["counts"]
    assert counts["balanced"] and counts["read"] == len(photo_samples) and counts["written"] == len(photo_samples)
    rows = pq.read_table(next(out.glob("parquet/*.parquet"))).to_pylist()
    regions = [r for row in rows for r in row["regions"]]
    assert regions and all(r["box"] == list(FAKE_BOX) and r["score"] == 0.75 for r in regions)
    assert sum(len(row["phrases"]) for row in rows) == len(regions)  # one box per query, as the fake gives
    assert rows[0]["provenance"]["weights"] == "no weights"
    config = json.loads((out / "_config.json").read_text())["config"]
    assert config["detect"]["backend"] == "fake" and config["detect"]["options"] == {"score": 0.75}
    assert summary["detector"] == {"backend": "fake", "numerics": "fake, score 0.75"}
