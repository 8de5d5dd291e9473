"""How a run that does not finish ends (vesl.stopping), the removal of uncommitted shard files, and the
local runner's worker command; the real signals and faults are in tests/e2e/test_interrupts.py and
test_write_faults.py."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from apache_beam.io.filesystem import BeamIOError

from vesl.io.layout import OutputLayout
from vesl.io.outputs import OutputFolder
from vesl.local_runner import IGNORE_SIGINT, LocalRunner, local_runner
from vesl.stopping import (
    RunnerTracebacks,
    child_processes,
    exit_status_for,
    failed,
    failure_cause,
    interrupted,
    shards_committed,
    stop_child_processes,
    stop_on_signals,
)


def raised(make) -> BaseException:
    try:
        make()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing raised")


def beam_wrapped(exc: BaseException, step: str = "WriteShardOutputs/CommitShards") -> BaseException:
    """A step's error as Beam raises it: the original's text in a RuntimeError, with the step named."""

    def wrap():
        try:
            raise exc
        except BaseException as inner:
            raise RuntimeError(f"{type(inner).__name__}: {inner} [while running '{step}']") from inner

    return raised(wrap)


def test_a_system_error_is_said_with_its_path_and_without_the_step():
    cause = beam_wrapped(OSError(28, "No space left on device", "/out/_temporary/r/x.parquet"))
    assert failure_cause(cause) == "[Errno 28] No space left on device: '/out/_temporary/r/x.parquet'"


def test_a_system_error_with_a_path_wins_over_one_without():
    def chained():
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise OSError(28, "No space left on device", "/out/stats/s.json") from inner

    assert failure_cause(beam_wrapped(raised(chained))) == "[Errno 28] No space left on device: '/out/stats/s.json'"


def test_a_failed_beam_rename_names_its_target():
    error = BeamIOError(
        "Rename failed",
        {("/o/_temporary/a.json", "/o/stats/a.json"): OSError(PermissionError(13, "Permission denied"))},
    )
    assert failure_cause(beam_wrapped(error)) == "[Errno 13] Permission denied: '/o/stats/a.json'"


def test_another_error_is_said_as_the_original_one():
    assert failure_cause(beam_wrapped(ValueError("boom"))) == "ValueError: boom"
    assert failure_cause(ValueError("plain")) == "ValueError: plain"


def test_the_lines_of_a_stopped_run():
    assert exit_status_for(signal.SIGINT) == 130 and exit_status_for(signal.SIGTERM) == 143
    assert shards_committed(3, 7, 2) == "3 of 7 input shards committed (2 by this run)"
    assert shards_committed(1, None, None) == "1 shard committed in the output folder"
    stopped = interrupted(signal.SIGTERM, "3 of 7 input shards committed")
    assert stopped.exit_status == 143
    assert (
        str(stopped) == "vesl: interrupted by SIGTERM: 3 of 7 input shards committed; rerun the same command to resume"
    )
    error = failed(beam_wrapped(OSError(30, "Read-only file system", "/o/x")), "0 of 1 input shards committed")
    assert error.exit_status == 1 and str(error).startswith(
        "vesl: error: the run failed: [Errno 30] Read-only file system: '/o/x'; 0 of 1 input shards committed; "
        "fix that and rerun the same command to resume (traceback: "
    )
    kept = str(error).rsplit("(traceback: ", 1)[1].rstrip(")")
    with open(kept) as f:
        assert "Read-only file system" in f.read()
    os.remove(kept)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_raises_keyboard_interrupt_in_the_block_and_is_recorded(signum):
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), stop_on_signals() as received:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # interrupted at once
    assert received == [signum]
    assert signal.getsignal(signum) is before  # the handlers are given back


def test_signals_are_left_alone_when_not_enabled():
    with stop_on_signals(enabled=False) as received:
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or received == []
    assert received == []


def test_the_first_signal_stops_the_child_processes():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in child_processes(os.getpid())
        with pytest.raises(KeyboardInterrupt), stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    stop_child_processes()  # none left: nothing to do


def test_runner_tracebacks_and_worker_start_noise_are_dropped_the_rest_kept():
    keep = RunnerTracebacks()

    def record(name, level, msg, *args, exc_info=None):
        return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)

    boom = (ValueError, ValueError("boom"), None)
    assert not keep.filter(
        record("apache_beam.runners.common", logging.ERROR, "boom [while running 'X']", exc_info=boom)
    )
    assert not keep.filter(
        record("apache_beam.x", logging.CRITICAL, "Worker: %s", "Traceback (most recent call last): ...")
    )
    assert not keep.filter(record("apache_beam.x", logging.WARNING, "Worker: %s", "Discarding unparseable args: [...]"))
    assert keep.filter(record("apache_beam.x", logging.WARNING, "something else"))
    assert keep.filter(record("apache_beam.x", logging.ERROR, "an error without a traceback"))
    assert keep.filter(record("vesl", logging.ERROR, "ours", exc_info=boom))


def test_remove_uncommitted_removes_the_files_of_shards_without_stats_and_nothing_else(tmp_path):
    layout = OutputLayout(str(tmp_path), "", (("parquet", ".parquet"), ("tfrecord", ".tfrecord")))
    files = {
        "stats/a-1.json": "{}",
        "parquet/a-1.parquet": "",
        "tfrecord/a-1.tfrecord": "",
        "rejects/a-1.jsonl": "",
        "parquet/b-2.parquet": "",  # b was never committed
        "tfrecord/b-2.tfrecord": "",
        "rejects/b-2.jsonl": "",
        "parquet/notes.txt": "",  # not a shard file: the user's
        "webdataset/b-2.tar": "",  # not a format of this configuration
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    removed = OutputFolder(str(tmp_path)).remove_uncommitted(layout)
    assert sorted(os.path.relpath(p, tmp_path) for p in removed) == [
        "parquet/b-2.parquet",
        "rejects/b-2.jsonl",
        "tfrecord/b-2.tfrecord",
    ]
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(set(files) - {"parquet/b-2.parquet", "rejects/b-2.jsonl", "tfrecord/b-2.tfrecord"})


def test_the_local_runner_serves_the_direct_and_fn_api_runners_and_its_workers_ignore_sigint(monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability import python_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    options = PipelineOptions([])
    assert isinstance(local_runner("DirectRunner", options), LocalRunner)
    assert isinstance(local_runner("fnapirunner", options), LocalRunner)
    assert local_runner("DataflowRunner", options) is None and local_runner("PrismRunner", options) is None

    monkeypatch.setattr(fn_runner.FnApiRunner, "run_via_runner_api", lambda self, proto, options: proto)
    runner = LocalRunner(options)
    proto = beam_runner_api_pb2.Pipeline()
    proto.components.environments["py"].urn = python_urns.SUBPROCESS_SDK
    proto.components.environments["py"].payload = b"python -m apache_beam.runners.worker.sdk_worker_main"
    command = runner.run_via_runner_api(proto, options).components.environments["py"].payload.decode()
    assert command.startswith("trap '' INT; exec python -m apache_beam.runners.worker.sdk_worker_main")
    assert runner.worker_output() == ""

    # what the command's prefix does: the Python it execs starts with SIGINT ignored, and its stderr is read
    runner = LocalRunner(options)
    proto.components.environments[
        "py"
    ].payload = b"python -c 'import signal, sys; print(signal.getsignal(2) == signal.SIG_IGN, file=sys.stderr)'"
    command = runner.run_via_runner_api(proto, options).components.environments["py"].payload.decode()
    assert command.startswith(IGNORE_SIGINT.decode())
    subprocess.run(["sh", "-c", command.replace("python", sys.executable, 1)], check=True)
    assert runner.worker_output().strip() == "True"
