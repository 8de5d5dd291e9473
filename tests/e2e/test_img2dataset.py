"""End to end on folders written by the real img2dataset 1.47 (every output format) and Hugging Face
datasets, as a user passes them: ``--input FOLDER``. Also: the run's output inside its input
folder, a rerun, img2dataset bookkeeping that disagrees, and runs that must fail loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.vesl import main, run
from tests.conftest import IMG2DATASET, IMG2DATASET_FORMATS

pytestmark = pytest.mark.slow

URLS = json.loads((IMG2DATASET / "urls.json").read_text())
DOWNLOADED = 9  # of the 13 URLs: 404, connection refused, a text file and a cut JPEG fail


def vesl_args(input_path: Path | str, out: Path, checkpoint: str, *extra: str) -> list[str]:
    return [
        *("--input", str(input_path), "--output", str(out), "--checkpoint", checkpoint),
        *("--image_size", "64", "--batch_size", "4", "--runner", "FnApiRunner", "--progress", "false"),
        *extra,
    ]


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for path in sorted((out / "rejects").glob("*.jsonl")) for line in path.open()]


def written_keys(out: Path) -> list[str]:
    return sorted(
        k for p in (out / "parquet").glob("*.parquet") for k in pq.read_table(p, columns=["key"])["key"].to_pylist()
    )


@pytest.mark.parametrize("fmt", IMG2DATASET_FORMATS)
def test_an_img2dataset_folder_of_each_format(fmt, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    summary = run(vesl_args(IMG2DATASET / fmt, out, tiny_checkpoint))
    counts = summary["counts"]
    # read = every URL img2dataset tried; nothing of its bookkeeping is read as data
    assert (counts["shards"], counts["read"], counts["written"], counts["rejected"]) == (3, len(URLS), 8, 5)
    assert counts["balanced"] and summary["input_shards"] == 3
    assert counts["rejected_by_stage"] == {"read": {"empty_caption": 1, "failed_to_download": 2, "failed_to_resize": 2}}
    source = counts["source_checks"]
    assert (source["shards"], source["shards_with_stats"], source["urls_tried"], source["problems"]) == (3, 3, 13, 0)
    assert (source["downloaded"], source["failed"]) == (DOWNLOADED, 4)
    # the failed URLs are in the rejects with img2dataset's status, error message and the URL
    failed = [r for r in rejects(out) if r["reason"].startswith("failed_to")]
    assert sorted(r["url"].rsplit("/", 1)[-1] for r in failed) == ["cut.jpg", "missing.jpg", "notes.jpg", "refused.jpg"]
    assert all(r["detail"].startswith(f"img2dataset {r['reason']}: ") and r["stage"] == "read" for r in failed)
    # one output file set per img2dataset shard, and each shard's stats say where it came from
    stats = [json.loads(p.read_text()) for p in sorted((out / "stats").glob("*.json"))]
    assert [s["input_format"] for s in stats] == [fmt] * 3
    assert all(s["input_sidecars"]["stats"].endswith("_stats.json") for s in stats)
    assert written_keys(out) == sorted(
        {p.stem for p in (IMG2DATASET / "files").glob("*/*.jpg")} - {"000022"}  # 000022: empty caption
    )


def test_hugging_face_parquet_folder(tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    counts = run(vesl_args(IMG2DATASET / "hf", out, tiny_checkpoint))["counts"]
    assert (counts["read"], counts["written"], counts["rejected"], counts["balanced"]) == (9, 8, 1, True)
    assert counts["source_checks"]["shards"] == 0


def test_output_inside_the_input_folder_is_not_read_back(tmp_path, tiny_checkpoint, capsys):
    data = tmp_path / "data"
    shutil.copytree(IMG2DATASET / "tfrecord", data / "laion")
    shutil.copytree(IMG2DATASET / "hf", data / "hf")
    out = data / "vesl-out"
    args = vesl_args(data, out, tiny_checkpoint, "--progress", "true")
    assert main(args) == 0
    first = json.loads((out / "summary.json").read_text())["counts"]
    # hf/ holds the same images under the same keys: the first copy (by shard path) is written
    assert (first["shards"], first["read"], first["written"]) == (4, 13 + 9, 8)
    assert first["rejected_by_stage"]["dedup"] == {"duplicate_key": 8}
    err = capsys.readouterr().err
    assert "vesl: input: 4 shards: parquet 1, tfrecord 3 (3 with img2dataset's metadata/stats" in err
    assert "vesl: shards 4/4 read, 4 committed | records 22/22 done" in err  # the progress line
    # Rerun: the output folder now holds VESL's files; they are not input, and every shard resumes.
    assert main(args) == 0
    again = json.loads((out / "summary.json").read_text())["counts"]
    assert again == first
    assert "4 shards" in capsys.readouterr().err


def test_disagreeing_bookkeeping_is_reported(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "files"
    shutil.copytree(IMG2DATASET / "files", folder)
    for lost in (folder / "00001").glob("000012.*"):  # a record img2dataset says it stored
        lost.unlink()
    out = tmp_path / "out"
    assert main(vesl_args(folder, out, tiny_checkpoint)) == 0  # a warning, not a failure
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["balanced"] and counts["read"] == len(URLS)
    assert counts["rejected_by_stage"]["read"]["missing_from_shard"] == 1  # still accounted for
    assert counts["source_checks"]["problems_listed"] == [
        f"{folder / '00001'}: 1 URLs marked downloaded are missing from the shard",
        f"{folder / '00001'}: img2dataset stored 4 images, the shard holds 3",
    ]
    (missing,) = [r for r in rejects(out) if r["reason"] == "missing_from_shard"]
    assert missing["key"] == "000012" and missing["url"].endswith("/camera.png")
    err = capsys.readouterr().err
    assert "vesl: warning: img2dataset's own counts disagree with what was read" in err


def test_a_run_that_writes_nothing_fails_unless_allowed(tmp_path, tiny_checkpoint, capsys):
    args = vesl_args(IMG2DATASET / "parquet", tmp_path / "out", tiny_checkpoint, "--max_caption_chars", "3")
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "vesl: error: read 13 records but wrote none (rejected: read: caption_too_long 8, read: failed_to_download 2, "
        "read: failed_to_resize 2); see the rejects, or pass --allow_empty true if that is intended"
    )
    assert main([*args, "--allow_empty", "true", "--overwrite"]) == 0


def test_inputs_vesl_cannot_read_are_one_line_usage_errors(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert main(vesl_args(tmp_path / "notes", tmp_path / "out", tiny_checkpoint)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vesl: error: ") and "holds no input VESL can read" in err[0]
    assert main(vesl_args(tmp_path / "notes" / "a.txt", tmp_path / "out", tiny_checkpoint)) == 2
    assert "a.txt: not a format VESL reads" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_problems_are_found_before_any_work(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "a-file").write_text("x")
    for output, message in (
        (tmp_path / "a-file", "is a file, not a folder"),
        (tmp_path / "a-file" / "below", "is not writable (NotADirectoryError"),
    ):
        assert main(vesl_args(IMG2DATASET / "webdataset", output, tiny_checkpoint)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vesl: error: --output") and message in err[0], err
