"""Hostile values through the whole pipeline (issue 12): wrong types, NaN, lone surrogates and
invalid UTF-8 in every input format; the run finishes, balances, and says why for each record."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.vesl import run
from tests.conftest import PHOTOS
from vesl.io.shard_writers import RawSample, write_webdataset

pytestmark = pytest.mark.slow

IMAGE = (PHOTOS / "rocket.jpg").read_bytes()


def test_hostile_values_are_rejected_one_by_one(tmp_path, tiny_checkpoint):
    data = tmp_path / "in"
    data.mkdir()
    bad_utf8 = pa.array([b"a red rocket", b"a tall rocket", b"a \xff rocket"], pa.binary()).view(pa.string())
    pq.write_table(
        pa.table(
            {
                "key": [1.0, float("nan"), 3.0],
                "caption": bad_utf8,
                "url": [12.0, float("nan"), None],
                "jpg": [IMAGE] * 3,
            }
        ),
        data / "floats.parquet",
    )
    pq.write_table(pa.table({"key": ["i1", "i2"], "caption": [1, 2], "jpg": [IMAGE] * 2}), data / "ints.parquet")
    (data / "rocket.jpg").write_bytes(IMAGE)
    lines = [
        {"key": "m-url", "image": "rocket.jpg", "caption": "a rocket on a pad", "url": 12345},
        {"key": "m-\udcffsur", "image": "rocket.jpg", "caption": "a rocket"},
        {"key": "m-cap", "image": "rocket.jpg", "caption": "a \ud800 rocket"},
    ]
    (data / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    tar_path = write_webdataset(str(data / "t.tar"), [RawSample("t-ok", IMAGE, "a rocket")])
    with tarfile.open(tar_path, "a", encoding="utf-8", errors="surrogateescape") as tar:
        for name, blob in (("t-\udcff.jpg", IMAGE), ("t-\udcff.txt", b"a rocket")):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    out = tmp_path / "out"
    summary = run(
        [
            *("--input", str(data), "--output", str(out), "--checkpoint", tiny_checkpoint),
            *("--image_size", "64", "--runner", "FnApiRunner", "--progress", "false"),
        ]
    )
    counts = summary["counts"]
    assert counts["balanced"] and (counts["read"], counts["written"]) == (10, 3)
    assert counts["rejected_by_stage"] == {
        "read": {"bad_key": 2, "caption_not_text": 2, "caption_not_utf8": 2, "missing_key": 1}  # NaN key
    }
    rows = [r for p in (out / "parquet").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert sorted((r["key"], r["url"]) for r in rows) == [("1", None), ("m-url", None), ("t-ok", None)]
    rejects = [json.loads(line) for p in (out / "rejects").glob("*.jsonl") for line in p.open(encoding="utf-8")]
    assert len(rejects) == 7 and all(r["detail"] for r in rejects)
