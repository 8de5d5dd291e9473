"""One output folder, several runs: a live run owns it (a second one is refused with one line), a
dead run's lease and temporary files are taken over, a run that lost its lease commits nothing
more, and a folder never mixes shards of two configurations, whatever each run's input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.faults import start_like_a_terminal
from pipelines.vesl import main, run
from tests.runs import vesl_command
from vesl.io.lease import LEASE_NAME, Lease
from vesl.io.shard_writers import RawSample, write_webdataset

pytestmark = pytest.mark.slow
N_SHARDS = 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photo_samples):
    root = tmp_path_factory.mktemp("concurrent") / "input"
    root.mkdir()
    for shard in range(N_SHARDS):
        samples = [RawSample(f"s{shard}-{i}", p.image, p.caption) for i, p in enumerate(photo_samples[:2])]
        write_webdataset(str(root / f"part-{shard:05d}.tar"), samples)
    return root


def argv(inputs: Path, out: Path, checkpoint: str, *extra: str, pattern: str = "*.tar") -> list[str]:
    return [
        "--input",
        str(inputs / pattern),
        "--output",
        str(out),
        "--checkpoint",
        checkpoint,
        "--image_size",
        "64",
        "--batch_size",
        "2",
        "--max_candidates",
        "3",
        "--runner",
        "FnApiRunner",
        "--progress",
        "false",
        *extra,
    ]


def start(command_argv: list[str], delay_s: float) -> subprocess.Popen:
    return start_like_a_terminal(vesl_command(*command_argv), {**os.environ, "VESL_TEST_COMMIT_DELAY_S": str(delay_s)})


def wait_for(predicate, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None and not predicate():
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended early: {process.communicate()}"
    assert predicate()


def digests(out: Path) -> set[str]:
    return {json.loads(p.read_text())["provenance"]["config_digest"] for p in (out / "stats").glob("*.json")}


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def test_a_live_run_owns_the_folder_and_a_second_run_is_refused_in_one_line(inputs, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    first = start(argv(inputs, out, tiny_checkpoint, "--score_threshold", "0"), delay_s=1.0)
    try:
        wait_for(lambda: (out / LEASE_NAME).exists(), first)
        holder = json.loads((out / LEASE_NAME).read_text())
        for threshold in ("0.5", "0"):  # other options, then identical ones: both refused
            status = main(argv(inputs, out, tiny_checkpoint, "--score_threshold", threshold))
            error = capsys.readouterr().err.strip().splitlines()
            assert status == 2
            assert error[-1].startswith("vesl: error: ") and f"in use by run {holder['run_id']}" in error[-1]
        _, stderr = first.communicate(timeout=300)
    finally:
        stop(first)
    assert first.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["shards"] == N_SHARDS and summary["counts"]["balanced"]
    assert digests(out) == {summary["provenance"]["config_digest"]}
    assert json.loads((out / "_config.json").read_text())["config_digest"] == summary["provenance"]["config_digest"]
    assert not (out / LEASE_NAME).exists() and not (out / "_temporary").exists()


def test_a_dead_runs_lease_and_temporary_files_are_taken_over(inputs, tmp_path, tiny_checkpoint, caplog):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    out.mkdir()
    (out / LEASE_NAME).write_bytes(Lease("dead-run", socket.gethostname(), dead.pid, now, now, "x").to_bytes())
    leftover = out / "_temporary" / "dead-run" / "parquet" / "half-written.parquet"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"PAR1 torn")
    summary = run(argv(inputs, out, tiny_checkpoint, "--score_threshold", "0", pattern="part-00000.tar"))
    assert summary["counts"]["written"] == 2
    assert "taking over the output lease of run dead-run" in caplog.text
    assert not (out / "_temporary").exists() and not (out / LEASE_NAME).exists()


def test_a_run_whose_lease_was_taken_over_commits_nothing_more(inputs, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    victim = start(argv(inputs, out, tiny_checkpoint, "--score_threshold", "0"), delay_s=1.5)
    try:
        wait_for(lambda: len(list((out / "stats").glob("*.json"))) >= 1, victim)
        now = time.time()  # another run judged the victim dead and took the folder
        (out / LEASE_NAME).write_bytes(Lease("usurper", "elsewhere", 1, now, now, "y").to_bytes())
        _, stderr = victim.communicate(timeout=300)
    finally:
        stop(victim)
    assert victim.returncode == 1
    assert stderr.strip().splitlines()[-1].startswith("vesl: error: ") and "lease" in stderr.splitlines()[-1]
    assert len(list((out / "stats").glob("*.json"))) == 1  # the shard in flight was fenced off too
    assert not (out / "summary.json").exists()
    assert json.loads((out / LEASE_NAME).read_text())["run_id"] == "usurper"  # not released by the victim


def test_a_folder_never_mixes_configurations_whatever_the_input(inputs, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    run(argv(inputs, out, tiny_checkpoint, "--score_threshold", "0", pattern="part-00000.tar"))
    first_digest = digests(out)
    other = ("--score_threshold", "0.5")
    for extra in ((), ("--overwrite",)):  # another input: --overwrite cannot redo shards it does not read
        assert main(argv(inputs, out, tiny_checkpoint, *other, *extra, pattern="part-00001.tar")) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert "holds 1 committed shards made with another configuration" in error
    (out / "_config.json").unlink()  # a folder from before _config.json: judged by its stats files
    assert main(argv(inputs, out, tiny_checkpoint, *other, pattern="part-00001.tar")) == 2
    assert "another configuration" in capsys.readouterr().err
    assert digests(out) == first_digest and len(list((out / "stats").glob("*.json"))) == 1
    # The same configuration on another input is fine; another one with --overwrite over the
    # whole folder redoes it all and leaves one configuration.
    run(argv(inputs, out, tiny_checkpoint, "--score_threshold", "0", pattern="part-00001.tar"))
    assert digests(out) == first_digest and len(list((out / "stats").glob("*.json"))) == 2
    summary = run(argv(inputs, out, tiny_checkpoint, *other, "--overwrite", pattern="part-0000[01].tar"))
    assert digests(out) == {summary["provenance"]["config_digest"]} != first_digest
    assert json.loads((out / "_config.json").read_text())["config_digest"] == summary["provenance"]["config_digest"]


def test_a_job_run_without_waiting_gives_the_folder_back_itself(inputs, tmp_path, tiny_checkpoint):
    """--wait false: the launcher hands the lease to the job, whose last step releases it and removes
    its temporary folder (on the local runner the job is done before the launcher returns)."""
    out = tmp_path / "out"
    result = run(
        argv(inputs, out, tiny_checkpoint, "--score_threshold", "0", "--wait", "false", pattern="part-00000.tar")
    )
    assert result["submitted"]
    assert json.loads((out / "summary.json").read_text())["counts"]["written"] == 2
    assert not (out / LEASE_NAME).exists() and not list((out / "_temporary").glob("*"))
    assert run(argv(inputs, out, tiny_checkpoint, "--score_threshold", "0", pattern="part-00000.tar"))["counts"][
        "balanced"
    ]
