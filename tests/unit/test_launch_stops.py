"""The launcher's cleanup when a run ends early (vesl.launch.run_under_lease), with the run itself
replaced: what it removes for a local run that failed, and what it leaves alone for a remote job the
launcher only stopped waiting for."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from vesl import launch
from vesl.config import VeslConfig
from vesl.io.lease import LeaseLost, read_lease
from vesl.stopping import RunStopped


def a_launch(out, local: bool) -> launch.Launch:
    options = PipelineOptions(["--input", "x", "--output", str(out)])
    return launch.Launch(options, VeslConfig(), local, dry_run=False, on_workers=False, cpu_threads=None)


def folder_with_an_uncommitted_shard(out):
    (out / "parquet").mkdir(parents=True)
    (out / "parquet" / "part-00000-1a2b3c4d.parquet").write_bytes(b"half a shard")
    return out / "parquet" / "part-00000-1a2b3c4d.parquet"


class Pipeline:
    runner = None


def test_a_failed_local_run_removes_its_temporary_and_uncommitted_files_and_gives_the_lease_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    half = folder_with_an_uncommitted_shard(out)

    def fails(run_launch, pipeline, source, provenance, lease, planned=None):
        (out / "_temporary" / lease.held.run_id).mkdir(parents=True)
        raise OSError(28, "No space left on device", str(out / "stats" / "s.json"))

    monkeypatch.setattr(launch, "execute_reporting", fails)
    with pytest.raises(RunStopped) as stopped:
        launch.run_under_lease(a_launch(out, local=True), Pipeline(), None, None)
    assert stopped.value.exit_status == 1
    assert f"[Errno 28] No space left on device: '{out}/stats/s.json'" in str(stopped.value)
    assert not half.exists() and not (out / "_temporary").exists() and read_lease(str(out)) is None


def test_ctrl_c_while_waiting_for_a_remote_job_touches_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    half = folder_with_an_uncommitted_shard(out)

    def interrupted(run_launch, pipeline, source, provenance, lease, planned=None):
        (out / "_temporary" / lease.held.run_id).mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "execute_reporting", interrupted)
    with pytest.raises(RunStopped) as stopped:
        launch.run_under_lease(a_launch(out, local=False), Pipeline(), None, None)
    assert stopped.value.exit_status == 130 and "stopped waiting for the job" in str(stopped.value)
    assert half.exists() and (out / "_temporary").exists()  # the job may still be writing them
    assert read_lease(str(out)) is not None  # still the job's, until it goes stale


def test_a_run_that_lost_its_lease_leaves_the_new_holders_uncommitted_files_alone(tmp_path, monkeypatch):
    # Another run took the folder over (this one's lease went stale): the files it is writing and has
    # not committed yet are its own, and the run whose commit fence stopped it must not remove them.
    out = tmp_path / "out"

    def fenced(run_launch, pipeline, source, provenance, lease, planned=None):
        folder_with_an_uncommitted_shard(out)  # the new holder's shard, not yet committed
        raise LeaseLost(f"{str(out)!r}: taken over by another run; this run stopped committing")

    monkeypatch.setattr(launch, "execute_reporting", fenced)
    with pytest.raises(LeaseLost):
        launch.run_under_lease(a_launch(out, local=True), Pipeline(), None, None)
    assert (out / "parquet" / "part-00000-1a2b3c4d.parquet").exists()
