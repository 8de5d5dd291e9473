"""Ctrl-C and SIGTERM on a local run, with real signals on a real ``python -m pipelines.vesl`` started as
a terminal starts it, on both local runners (in-process FnApiRunner; DirectRunner with worker processes):
the run stops within seconds with one line, exits 130 / 143, gives the lease back, leaves nothing but
committed shards and VESL's own files, and the same command run again ends equal to a clean run."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bench.faults import group_gone, ignored_signals, start_like_a_terminal, uncommitted_leftovers, wait_for_a_commit
from pipelines.vesl import run
from tests.runs import argv, local_runner_args, snapshot, vesl_command

pytestmark = pytest.mark.slow

# Ctrl-C signals the terminal's whole foreground process group; a scheduler or `docker stop` signals the
# main process alone.
CASES = [("in-process", "SIGINT", "group"), ("in-process", "SIGTERM", "process")]
CASES += [("worker processes", "SIGINT", "group"), ("worker processes", "SIGTERM", "process")]


@pytest.mark.parametrize(("runner", "signal_name", "target"), CASES)
def test_a_signal_stops_the_run_in_one_line_and_the_rerun_resumes(
    inputs, tiny_checkpoint, clean, runner, signal_name, target
):
    out = inputs.parent / f"stopped-{runner.replace(' ', '-')}-{signal_name}"
    env = {**os.environ, "VESL_TEST_COMMIT_DELAY_S": "1.5"}  # shards commit one by one, slowly
    process = start_like_a_terminal(vesl_command(*argv(inputs, out, tiny_checkpoint, *local_runner_args(runner))), env)
    try:
        wait_for_a_commit(process, out)
        assert not {signal.SIGINT, signal.SIGTERM} & ignored_signals(process.pid)  # the run can hear them
        sent = time.monotonic()
        signum = getattr(signal, signal_name)
        os.killpg(process.pid, signum) if target == "group" else os.kill(process.pid, signum)
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    said = [line for line in stderr.splitlines() if not line.startswith("vesl: input:")]
    assert process.returncode == 128 + signum, stderr
    assert len(said) == 1 and "Traceback" not in stderr, stderr
    assert said[0].startswith(f"vesl: interrupted by {signal_name}: ") and " of 7 input shards committed" in said[0]
    assert said[0].endswith("rerun the same command to resume")
    print(f"{runner}, {signal_name} to the {target}: stopped {took:.1f} s after the signal: {said[0]}")
    time.sleep(0.5)
    assert group_gone(process.pid), "a worker process outlived the run"
    assert not (out / "_lease.json").exists() and not (out / "_temporary").exists()
    assert uncommitted_leftovers(out) == []
    committed = len(list((out / "stats").glob("*.json")))
    assert f"{committed} of 7 input shards committed ({committed} by this run)" in said[0]

    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))  # the same command, again
    assert snapshot(out) == clean
    assert uncommitted_leftovers(out) == []


def test_a_stopped_overwrite_run_counts_the_shards_it_committed_again_as_its_own(inputs, tiny_checkpoint, clean):
    """--overwrite uncommits the folder's shards first and commits them again: those are this run's, though
    their ids were committed before it started."""
    out = inputs.parent / "stopped-overwrite"
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))  # all 7 committed
    env = {**os.environ, "VESL_TEST_COMMIT_DELAY_S": "1.5"}
    command = vesl_command(*argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner", "--overwrite", "true"))
    process = start_like_a_terminal(command, env)
    try:
        deadline = time.monotonic() + 240
        while list((out / "stats").glob("*.json")) and time.monotonic() < deadline:  # the plan uncommits
            time.sleep(0.05)
        wait_for_a_commit(process, out)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    said = [line for line in stderr.splitlines() if line.startswith("vesl: interrupted")]
    committed = len(list((out / "stats").glob("*.json")))
    assert len(said) == 1 and f"{committed} of 7 input shards committed ({committed} by this run)" in said[0], stderr
