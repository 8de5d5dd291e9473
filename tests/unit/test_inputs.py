"""Input discovery on folders written by the real img2dataset (tests/fixtures/img2dataset), globs,
explicit files, nested and remote folders, and the run's own output inside its input."""

from __future__ import annotations

import shutil
from pathlib import Path

import fsspec
import pytest

from tests.conftest import IMG2DATASET, IMG2DATASET_FORMATS
from vesl.io.inputs import InputError, discover_inputs
from vesl.records import InputShard

DATA_SUFFIX = {"webdataset": ".tar", "tfrecord": ".tfrecord", "files": "", "parquet": ".parquet"}


def names(shards: list[InputShard]) -> list[tuple[str, str, str | None, str | None]]:
    """(data, format, metadata, stats) by file name."""
    base = lambda p: p and Path(p).name  # noqa: E731
    return [(base(s.path), s.format, base(s.metadata), base(s.stats)) for s in shards]


@pytest.mark.parametrize("fmt", IMG2DATASET_FORMATS)
def test_img2dataset_folder_gives_its_data_files_with_their_sidecars(fmt):
    shards = discover_inputs([str(IMG2DATASET / fmt)]).shards
    suffix = DATA_SUFFIX[fmt]
    assert names(shards) == [
        (f"{n}{suffix}", fmt, f"{n}.parquet", f"{n}_stats.json") for n in ("00000", "00001", "00002")
    ]


@pytest.mark.parametrize("fmt", IMG2DATASET_FORMATS)
def test_globs_over_an_img2dataset_folder_leave_sidecars_to_their_shards(fmt):
    folder = discover_inputs([str(IMG2DATASET / fmt)]).shards
    everything = discover_inputs([f"{IMG2DATASET / fmt}/*"])
    assert everything.shards == folder
    assert any("bookkeeping" in note for note in everything.notes)
    if fmt != "files":  # explicit data files still take their sidecars
        assert discover_inputs([f"{IMG2DATASET / fmt}/*{DATA_SUFFIX[fmt]}"]).shards == folder
    one = discover_inputs([str(Path(folder[1].path))]).shards
    assert one == [folder[1]]


def test_a_glob_of_sidecars_only_is_a_usage_error():
    with pytest.raises(InputError, match="bookkeeping"):
        discover_inputs([f"{IMG2DATASET / 'webdataset'}/*.parquet"])
    with pytest.raises(InputError, match="bookkeeping"):
        discover_inputs([f"{IMG2DATASET / 'tfrecord'}/*_stats.json"])


def test_a_folder_of_folders_finds_every_layout():
    shards = discover_inputs([str(IMG2DATASET)]).shards
    by_format = {fmt: [s for s in shards if s.format == fmt] for fmt in IMG2DATASET_FORMATS}
    assert {fmt: len(v) for fmt, v in by_format.items()} == {"webdataset": 3, "parquet": 4, "tfrecord": 3, "files": 3}
    hf = [s for s in shards if s.path.endswith("hf/train.parquet")]
    assert hf == [InputShard(str(IMG2DATASET / "hf" / "train.parquet"), "parquet")]
    assert not [s for s in shards if s.path.endswith((".json", ".py", ".sh"))]


def test_unreadable_inputs_are_usage_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no input matches"):
        discover_inputs([str(tmp_path / "missing")])
    with pytest.raises(InputError, match=r"notes\.txt: not a format VESL reads"):
        discover_inputs([str(tmp_path / "notes.txt")])
    with pytest.raises(InputError, match=r"notes\.txt.*not a format"):
        discover_inputs([f"{tmp_path}/*"])  # a glob's unknown file is named, not skipped silently
    with pytest.raises(InputError, match="holds no input VESL can read"):
        discover_inputs([str(tmp_path / "empty")])


def test_generic_folders_are_searched_and_json_is_not_a_manifest_there(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "_tmp").mkdir()
    for rel in ("a/x.tar", "a/b/y.parquet", "a/b/z.tfrecord.gz", "m.jsonl", ".git/h.tar", "_tmp/t.tar"):
        (tmp_path / rel).write_bytes(b"")
    for rel in ("config.json", "a/meta.json", "README.md", "_SUCCESS"):
        (tmp_path / rel).write_text("{}")
    found = {Path(s.path).relative_to(tmp_path).as_posix(): s.format for s in discover_inputs([str(tmp_path)]).shards}
    assert found == {
        "a/x.tar": "webdataset",
        "a/b/y.parquet": "parquet",
        "a/b/z.tfrecord.gz": "tfrecord",
        "m.jsonl": "manifest",
    }
    # named explicitly, a .json file is a manifest
    assert discover_inputs([str(tmp_path / "config.json")]).shards[0].format == "manifest"


