"""Faults a long run meets, injected for real: the harness of ``bench.hostile_inputs``' fault cases and of
tests/e2e/test_interrupts.py and test_write_faults.py.

- a run started as a terminal starts it (its own process group, SIGINT and SIGTERM at their defaults),
  to be signalled as Ctrl-C signals it;
- a disk that fills up: a size-limited tmpfs (where this process may mount one: root) filled by another
  file, else the kernel's file-size limit (RLIMIT_FSIZE) dropped to 0 for the run's processes;
- a disk turned read-only: the tmpfs remounted;
- permission refused: permission bits, which bind root too once its process lacks the capabilities that
  override them (setpriv);
- what a run leaves besides committed shards and VESL's own files (``uncommitted_leftovers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_like_a_terminal(command: list[str], env: dict[str, str], **popen) -> subprocess.Popen:
    """Start ``command`` as a shell in a terminal starts a foreground job: the leader of its own process
    group (so the group can be signalled as Ctrl-C signals it), with SIGINT and SIGTERM at their defaults
    (a background job of a shell, or a test runner started as one, would pass SIGINT on ignored)."""

    def defaults() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
        preexec_fn=defaults,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def run_into_a_fault(command: list[str], out: Path, inject) -> tuple[int, list[str], str]:
    """Start the run (its commits slowed to one a second), call ``inject(process)`` once its first shard
    is committed, wait for its end: (exit status, the lines it said besides the input's, all of stderr)."""
    process = start_like_a_terminal(command, {**os.environ, "VESL_TEST_COMMIT_DELAY_S": "1"})
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


def ignored_signals(pid: int) -> set[int]:
    """The signals process ``pid`` ignores (Linux: /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask >> (n - 1) & 1}
    return set()


def wait_for_a_commit(process: subprocess.Popen, out: Path, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None and not list((out / "stats").glob("*.json")):
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before the fault could be injected:\n" + process.stderr.read()
    assert list((out / "stats").glob("*.json")), "no shard was committed in time"


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def uncommitted_leftovers(out: Path) -> list[str]:
    """What is in ``out`` besides VESL's own files and the files of committed shards (each stats file
    lists its shard's files): temporary files, beam-temp-* folders, files of shards never committed."""
    committed = {p.stem for p in (out / "stats").glob("*.json")}
    listed = set()
    for stats in (out / "stats").glob("*.json"):
        listed |= {Path(f).name for f in json.loads(stats.read_text()).get("files", {}).values() if f}
    own = {"README.md", "_config.json", "_lease.json.lock", "summary.json", "stats"}
    left = []
    for path in sorted(out.rglob("*")):
        top = path.relative_to(out).parts[0]
        if path.is_dir() and top in {"parquet", "tfrecord", "rejects", "webdataset", "stats"}:
            continue
        if top in own and (top != "stats" or path.stem in committed):
            continue
        if path.is_file() and path.name in listed:
            continue
        left.append(str(path.relative_to(out)))
    return left


def can_mount() -> bool:
    return os.name == "posix" and os.geteuid() == 0 and shutil.which("mount") is not None


@contextlib.contextmanager
def mounted_tmpfs(size: str = "16m") -> Iterator[Path | None]:
    """A fresh tmpfs open to every user, unmounted afterwards; None where none can be mounted."""
    if not can_mount():
        yield None
        return
    where = Path(tempfile.mkdtemp(prefix="vesl-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        where.rmdir()
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        where.rmdir()


def remount(where: Path, mode: str) -> None:
    """``ro`` or ``rw``."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def limit_file_size(process: subprocess.Popen) -> None:
    """Every process of the run may write no byte more (writes fail with EFBIG): a full disk where no
    tmpfs can be mounted."""
    import resource

    from vesl.stopping import child_processes

    for pid in [process.pid, *child_processes(process.pid)]:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, 0))


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


def without_permission_override() -> list[str] | None:
    """A command prefix that makes permission bits bind: root ignores them, unless its process lacks the
    capabilities that override them (dropped from its bounding set by util-linux's setpriv). None: root
    without setpriv, where permission bits cannot be made to bind."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
