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


VENVS = Path(__file__).resolve().parents[1] / ".cache" / "venvs"


def consumer_python(name: str, env_var: str) -> str:
    """A real consumer's venv python (tests/consumer_venv.sh NAME; ``make test`` builds them). Their
    pins conflict with VESL's, so they run there, in a subprocess, never in this process."""
    import os

    python = os.environ.get(env_var) or str(VENVS / name / "bin" / "python")
    if not Path(python).exists():
        pytest.skip(
            f"the {name} venv could not be built ({python} is missing): run tests/consumer_venv.sh {name}; "
            "make test builds it and says why when it cannot"
        )
    return python


@pytest.fixture(scope="session")
def tf_python() -> str:
    return consumer_python("tensorflow", "VESL_TF_PYTHON")


@pytest.fixture(scope="session")
def hf_python() -> str:
    return consumer_python("hf-datasets", "VESL_HF_PYTHON")


@pytest.fixture(scope="session")
def readers_python() -> str:
    return consumer_python("readers", "VESL_READERS_PYTHON")
