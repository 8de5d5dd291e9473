"""WebDataset output end to end: the pipeline writes one tar per input shard; the real webdataset
package reads them through a torch DataLoader with two workers; VESL's resume reads their keys back
when they are the only output (the duplicate-key pass of a later run counts them)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.vesl import run
from vesl.io.shard_writers import RawSample, write_img2dataset_parquet
from vesl.io.sinks.webdataset import original_key

pytestmark = pytest.mark.slow

# webdataset cuts a member name at its first dot and reads a slash as a folder: keys with both
KEYS = ["plain", "v1.2.jpg-ish", "dir/sub/name", "50%.off", ".hidden"]


def argv(inputs: str, out: Path, checkpoint: str, *extra: str) -> list[str]:
    return [
        *("--input", inputs, "--output", str(out), "--checkpoint", checkpoint, "--image_size", "64"),
        *("--score_threshold", "0", "--max_candidates", "3", "--runner", "FnApiRunner", *extra),
    ]


def build_inputs(root: Path, photos) -> None:
    root.mkdir()
    for shard in range(2):
        samples = [RawSample(f"{key}-{shard}", p.image, p.caption) for key, p in zip(KEYS, photos * 2)]
        write_img2dataset_parquet(str(root / f"{shard:05d}.parquet"), samples)


def test_webdataset_shards_are_read_by_the_webdataset_package_in_a_two_worker_dataloader(
    tmp_path, tiny_checkpoint, photo_samples
):
    import webdataset as wds
    from torch.utils.data import DataLoader

    build_inputs(tmp_path / "in", photo_samples)
    out = tmp_path / "out"
    extra = ("--write_webdataset", "true", "--write_image_bytes", "true")
    summary = run(argv(str(tmp_path / "in" / "*.parquet"), out, tiny_checkpoint, *extra))
    assert summary["counts"]["balanced"] and summary["outputs"]["webdataset"] == str(out / "webdataset" / "*.tar")
    tars = sorted(str(p) for p in (out / "webdataset").glob("*.tar"))
    assert len(tars) == 2
    parquet = {r["key"]: r for f in sorted((out / "parquet").glob("*.parquet")) for r in pq.read_table(f).to_pylist()}

    dataset = wds.WebDataset(tars, shardshuffle=False).decode().to_tuple("__key__", "txt", "json", "jpg")
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    seen = {}
    for member, caption, meta, image in loader:
        seen[original_key(member)] = (caption, meta, image)
    assert sorted(seen) == sorted(parquet)  # every written image, once, over both workers
    for key, (caption, meta, image) in seen.items():
        row = parquet[key]
        assert caption == row["caption"] and meta["key"] == key and image == row["image"]
        expected = {k: v for k, v in row.items() if k != "image"}
        assert json.loads(json.dumps(expected)) == meta  # the stored schema: phrases, regions, provenance
    stats = json.loads(next((out / "stats").glob("*.json")).read_text())
    assert set(stats["files"]) == {"parquet", "tfrecord", "webdataset", "rejects"}


def test_a_webdataset_only_output_resumes_and_its_keys_count_for_duplicates(tmp_path, tiny_checkpoint, photo_samples):
    build_inputs(tmp_path / "in", photo_samples)
    out = tmp_path / "out"
    only = ("--write_webdataset", "true", "--write_parquet", "false", "--write_tfrecord", "false")
    first = run(argv(str(tmp_path / "in" / "00000.parquet"), out, tiny_checkpoint, *only))
    assert first["counts"]["written"] == len(KEYS) and not (out / "parquet").exists()
    # a second shard repeats a key of the committed first one: found only by reading the first one's tar back
    write_img2dataset_parquet(
        str(tmp_path / "in" / "00002.parquet"), [RawSample(f"{KEYS[1]}-0", photo_samples[0].image, "a repeat")]
    )
    second = run(argv(str(tmp_path / "in" / "*.parquet"), out, tiny_checkpoint, *only))
    counts = second["counts"]
    assert counts["balanced"] and counts["shards"] == 3 and counts["read"] == 2 * len(KEYS) + 1
    assert counts["rejected_by_stage"].get("dedup") == {"duplicate_key": 1}
    assert len(list((out / "webdataset").glob("*.tar"))) == 3