def test_the_runs_own_output_and_other_vesl_outputs_are_never_input(tmp_path):
    source = tmp_path / "in"
    shutil.copytree(IMG2DATASET / "webdataset", source)
    expected = discover_inputs([str(source)]).shards
    # A VESL output inside the input folder (img2dataset folders are not searched below, but a
    # generic parent folder is): make the parent generic and put two outputs in it.
    parent = tmp_path / "data"
    parent.mkdir()
    shutil.move(str(source), parent / "laion")
    out = parent / "vesl-out"
    for sub in ("parquet", "stats", "rejects"):
        (out / sub).mkdir(parents=True)
    (out / "parquet" / "x-1234.parquet").write_bytes(b"")
    older = parent / "older-run"
    for sub in ("stats", "rejects", "parquet"):
        (older / sub).mkdir(parents=True)
    (older / "parquet" / "y.parquet").write_bytes(b"")
    got = discover_inputs([str(parent)], output=str(out))
    assert names(got.shards) == names(expected)
    assert any("this run's output" in n for n in got.notes) and any("VESL output folder" in n for n in got.notes)
    # also when the output is not yet recognisable (a first run): what VESL writes is excluded by path
    shutil.rmtree(older)
    shutil.rmtree(out)
    (out / "parquet").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    (out / "parquet" / "x-1234.parquet").write_bytes(b"")
    assert names(discover_inputs([str(parent)], output=str(out)).shards) == names(expected)


def test_input_inside_the_output_folder_is_read(tmp_path):
    """``make sample``'s layout: OUTPUT/input/ holds the shards, OUTPUT/parquet/... the results."""
    out = tmp_path / "sample"
    shutil.copytree(IMG2DATASET / "webdataset", out / "input")
    expected = discover_inputs([str(out / "input")]).shards
    for sub in ("parquet", "stats", "rejects", "_temporary"):
        (out / sub).mkdir()
        (out / sub / "00000-abcd.parquet").write_bytes(b"")
    (out / "summary.json").write_text("{}")
    for pattern in (str(out / "input"), f"{out / 'input'}/*", str(out)):
        assert discover_inputs([pattern], output=str(out)).shards == expected, pattern
    with pytest.raises(InputError, match="in this run's output"):
        discover_inputs([f"{out / 'parquet'}/*"], output=str(out))


def test_remote_folders_keep_their_protocol():
    fs = fsspec.filesystem("memory")
    for path in sorted((IMG2DATASET / "tfrecord").iterdir()):
        fs.pipe(f"/bucket/i2d/{path.name}", path.read_bytes())
    shards = discover_inputs(["memory://bucket/i2d"]).shards
    assert [s.path for s in shards] == [f"memory:///bucket/i2d/0000{i}.tfrecord" for i in range(3)]
    assert shards[0].metadata == "memory:///bucket/i2d/00000.parquet"
    assert shards[0].stats == "memory:///bucket/i2d/00000_stats.json"
    fs.rm("/bucket", recursive=True)


def test_usage_errors_raised_in_the_job_are_recognised_in_a_remote_runners_error_text():
    from vesl.launch import worker_usage_error

    remote = RuntimeError(
        "Dataflow pipeline failed. State: FAILED, Error:\nTraceback (most recent call last):\n"
        '  File "/usr/local/lib/python3.11/site-packages/vesl/transforms/listing.py", line 120, in process\n'
        "vesl.io.inputs.InputError: 'gs://b/empty' holds no input VESL can read (looked for .tar) "
        "[while running 'ListShards/CheckPatterns']\n"
    )
    assert worker_usage_error(remote) == "'gs://b/empty' holds no input VESL can read (looked for .tar)"
    assert worker_usage_error(InputError("no input matches 'x' [while running 'ListShards/MatchPatterns']")) == (
        "no input matches 'x'"
    )
    assert worker_usage_error(RuntimeError("CUDA out of memory")) is None
