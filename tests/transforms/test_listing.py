"""The worker-side listing (ListShards, PlanShards) under the FnApiRunner, judged against the driver's
``discover_inputs`` on the same trees: the same shards, the same sidecars, the same errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline

from tests.conftest import IMG2DATASET
from vesl.io.inputs import InputError, discover_inputs
from vesl.io.layout import OutputLayout, shard_output_id
from vesl.records import KeptShard
from vesl.resume import ConfigConflict
from vesl.transforms.listing import COMMITTED, ListShards, PlanShards

N_IMG2DATASET = 2000  # shards in the big img2dataset folder: the listing test runs on thousands of tiny shards


def pipeline():
    return test_pipeline.TestPipeline(runner="FnApiRunner")


def touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Names only (listing never opens a file): every rule of vesl.io.inputs at least once."""
    root = tmp_path_factory.mktemp("listing") / "data"
    big = root / "laion"  # img2dataset webdataset output: NNNNN.tar + NNNNN.parquet + NNNNN_stats.json
    big.mkdir(parents=True)
    for n in range(N_IMG2DATASET):
        for suffix in (".tar", ".parquet", "_stats.json"):
            (big / f"{n:05d}{suffix}").touch()
    (big / "notes.txt").touch()  # loose, of no format: ignored in a folder
    (big / "extra.jsonl").touch()  # loose manifest beside img2dataset shards: read
    files = root / "cc3m" / "files"  # img2dataset files output: NNNNN/ folders are shards, never walked
    for n in range(40):
        touch(files / f"{n:05d}" / "000000000.jpg")
        touch(files / f"{n:05d}" / "000000000.tar")  # inside a shard folder: not a shard of its own
        touch(files / f"{n:05d}.parquet")
        touch(files / f"{n:05d}_stats.json")
    deep = root / "by-day"  # a generic tree deeper than the walk's spread levels
    for day in range(30):
        for rel in ("a.tar", "b/c.parquet", "b/d/e.tfrecord.gz", "b/d/f/g/h.tar", "b/d/f/g/i/j.jsonl", "k.json"):
            touch(deep / f"{day:02d}" / rel)
    for hidden in (".git/x.tar", "_tmp/y.tar", "by-day/00/_SUCCESS", "by-day/00/.z.tar"):
        touch(root / hidden)
    old = root / "old-vesl-run"  # another VESL output: skipped
    for sub in ("stats", "rejects", "parquet"):
        touch(old / sub / "x.parquet")
    out = root / "out"  # this run's output, inside the input
    touch(out / "parquet" / "p-1.parquet")
    touch(out / "summary.json", "{}")
    return root


_KEPT: dict[str, list] = {}  # what a pipeline's Keep steps saw: the FnApiRunner runs them in this process


class Keep(beam.DoFn):
    def __init__(self, name: str):
        self.name = name

    def process(self, item):
        _KEPT.setdefault(self.name, []).append(item)


def kept(name: str) -> list:
    return _KEPT.pop(name, [])


def worker_listing(patterns: list[str], output: str | None = None, levels: int = 3) -> list:
    kept("listed")
    with pipeline() as p:
        _ = p | ListShards(patterns, output, levels) | beam.ParDo(Keep("listed"))
    return sorted(kept("listed"), key=lambda s: s.path)


def test_the_tree_has_thousands_of_shards(tree):
    shards = discover_inputs([str(tree)], output=str(tree / "out")).shards
    assert len(shards) == N_IMG2DATASET + 1 + 40 + 30 * 5  # laion + extra.jsonl, cc3m, by-day
    formats = {s.format for s in shards}
    assert formats == {"webdataset", "files", "parquet", "tfrecord", "manifest"}


@pytest.mark.parametrize(
    "patterns",
    [
        ["{root}"],
        ["{root}/laion/*.tar"],  # a glob of 2,000 files in one img2dataset folder: each takes its sidecars
        ["{root}/laion/0*"],  # sidecars matched by the glob are left to their shards
        ["{root}/*"],  # a glob of folders: each is walked
        ["{root}/by-day", "{root}/laion/0000*.tar", "{root}/laion"],  # overlapping patterns: one shard per path
        ["{root}/cc3m/files/00003", "{root}/by-day/*/b/d"],  # a shard folder named alone; globbed subfolders
    ],
)
@pytest.mark.parametrize("levels", [1, 3])
def test_workers_list_exactly_what_the_driver_lists(tree, patterns, levels):
    patterns = [p.format(root=tree) for p in patterns]
    output = str(tree / "out")
    expected = discover_inputs(patterns, output=output).shards
    assert worker_listing(patterns, output, levels) == expected


