"""Write failures met mid-run: the output's disk fills up, turns read-only, or refuses permission once the
first shard is committed. Each run is a real ``python -m pipelines.vesl``; it must exit 1 with one line
naming the path and the error, commit no shard by halves, leave nothing in OUTPUT but committed shards
and VESL's own files (what the fault itself keeps from being removed is named in that line and cleared by
the rerun), and the same command run once the fault is gone must end equal to a clean run.

The faults are real (``bench.faults``): a size-limited tmpfs mounted for the test, filled or remounted
read-only; where this machine cannot mount one (not root), the full disk is the kernel's file-size limit
dropped to 0 for the run's processes and the read-only case is skipped, each test printing which ran.
Permission bits bind root too, once setpriv drops the capabilities that override them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults import (
    can_mount,
    fill,
    limit_file_size,
    mounted_tmpfs,
    remount,
    run_into_a_fault,
    uncommitted_leftovers,
    without_permission_override,
)
from pipelines.vesl import run
from tests.runs import argv, local_runner_args, snapshot, vesl_command

pytestmark = pytest.mark.slow


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    with mounted_tmpfs() as where:
        if where is None:
            pytest.skip("no tmpfs can be mounted here (not root): this test did not run")
        print(f"faults injected on a real tmpfs at {where}")
        yield where


def check_failed_in_one_line(status: int, said: list[str], stderr: str, error: str, out: Path) -> None:
    assert status == 1, stderr
    assert len(said) == 1 and "Traceback" not in stderr, stderr
    assert said[0].startswith("vesl: error: the run failed: ") and error in said[0], said[0]
    assert f": '{out}/" in said[0], "the line names the path that failed"
    assert "rerun the same command to resume" in said[0]
    for stats in (out / "stats").glob("*.json"):  # every committed shard is whole
        files = json.loads(stats.read_text())["files"]
        assert all(Path(f).is_file() for f in files.values() if f), stats


class FullDisk:
    """The output's disk fills up: a real tmpfs filled to the last byte by another file (removing it frees
    the space), or the run's file-size limit dropped to 0 (EFBIG) where no tmpfs can be mounted."""

    def __init__(self, folder: Path, mounted: bool):
        self.folder, self.mounted = folder, mounted
        self.error = "[Errno 28] No space left on device" if mounted else "[Errno 27] File too large"
        self.filler: Path | None = None

    def fill(self, process: subprocess.Popen) -> None:
        if self.mounted:
            self.filler = fill(self.folder)
        else:
            limit_file_size(process)

    def free(self) -> None:
        if self.filler is not None:
            self.filler.unlink()


@pytest.fixture
def full_disk(request, tmp_path) -> Iterator[FullDisk]:
    if can_mount():
        print("full disk: a real tmpfs, filled")
        yield FullDisk(request.getfixturevalue("tmpfs"), mounted=True)
    else:
        print("full disk: no tmpfs can be mounted here; the run's file-size limit (RLIMIT_FSIZE) drops to 0")
        yield FullDisk(tmp_path, mounted=False)


@pytest.mark.parametrize("runner", ["in-process", "worker processes"])
def test_a_full_disk_fails_the_run_in_one_line_and_the_rerun_resumes(full_disk, inputs, tiny_checkpoint, clean, runner):
    out = full_disk.folder / "out"
    command = vesl_command(*argv(inputs, out, tiny_checkpoint, *local_runner_args(runner)))
    status, said, stderr = run_into_a_fault(command, out, full_disk.fill)
    check_failed_in_one_line(status, said, stderr, full_disk.error, out)
    assert uncommitted_leftovers(out) == [], "cleaning up needs no space: only committed shards stay"
    assert not (out / "_lease.json").exists()
    print(said[0])

    full_disk.free()
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    assert snapshot(out) == clean and uncommitted_leftovers(out) == []


def test_a_disk_turned_read_only_fails_the_run_in_one_line_and_the_rerun_resumes(tmpfs, inputs, tiny_checkpoint, clean):
    out = tmpfs / "out"
    command = vesl_command(*argv(inputs, out, tiny_checkpoint, *local_runner_args("in-process")))
    status, said, stderr = run_into_a_fault(command, out, lambda process: remount(tmpfs, "ro"))
    check_failed_in_one_line(status, said, stderr, "[Errno 30] Read-only file system", out)
    assert "not removed, the rerun will: " in said[0]  # nothing can be removed from a read-only disk
    print(said[0])

    remount(tmpfs, "rw")
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))  # takes the dead run's lease over
    assert snapshot(out) == clean and uncommitted_leftovers(out) == []
    assert not (out / "_lease.json").exists() and not (out / "_temporary").exists()


def test_a_folder_that_refuses_permission_fails_the_run_in_one_line_and_the_rerun_resumes(
    tmp_path, inputs, tiny_checkpoint, clean
):
    prefix = without_permission_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: permission bits cannot bind, this test did not run")
    out = tmp_path / "out"
    command = prefix + vesl_command(*argv(inputs, out, tiny_checkpoint, *local_runner_args("in-process")))

    def refuse(process) -> None:
        (out / "stats").chmod(0o555)  # no more commits

    status, said, stderr = run_into_a_fault(command, out, refuse)
    check_failed_in_one_line(status, said, stderr, "[Errno 13] Permission denied", out)
    assert uncommitted_leftovers(out) == []
    print(said[0])

    (out / "stats").chmod(0o755)
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    assert snapshot(out) == clean and uncommitted_leftovers(out) == []
