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


MEMORY_CASES = (
    "tar_gz_1gib_member",
    "tar_1gib_caption",
    "manifest_1gib_image",
    "manifest_1gib_line",
    "files_1gib_image",
    "tfrecord_1gib_record",
    "parquet_huge_row_group",
)


def test_a_whole_run_over_1_gib_members_images_records_and_row_groups_stays_under_1_gb(tmp_path, tiny_checkpoint):
    """The real command line, in its own process, over every 1 GiB case of bench.hostile_inputs at
    once: each oversized thing is rejected unread and the run's peak RSS (torch, spaCy and the
    model included, ~0.7 GB for a one-image run) stays under 1 GB."""
    from bench.hostile_inputs import CASES, base_argv, build_in_fresh_process, run_cli

    inputs, out = tmp_path / "in", tmp_path / "out"
    for case in (c for c in CASES if c.name in MEMORY_CASES):
        (inputs / case.name).mkdir(parents=True)
        build_in_fresh_process(case, inputs / case.name)
    outcome = run_cli(base_argv(inputs, out, tiny_checkpoint))
    assert outcome["exit"] == 0, outcome
    assert outcome["peak_rss_mb"] < 1000, outcome
    counts = json.loads((out / "summary.json").read_text())["counts"]
    # Every case has one good record keyed "ok": 1 written, 5 duplicates.
    assert counts["balanced"] and counts["written"] == 1
    assert counts["rejected_by_stage"] == {
        "read": {"image_too_large": 4, "caption_too_long": 1, "row_group_too_large": 2, "bad_manifest_line": 1},
        "dedup": {"duplicate_key": len(MEMORY_CASES) - 1},
    }
