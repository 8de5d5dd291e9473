"""Output folders written by VESL 0.1 resume: it named a TFRecord input's shard ``00000.tfrecord-<hash>``
(the layout did not cut ``.tfrecord``) and recorded config digests of the config's shape before the
detector-backend split. A rerun keeps those commits (driver- and worker-side listings alike) and ends
equal to a clean run; ``--overwrite`` removes their files, so no reader sees a shard twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.vesl import run
from tests.conftest import IMG2DATASET
from vesl.config import build_config
from vesl.io.outputs import OutputFolder
from vesl.options import VeslOptions, config_from_options

pytestmark = pytest.mark.slow


def args(out: Path, checkpoint: str, *extra: str) -> list[str]:
    return [
        *("--input", str(IMG2DATASET / "tfrecord"), "--output", str(out), "--checkpoint", checkpoint),
        *("--image_size", "64", "--batch_size", "4", "--runner", "FnApiRunner", "--progress", "false", *extra),
    ]


def as_written_by_v01(out: Path, checkpoint: str) -> list[str]:
    """Turn a finished run's folder into what VESL 0.1 wrote for the same run: every shard's files and
    stats under its 0.1 name, digests of the old config shape. Returns the 0.1 shard ids."""
    config = config_from_options(VeslOptions(args(out, checkpoint)))
    (old_digest,) = config.earlier_digests()
    renamed = []
    for stats_path in sorted((out / "stats").glob("*.json")):
        stats = json.loads(stats_path.read_text())
        number, digest = stats["shard_id"].rsplit("-", 1)
        old_id = f"{number}.tfrecord-{digest}"  # what 0.1's layout made of NNNNN.tfrecord
        files = {}
        for fmt, recorded in stats["files"].items():
            path = out / fmt / Path(recorded).name  # the folder may be a copy: its own files
            moved = path.with_name(old_id + path.name[len(stats["shard_id"]) :])
            path.rename(moved)
            files[fmt] = str(moved)
        stats.update(shard_id=old_id, files=files)
        stats.pop("input_identity", None)  # 0.1 did not record its inputs: such shards resume unchecked
        stats["provenance"]["config_digest"] = old_digest
        (out / "stats" / f"{old_id}.json").write_text(json.dumps(stats, indent=2))
        stats_path.unlink()
        renamed.append(old_id)
    (out / "_config.json").write_text(json.dumps({"config_digest": old_digest, "config": {}}))
    return renamed


def outcome(out: Path) -> tuple[dict, list[str]]:
    folder = OutputFolder(str(out))
    return folder.summary()["counts"], sorted(row["key"] for row in folder.rows(["key"]))


@pytest.mark.parametrize("listing", ["driver", "workers"])
def test_a_v01_folder_resumes_and_overwrite_leaves_no_shard_twice(tmp_path, tiny_checkpoint, listing):
    clean = tmp_path / "clean"
    run(args(clean, tiny_checkpoint))
    expected_counts, expected_keys = outcome(clean)
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    old_ids = as_written_by_v01(out, tiny_checkpoint)
    # one shard was not committed when 0.1's run stopped
    gone = json.loads((out / "stats" / f"{old_ids[1]}.json").read_text())
    (out / "stats" / f"{old_ids[1]}.json").unlink()
    for fmt, path in gone["files"].items():
        (out / fmt / Path(path).name).unlink()

    summary = run(args(out, tiny_checkpoint, "--list_shards", listing))
    assert summary["counts"] == expected_counts and outcome(out)[1] == expected_keys
    names = sorted(p.stem for p in (out / "stats").glob("*.json"))
    assert sum(name.endswith(old_ids[0].rsplit("-", 1)[1]) for name in names) == 1
    assert old_ids[0] in names and old_ids[2] in names and old_ids[1] not in names  # kept as 0.1 named them

    summary = run(args(out, tiny_checkpoint, "--list_shards", listing, "--overwrite", "true"))
    assert summary["counts"] == expected_counts and outcome(out)[1] == expected_keys
    leftovers = [p.name for sub in ("parquet", "tfrecord", "rejects", "stats") for p in (out / sub).iterdir()]
    assert not [name for name in leftovers if ".tfrecord-" in name]  # 0.1's files are gone, not read twice
    assert sorted(p.name for p in (out / "parquet").iterdir()) == sorted(p.name for p in (clean / "parquet").iterdir())


def test_another_configuration_is_still_refused_in_a_v01_folder(tmp_path, tiny_checkpoint):
    from vesl.launch import UsageError

    out = tmp_path / "out"
    run(args(out, tiny_checkpoint))
    as_written_by_v01(out, tiny_checkpoint)
    with pytest.raises(UsageError, match="another configuration"):
        run(args(out, tiny_checkpoint, "--score_threshold", "0.3"))
    assert build_config("cloc").digest() != next(iter(build_config("cloc").earlier_digests()))
