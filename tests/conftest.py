"""Shared fixtures: a tiny random-weight OWLv2 checkpoint (written once per session through the same
writer users run), real photos with captions, and generators of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vesl.io.shard_writers import RawSample

FIXTURES = Path(__file__).parent / "fixtures"
PHOTOS = FIXTURES / "photos"
# Written by the real img2dataset 1.47 (and HF datasets for hf/): regenerate.sh in that folder.
IMG2DATASET = FIXTURES / "img2dataset"
IMG2DATASET_FORMATS = ("webdataset", "parquet", "tfrecord", "files")
TINY_IMAGE_SIZE = 64  # the tiny checkpoint's native size; tests run the detector at 64 or 96 px


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    from vesl.models.tiny import write_tiny_checkpoint

    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-owlv2"), seed=0, image_size=TINY_IMAGE_SIZE))


@pytest.fixture(scope="session")
def photo_samples() -> list[RawSample]:
    samples = []
    for line in (PHOTOS / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(line)
        samples.append(RawSample(entry["key"], (PHOTOS / entry["image"]).read_bytes(), entry["caption"], "jpg"))
    return samples


@pytest.fixture(scope="session")
def tiny_captioner(tmp_path_factory) -> str:
    from vesl.models.captioner import write_tiny_captioner

    return str(write_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"), seed=0))


TF_VENV_PYTHON = Path(__file__).resolve().parents[1] / ".cache" / "venvs" / "tensorflow" / "bin" / "python"


@pytest.fixture(scope="session")
def tf_python() -> str:
    """The TensorFlow venv's python (tests/tf_venv.sh; ``make test`` builds it). TensorFlow's pins
    conflict with VESL's, so TensorFlow runs there, in a subprocess, never in this process."""
    import os

    python = os.environ.get("VESL_TF_PYTHON") or str(TF_VENV_PYTHON)
    if not Path(python).exists():
        pytest.skip(
            f"the TensorFlow venv could not be built ({python} is missing): run tests/tf_venv.sh; "
            "make test builds it and says why when it cannot"
        )
    return python
