"""Run by the tests under the reader-only venv (tests/consumer_venv.sh readers: VESL installed with
--no-deps plus requirements/readers.txt, no torch, no TensorFlow, no Beam), never in VESL's own venv:

    python tests/readers_checks.py OUTPUT_DIR

Reads a VESL output folder with the readers a training host uses and prints JSON: the keys each
reader saw, the versions of the packages it ran on, and which pipeline packages are absent.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pyarrow

from vesl.training.tfdata import iter_numpy_examples
from vesl.training.torch_dataset import VeslRegionDataset


def main() -> None:
    out = sys.argv[1].rstrip("/")
    numpy_keys = [e["image/key"].decode() for e in iter_numpy_examples(out + "/tfrecord/*.tfrecord")]
    examples = list(VeslRegionDataset(out + "/parquet", size=32, regions_per_image=2))
    assert all(isinstance(e["image"], np.ndarray) and e["image"].shape == (32, 32, 3) for e in examples)
    absent = [
        m
        for m in ("torch", "tensorflow", "apache_beam", "spacy", "transformers", "nltk")
        if importlib.util.find_spec(m) is None
    ]
    print(json.dumps({"tfrecord_keys": sorted(numpy_keys), "parquet_keys": sorted(e["key"] for e in examples),
                      "pyarrow": pyarrow.__version__, "numpy": np.__version__, "absent": absent}))  # fmt: skip


if __name__ == "__main__":
    main()
