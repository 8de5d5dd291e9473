"""Runs the end-to-end fault tests share: six webdataset shards of the bundled photos (one with a key
duplicated from another shard, one with a broken image) and a poisoned seventh shard; the command line
for the tiny detector; and a snapshot of everything a consumer reads from an output folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from vesl.io.shard_writers import RawSample, write_webdataset

N_SHARDS = 6
ROOT = Path(__file__).resolve().parents[1]


def build_inputs(root: Path, photos) -> None:
    root.mkdir(parents=True)
    for shard in range(N_SHARDS):
        samples = [RawSample(f"s{shard}-{i}", p.image, p.caption) for i, p in enumerate(photos)]
        if shard == 2:
            samples.append(RawSample("s0-0", photos[0].image, "a duplicate of a key in shard 0"))
        if shard == 4:
            samples.append(RawSample(f"s{shard}-bad", b"not an image", "a broken image"))
        write_webdataset(str(root / f"part-{shard:05d}.tar"), samples)
    (root / f"part-{N_SHARDS:05d}.tar").write_bytes(b"poisoned shard: not a tar archive " * 50)


def argv(inputs: Path, out: Path, checkpoint: str, *extra: str) -> list[str]:
    return [
        "--input",
        str(inputs / "*.tar"),
        "--output",
        str(out),
        "--checkpoint",
        checkpoint,
        "--image_size",
        "64",
        "--batch_size",
        "2",
        "--score_threshold",
        "0",
        "--max_candidates",
        "3",
        *extra,
    ]


def snapshot(out: Path) -> dict:
    """Everything a consumer reads, independent of file order and of the run that wrote it."""
    rows = {}
    for f in sorted((out / "parquet").glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            row.pop("image", None)
            rows[row["key"]] = json.dumps(row, sort_keys=True, default=str)
    rejects = sorted(line for f in (out / "rejects").glob("*.jsonl") for line in f.read_text().splitlines())
    summary = json.loads((out / "summary.json").read_text())
    return {
        "rows": rows,
        "rejects": rejects,
        "counts": summary["counts"],
        "tfrecord_bytes": sum(f.stat().st_size for f in (out / "tfrecord").glob("*.tfrecord")),
        "shards": sorted(p.name for p in (out / "stats").glob("*.json")),
    }


def vesl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.vesl", *args]


def local_runner_args(runner: str) -> list[str]:
    """The two ways VESL runs locally: in-process, or the DirectRunner with worker processes."""
    if runner == "in-process":
        return ["--runner", "FnApiRunner"]
    return ["--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


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
