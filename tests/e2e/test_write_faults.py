"""Write failures met mid-run: the output's disk fills up, becomes read-only, or refuses permission after
the first shard is committed. Each run is a real ``python -m pipelines.vesl``; it must exit 1 with one line
naming the path and the error, commit no shard by halves, leave nothing in OUTPUT but committed shards
and VESL's own files (what the fault itself keeps from being removed is named in that line and cleared
by the rerun), and the same command run once the fault is gone must end equal to a clean run.

The faults are real: a size-limited tmpfs mounted for the test (full disk, read-only remount), and a run
as an unprivileged user whose folder is made read-only (permission). Where this machine cannot mount
(not root), the tests say so and skip (``FAULTS`` below names the filesystem each test ran on)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.vesl import run
from tests.runs import (
    argv,
    build_inputs,
    local_runner_args,
    snapshot,
    start_like_a_terminal,
    uncommitted_leftovers,
    vesl_command,
    wait_for_a_commit,
)
from vesl.stopping import child_processes

pytestmark = pytest.mark.slow


def can_mount() -> bool:
    return os.name == "posix" and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A fresh 16 MiB tmpfs, open to every user; unmounted afterwards."""
    if not can_mount():
        pytest.skip("cannot mount a tmpfs here (not root): the size-limited filesystem tests did not run")
    where = Path(tempfile.mkdtemp(prefix="vesl-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0777", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): the tests did not run")
    print(f"faults injected on a real tmpfs at {where}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        where.rmdir()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photo_samples):
    root = tmp_path_factory.mktemp("faults") / "input"
    build_inputs(root, photo_samples)
    return root


@pytest.fixture(scope="module")
def clean(inputs, tiny_checkpoint):
    out = inputs.parent / "clean"
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    return snapshot(out)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; removing it frees the space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def run_into_a_fault(
    command: list[str], out: Path, inject, env: dict | None = None, **popen
) -> tuple[int, list[str], str]:
    """Start the run, inject the fault once the first shard is committed, wait for the end: (exit status,
    the lines said besides the input's, all of stderr)."""
    env = {**os.environ, "VESL_TEST_COMMIT_DELAY_S": "1", **(env or {})}
    process = start_like_a_terminal(command, env, **popen)
    try:
        wait_for_a_commit(process, out)
        inject(process)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    said = [line for line in stderr.splitlines() if not line.startswith("vesl: input:")]
    return process.returncode, said, stderr


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
    """The output's disk fills up mid-run: a real tmpfs filled to the last byte by another file (removing
    it frees the space), or, where this machine cannot mount one, the kernel's file-size limit
    (RLIMIT_FSIZE) lowered to 0 for every process of the run (each write then fails with EFBIG; what was
    written stays, nothing more fits)."""

    def __init__(self, folder: Path, mounted: bool):
        self.folder, self.mounted = folder, mounted
        self.error = "[Errno 28] No space left on device" if mounted else "[Errno 27] File too large"
        self.filler: Path | None = None

    def fill(self, process: subprocess.Popen) -> None:
        if self.mounted:
            self.filler = fill(self.folder)
            return
        import resource

        for pid in [process.pid, *child_processes(process.pid)]:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, 0))

    def free(self) -> None:
        if self.filler is not None:
            self.filler.unlink()


@pytest.fixture
def full_disk(request, tmp_path) -> Iterator[FullDisk]:
    if can_mount():
        disk = request.getfixturevalue("tmpfs")
        print("full disk: a real tmpfs, filled")
        yield FullDisk(disk, mounted=True)
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

    def read_only(process) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)

    status, said, stderr = run_into_a_fault(command, out, read_only)
    check_failed_in_one_line(status, said, stderr, "[Errno 30] Read-only file system", out)
    assert "not removed, the rerun will: " in said[0]  # nothing can be removed from a read-only disk
    print(said[0])

    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))  # takes the dead run's lease over
    assert snapshot(out) == clean and uncommitted_leftovers(out) == []
    assert not (out / "_lease.json").exists() and not (out / "_temporary").exists()


def without_permission_override() -> list[str]:
    """A command prefix that makes permission bits bind: root ignores them, unless its process lacks the
    capabilities that override them (dropped from its bounding set by util-linux's setpriv)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot bind, the test did not run")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def test_a_folder_that_refuses_permission_fails_the_run_in_one_line_and_the_rerun_resumes(
    tmp_path, inputs, tiny_checkpoint, clean
):
    out = tmp_path / "out"
    command = without_permission_override() + vesl_command(
        *argv(inputs, out, tiny_checkpoint, *local_runner_args("in-process"))
    )

    def refuse(process) -> None:
        (out / "stats").chmod(0o555)  # no more commits

    status, said, stderr = run_into_a_fault(command, out, refuse)
    check_failed_in_one_line(status, said, stderr, "[Errno 13] Permission denied", out)
    assert uncommitted_leftovers(out) == []
    print(said[0])

    (out / "stats").chmod(0o755)
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    assert snapshot(out) == clean and uncommitted_leftovers(out) == []
