"""Progress: the line's arithmetic, the per-process count files, and the monitor thread."""

from __future__ import annotations

import io
import multiprocessing

from vesl import progress
from vesl.progress import Progress, ProgressMonitor, counters_for, format_progress, read_counts


def test_line_extrapolates_until_every_shard_is_read():
    line = format_progress(Progress(shards_total=10, shards_read=2, records_read=200, finished=100), 10.0)
    assert line.startswith("vesl: shards 2/10 read, 0 committed | records 100/~1,000 done, 10.0/s")
    assert "ETA 0:01:30" in line and "0:00:10 elapsed" in line
    exact = format_progress(Progress(10, 10, 950, 900, 9), 90.0)
    assert "records 900/950 done" in exact and "ETA 0:00:05" in exact and "9 committed" in exact


def test_line_before_anything_is_known():
    assert "records 0/? done, 0.0/s | ETA ?" in format_progress(Progress(3), 0.0)
    assert "ETA ?" in format_progress(Progress(3, 1, 10, 0), 5.0)  # nothing finished yet: no rate


def _worker(folder: str) -> None:
    counters = counters_for(folder)
    counters.add(progress.RECORDS_READ, 5)
    counters.flush()


def test_counts_from_several_processes_add_up(tmp_path):
    folder = str(tmp_path)
    here = counters_for(folder)
    assert counters_for(folder) is here  # one file per process and folder
    here.add(progress.RECORDS_READ, 3)
    here.add(progress.SHARDS_READ)
    here.flush()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(folder,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert read_counts(folder) == {progress.RECORDS_READ: 13, progress.SHARDS_READ: 1}
    assert counters_for(None) is None


def test_monitor_prints_lines_and_a_final_one(tmp_path):
    stream = io.StringIO()  # not a terminal: plain lines
    counters = counters_for(str(tmp_path))
    with ProgressMonitor(str(tmp_path), shards_total=2, stream=stream, interval_s=0.05) as monitor:
        counters.add(progress.SHARDS_READ, 2)
        counters.add(progress.RECORDS_READ, 4)
        counters.add(progress.FINISHED, 4)
        counters.flush()
        monitor.stopped.wait(0.2)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("vesl: shards 2/2 read, 0 committed | records 4/4 done")


def test_monitor_of_a_worker_side_listing_takes_the_total_from_the_listing(tmp_path):
    counters = counters_for(str(tmp_path))
    monitor = ProgressMonitor(str(tmp_path), shards_total=None, stream=io.StringIO())
    counters.add(progress.SHARDS_LISTED, 5)
    counters.add(progress.SHARDS_READ, 2)
    counters.flush()
    assert monitor.snapshot().shards_total == 5
    assert format_progress(monitor.snapshot(), 1.0).startswith("vesl: shards 2/5 read")
