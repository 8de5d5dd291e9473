"""Run by the tests under the HF datasets venv (tests/consumer_venv.sh hf-datasets), never in
VESL's own venv:

    python tests/hf_checks.py OUTPUT_DIR

Loads a VESL output folder the way a user would, ``datasets.load_dataset(OUTPUT_DIR)``, and prints
what came back as JSON: the feature types, and per row its key, image size and region boxes.
"""

from __future__ import annotations

import json
import sys

import datasets


def main() -> None:
    ds = datasets.load_dataset(sys.argv[1], split="train")
    rows = []
    for row in ds:
        image = row["image"]
        rows.append(
            {
                "key": row["key"],
                "image": None if image is None else [type(image).__module__.split(".")[0], *image.size],
                "width": row["width"],
                "height": row["height"],
                "boxes": [r["box"] for r in row["regions"]],
            }
        )
    features = {name: type(feature).__name__ for name, feature in ds.features.items()}
    print(json.dumps({"datasets": datasets.__version__, "features": features, "rows": rows}))


if __name__ == "__main__":
    main()
