"""``OUTPUT/README.md``: a Hugging Face dataset card whose ``configs`` name the Parquet files, so
``datasets.load_dataset(OUTPUT)`` reads them (without it, it picks the JSON files of rejects and
stats), with their features (the binary image column as ``datasets.Image``). A README.md that VESL did
not write is left alone."""

from __future__ import annotations

import logging

import fsspec

from vesl.config import VeslConfig
from vesl.io.layout import OutputLayout

CARD_MARK = "<!-- written by VESL -->"


def card_text(config: VeslConfig) -> str:
    import yaml

    from vesl.schema import hf_card_features

    front = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "parquet/*.parquet"}]}],
        "dataset_info": {"features": hf_card_features()},
    }
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---
{CARD_MARK}
# Region-text data made by VESL

One row per image: its caption, the phrases parsed from it and the regions the detector found
(`regions[].box`: normalized xyxy on the original image). Rejected records and their reasons are in
`rejects/`, counts in `summary.json`. Preset `{config.preset}`, config digest `{config.digest()}`.

```python
import datasets
ds = datasets.load_dataset("path/to/this/folder", split="train")
```
"""


def write_dataset_card(layout: OutputLayout, config: VeslConfig) -> None:
    fs, path = fsspec.core.url_to_fs(layout.card_path)
    if fs.exists(path):
        with fs.open(path, "r") as f:
            if CARD_MARK not in f.read(4096):
                logging.getLogger("vesl").warning("%s exists and is not VESL's: no dataset card written", path)
                return
    with fs.open(path, "w") as f:
        f.write(card_text(config))