@pytest.mark.parametrize(
    "patterns",
    [
        ["{root}/missing"],
        ["{root}/laion/*.parquet"],  # sidecars only: said why
        ["{root}/laion/notes.txt"],  # a file of no known format
        ["{root}/by-day", "{root}/old-vesl-run"],  # the second pattern gives nothing
        ["{root}/out/parquet/*"],  # this run's output
    ],
)
def test_a_pattern_that_gives_nothing_fails_with_the_drivers_message(tree, patterns):
    patterns = [p.format(root=tree) for p in patterns]
    output = str(tree / "out")
    with pytest.raises(InputError) as driver:
        discover_inputs(patterns, output=output)
    with pytest.raises(InputError) as workers:
        worker_listing(patterns, output)
    assert str(driver.value) in str(workers.value)


def test_remote_listing_keeps_the_protocol():
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in sorted((IMG2DATASET / "tfrecord").iterdir()):
        fs.pipe(f"/listing-bucket/i2d/{path.name}", path.read_bytes())
    try:
        expected = discover_inputs(["memory://listing-bucket"]).shards
        assert expected and expected[0].path.startswith("memory://")
        assert worker_listing(["memory://listing-bucket"]) == expected
    finally:
        fs.rm("/listing-bucket", recursive=True)


def write_stats(layout: OutputLayout, shard_path: str, digest: str, written: int) -> str:
    shard_id = shard_output_id(shard_path)
    stats = {
        "shard_id": shard_id,
        "input": shard_path,
        "provenance": {"config_digest": digest},
        "counts": {"w": written},
    }
    touch(Path(layout.path("stats", shard_id)), json.dumps(stats))
    return shard_id


def plan(layout: OutputLayout, shards: list, digest: str, overwrite: bool = False) -> tuple[list, list]:
    kept("to_process"), kept("committed")
    with pipeline() as p:
        planned = p | beam.Create(shards) | PlanShards(layout, (digest,), overwrite)
        _ = planned.to_process | "to_process" >> beam.ParDo(Keep("to_process"))
        _ = planned[COMMITTED] | "committed" >> beam.ParDo(Keep("committed"))
    return sorted(kept("to_process"), key=lambda s: s.path), sorted(kept("committed"), key=lambda s: s.shard_id)


def test_plan_keeps_this_inputs_committed_shards_and_processes_the_rest(tree, tmp_path):
    shards = discover_inputs([str(tree / "by-day")]).shards
    layout = OutputLayout(str(tmp_path / "out"))
    done = {write_stats(layout, shards[i].path, "d1", i) for i in (0, 7, 8)}
    touch(tree / "elsewhere.tar", "")
    write_stats(layout, str(tree / "elsewhere.tar"), "d1", 99)  # committed from another input: not counted
    gone = write_stats(layout, str(tree / "deleted.tar"), "d1", 5)  # its input is gone: kept, counted as such
    touch(Path(layout.path("stats", "half-written")).with_suffix(".json.tmp-123"), "{")  # a commit in flight
    to_process, committed = plan(layout, shards, "d1")
    assert to_process == [s for i, s in enumerate(shards) if i not in (0, 7, 8)]
    expected = [KeptShard(shard_output_id(shards[i].path), {"w": i}) for i in (0, 7, 8)]
    expected.append(KeptShard(gone, {"w": 5}, input_gone=True))
    assert committed == sorted(expected, key=lambda s: s.shard_id)
    assert {shard.shard_id for shard in committed if not shard.input_gone} == done
    assert plan(layout, shards, "d1", overwrite=True) == (shards, [KeptShard(gone, {"w": 5}, input_gone=True)])
    assert plan(OutputLayout(str(tmp_path / "fresh")), shards, "d1") == (shards, [])  # no stats folder at all


def test_plan_refuses_a_committed_shard_of_another_configuration(tree, tmp_path):
    shards = discover_inputs([str(tree / "by-day")]).shards[:5]
    layout = OutputLayout(str(tmp_path / "out"))
    write_stats(layout, shards[3].path, "d0", 1)
    with pytest.raises(ConfigConflict, match="another configuration"):
        plan(layout, shards, "d1")


def test_a_vesl_output_as_input_folder_is_still_read_by_its_own_run(tree, tmp_path):
    """``make sample``'s layout, through the workers: OUTPUT/input/ is input, OUTPUT's own folders are not."""
    out = tmp_path / "sample"
    shutil.copytree(IMG2DATASET / "webdataset", out / "input")
    for sub in ("parquet", "stats", "rejects"):
        touch(out / sub / "00000-abcd.parquet")
    expected = discover_inputs([str(out)], output=str(out)).shards
    assert len(expected) == 3
    assert worker_listing([str(out)], str(out)) == expected
