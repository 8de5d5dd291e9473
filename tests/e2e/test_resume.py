"""Work units: every input shard is committed on its own; a run killed with SIGKILL midway and run
again ends with exactly the outputs of a clean run: every record once, written or rejected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.vesl import UsageError, run
from tests.runs import N_SHARDS, argv, snapshot
from vesl.io.readers import describe_endings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_clean_run_commits_every_shard_and_rejects_the_poisoned_one(clean):
    counts = clean["counts"]
    assert counts["balanced"] and counts["shards"] == N_SHARDS + 1 and len(clean["shards"]) == N_SHARDS + 1
    assert counts["rejected_by_stage"]["read"] == {"unreadable_shard": 1}
    assert counts["rejected_by_stage"]["dedup"] == {"duplicate_key": 1}
    assert counts["rejected_by_stage"]["decode"] == {"not_an_image": 1}
    assert counts["written"] == N_SHARDS * 3


def test_killed_run_resumes_to_the_clean_result(inputs, tiny_checkpoint, clean):
    out = inputs.parent / "killed"
    env = {**os.environ, "VESL_TEST_COMMIT_DELAY_S": "1.5", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "pipelines.vesl",
        *argv(
            inputs,
            out,
            tiny_checkpoint,
            "--runner",
            "DirectRunner",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
        ),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            if list((out / "stats").glob("*.json")):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its worker processes, mid-commit
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    committed = list((out / "stats").glob("*.json"))
    assert 1 <= len(committed) < N_SHARDS + 1, "the kill should leave some shards committed and some not"
    assert not (out / "summary.json").exists()
    assert (out / "_lease.json").exists()  # the killed run's lease: its process is gone, so it is stale

    summary = run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    assert not (out / "_lease.json").exists() and not (out / "_temporary").exists()
    again = snapshot(out)
    assert summary["counts"] == clean["counts"]
    assert again == clean  # same rows, rejects, counts and shards as the clean run: nothing lost or doubled


def test_overwrite_redoes_committed_shards(inputs, tiny_checkpoint, clean):
    out = inputs.parent / "clean"
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")}
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))  # everything committed: nothing redone
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")} == before
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner", "--overwrite"))
    after = {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")}
    assert after.keys() == before.keys() and all(after[k] > before[k] for k in before)
    assert snapshot(out) == clean


def tfrecord_keys(out: Path) -> list[str]:
    from vesl.io.tfexample import decode_example
    from vesl.io.tfrecord import read_tfrecord_file
    from vesl.schema import TFKeys

    return sorted(
        decode_example(record)[TFKeys.KEY][1][0].decode()
        for f in (out / "tfrecord").glob("*.tfrecord")
        for record in read_tfrecord_file(str(f))
    )


@pytest.mark.parametrize("listing", ["driver", "workers"])
def test_resume_without_parquet_still_deduplicates_committed_keys(inputs, tiny_checkpoint, clean, listing):
    """Deterministic: commit shard 0 alone, then run the whole input set (shard 2 repeats s0-0)."""
    out = inputs.parent / f"tfrecord-only-{listing}"
    only_tfrecord = ("--runner", "FnApiRunner", "--write_parquet", "false", "--list_shards", listing)
    first_shard_only = argv(inputs, out, tiny_checkpoint, *only_tfrecord)
    first_shard_only[1] = str(inputs / "part-00000.tar")
    run(first_shard_only)
    summary = run(argv(inputs, out, tiny_checkpoint, *only_tfrecord))
    keys = tfrecord_keys(out)
    assert len(keys) == len(set(keys)) == clean["counts"]["written"]
    assert summary["counts"]["rejected_by_stage"]["dedup"] == {"duplicate_key": 1}


@pytest.mark.parametrize("listing", ["driver", "workers"])
def test_resume_after_a_subset_was_committed_equals_a_clean_run(inputs, tiny_checkpoint, clean, listing):
    """Deterministic resume (no kill timing): shards 0 and 5 committed by an earlier run, then the
    whole input set. Shard 2 repeats shard 0's key s0-0: the committed copy must win, so the rerun
    rejects shard 2's as a duplicate and nothing is written twice. ``workers``: both runs list the input
    and plan the resume in the job."""
    out = inputs.parent / f"subset-{listing}"
    mode = ("--runner", "FnApiRunner", "--list_shards", listing)
    subset = argv(inputs, out, tiny_checkpoint, *mode)
    subset[1] = f"{inputs / 'part-00000.tar'},{inputs / 'part-00005.tar'}"
    first = run(subset)
    assert first["counts"]["shards"] == 2 and first["counts"]["written"] == 6 and first["input_shards"] == 2
    stats = {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")}
    summary = run(argv(inputs, out, tiny_checkpoint, *mode))
    again = snapshot(out)
    assert again == clean and summary["counts"] == clean["counts"]
    assert summary["input_shards"] == N_SHARDS + 1
    assert all((out / "stats" / name).stat().st_mtime_ns == t for name, t in stats.items())  # kept, not redone
    keys = [
        k for f in (out / "parquet").glob("*.parquet") for k in pq.read_table(f, columns=["key"]).column(0).to_pylist()
    ]
    assert len(keys) == len(set(keys))
    assert (
        "s0-0"
        in pq.read_table(next((out / "parquet").glob("part-00000-*.parquet")), columns=["key"]).column(0).to_pylist()
    )


def test_worker_listing_refuses_a_folder_of_another_configuration_and_overwrites_its_own(
    inputs, tiny_checkpoint, clean
):
    out = inputs.parent / "clean"  # committed by the clean run
    workers = ("--runner", "FnApiRunner", "--list_shards", "workers")
    with pytest.raises(UsageError, match=r"another configuration.*--list_shards driver --overwrite"):
        run(argv(inputs, out, tiny_checkpoint, *workers, "--score_threshold", "0.5"))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")}
    run(argv(inputs, out, tiny_checkpoint, *workers, "--overwrite"))
    after = {p.name: p.stat().st_mtime_ns for p in (out / "stats").glob("*.json")}
    assert after.keys() == before.keys() and all(after[k] > before[k] for k in before)
    assert snapshot(out) == clean


def test_worker_listing_reports_an_input_that_gives_nothing_as_a_usage_error(inputs, tiny_checkpoint, tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "notes.txt").write_text("x")
    workers = ("--runner", "FnApiRunner", "--list_shards", "workers")
    args = argv(inputs, tmp_path / "out", tiny_checkpoint, *workers)
    args[1] = f"{inputs / 'part-00001.tar'},{tmp_path / 'in'}"
    with pytest.raises(UsageError) as error:
        run(args)
    assert (
        str(error.value) == f"{str(tmp_path / 'in')!r} holds no input VESL can read (looked for {describe_endings()})"
    )
    assert not list((tmp_path / "out").glob("stats/*.json"))  # refused before any shard was committed
    args[1] = str(tmp_path / "missing")
    with pytest.raises(UsageError, match="no input matches"):  # said by the launcher: no job is started
        run(args)
