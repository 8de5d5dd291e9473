"""Progress of a local run on stderr: shards read / total, records finished (written or rejected),
records/s and an ETA.

The workers (in this process with the FnApiRunner, in subprocesses with the multi-processing
DirectRunner) add to counters that each process writes, at most once a second, to its own small
JSON file in a local folder; the launching process sums the files every few seconds and prints one
line. On Dataflow nothing is written here: the same counts are Beam counters (``vesl`` namespace:
``shards_read``, ``records_read``, ``records_finished``, ``shards_committed``) in the job's page.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

# Counter names (the same names as the Beam counters).
SHARDS_READ = "shards_read"
RECORDS_READ = "records_read"  # every item a shard yielded: records and read-stage rejects
FINISHED = "records_finished"  # written or rejected at any stage
SHARDS_COMMITTED = "shards_committed"
SHARDS_LISTED = "shards_listed"  # shards to process, counted by a worker-side listing (its total is not known up front)
FLUSH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Progress:
    shards_total: int
    shards_read: int = 0
    records_read: int = 0
    finished: int = 0
    shards_committed: int = 0

    def estimated_records(self) -> int | None:
        """Records of the whole input: exact once every shard is read, else extrapolated per shard."""
        if self.shards_read >= self.shards_total:
            return self.records_read
        if not self.shards_read:
            return None
        return round(self.records_read / self.shards_read * self.shards_total)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_progress(progress: Progress, elapsed_s: float) -> str:
    """One line: ``shards 3/10 read, 1 committed | records 1,200/~4,000 done, 52.1/s | ETA 0:00:54``."""
    total = progress.estimated_records()
    exact = progress.shards_read >= progress.shards_total
    total_text = "?" if total is None else f"{'' if exact else '~'}{total:,}"
    rate = progress.finished / elapsed_s if elapsed_s > 0 else 0.0
    if total is None or rate <= 0:
        eta = "ETA ?"
    else:
        eta = f"ETA {_duration(max(total - progress.finished, 0) / rate)}"
    return (
        f"vesl: shards {progress.shards_read}/{progress.shards_total} read, {progress.shards_committed} committed"
        f" | records {progress.finished:,}/{total_text} done, {rate:,.1f}/s | {eta} | {_duration(elapsed_s)} elapsed"
    )


class ProgressCounters:
    """The worker side: counts of this process, written to ``folder/<pid>-<id>.json`` (atomically, at
    most once a second, and on ``flush``). One instance per process and folder (``counters_for``)."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        self.last_write = 0.0

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n
            if time.monotonic() - self.last_write >= FLUSH_INTERVAL_S:
                self._write()

    def flush(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        self.last_write = time.monotonic()
        temp = self.path.with_suffix(".tmp")
        try:
            temp.write_text(json.dumps(dict(self.counts)))
            os.replace(temp, self.path)
        except OSError:
            pass  # progress is a courtesy: a full or vanished folder never fails the run


_COUNTERS: dict[tuple[int, str], ProgressCounters] = {}
_COUNTERS_LOCK = threading.Lock()


def counters_for(folder: str | None) -> ProgressCounters | None:
    if not folder:
        return None
    key = (os.getpid(), folder)  # a forked worker gets its own file
    with _COUNTERS_LOCK:
        if key not in _COUNTERS:
            _COUNTERS[key] = ProgressCounters(folder)
        return _COUNTERS[key]


def read_counts(folder: str) -> Counter:
    total: Counter = Counter()
    for path in Path(folder).glob("*.json"):
        try:
            total.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being replaced right now; the next poll reads it
    return total


class ProgressMonitor:
    """The launcher side: a thread that prints the summed counts every ``interval_s`` (on a terminal,
    one line rewritten in place; otherwise a line per interval), and a last line at the end."""

    def __init__(
        self, folder: str, shards_total: int | None, stream: TextIO | None = None, interval_s: float | None = None
    ):
        """``shards_total`` None: the workers list the input, and the total is what they have listed so far."""
        self.folder = folder
        self.shards_total = shards_total
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (2.0 if self.tty else 30.0)
        self.started = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vesl-progress", daemon=True)

    def snapshot(self) -> Progress:
        counts = read_counts(self.folder)
        return Progress(
            self.shards_total if self.shards_total is not None else counts[SHARDS_LISTED],
            counts[SHARDS_READ],
            counts[RECORDS_READ],
            counts[FINISHED],
            counts[SHARDS_COMMITTED],
        )

    def _print(self, final: bool = False) -> None:
        line = format_progress(self.snapshot(), time.monotonic() - self.started)
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self._print()

    def __enter__(self) -> ProgressMonitor:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()
        self._print(final=True)
