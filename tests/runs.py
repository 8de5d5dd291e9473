"""Runs the end-to-end fault tests share: six webdataset shards of the bundled photos (one with a key
duplicated from another shard, one with a broken image) and a poisoned seventh shard; the command line
for the tiny detector; and a snapshot of everything a consumer reads from an output folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from vesl.io.shard_writers import RawSample, write_webdataset

N_SHARDS = 6


def build_inputs(root: Path, photos) -> None:
    root.mkdir(parents=True)
    for shard in range(N_SHARDS):
        samples = [RawSample(f"s{shard}-{i}", p.image, p.caption) for i, p in enumerate(photos)]
        if shard == 2:
            samples.append(RawSample("s0-0", photos[0].image, "a duplicate of a key in shard 0"))
        if shard == 4:
            samples.append(RawSample(f"s{shard}-bad", b"not an image", "a broken image"))
        write_webdataset(str(root / f"part-{shard:05d}.tar"), samples)
    (root / f"part-{N_SHARDS:05d}.tar").write_bytes(b"poisoned shard: not a tar archive " * 50)


def argv(inputs: Path, out: Path, checkpoint: str, *extra: str) -> list[str]:
    return [
        "--input",
        str(inputs / "*.tar"),
        "--output",
        str(out),
        "--checkpoint",
        checkpoint,
        "--image_size",
        "64",
        "--batch_size",
        "2",
        "--score_threshold",
        "0",
        "--max_candidates",
        "3",
        *extra,
    ]


def snapshot(out: Path) -> dict:
    """Everything a consumer reads, independent of file order and of the run that wrote it."""
    rows = {}
    for f in sorted((out / "parquet").glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            row.pop("image", None)
            rows[row["key"]] = json.dumps(row, sort_keys=True, default=str)
    rejects = sorted(line for f in (out / "rejects").glob("*.jsonl") for line in f.read_text().splitlines())
    summary = json.loads((out / "summary.json").read_text())
    return {
        "rows": rows,
        "rejects": rejects,
        "counts": summary["counts"],
        "tfrecord_bytes": sum(f.stat().st_size for f in (out / "tfrecord").glob("*.tfrecord")),
        "shards": sorted(p.name for p in (out / "stats").glob("*.json")),
    }


def vesl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.vesl", *args]


def local_runner_args(runner: str) -> list[str]:
    """The two ways VESL runs locally: in-process, or the DirectRunner with worker processes."""
    if runner == "in-process":
        return ["--runner", "FnApiRunner"]
    return ["--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
