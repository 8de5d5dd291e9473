"""How a run that does not finish ends: stopped by a signal (Ctrl-C, SIGTERM) or failed, said in one line.

A local run does its work in the launcher's process (FnApiRunner) or in worker processes the runner
started (the DirectRunner's ``multi_processing``). While it runs, ``stop_on_signals`` turns the first
SIGINT or SIGTERM into a KeyboardInterrupt in the main thread: the runner unwinds (it stops its worker
processes on the way out), the launcher then removes the run's temporary and uncommitted files and gives
the output lease back, and the command exits 128 + the signal's number (130, 143) with one line. A second
signal while that cleanup runs stops the process at once (the next run takes the lease over and clears
what is left). Beam wraps whatever a step raised, KeyboardInterrupt included, in its own RuntimeError;
the signal is known from what ``stop_on_signals`` recorded, not from the exception.

A failed run is said in one line too (``failure_cause``: the innermost error, with the path of a failed
write), and its whole traceback is kept in a file the line names.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RESUME = "rerun the same command to resume"


class RunStopped(Exception):
    """A run that ended before it finished; ``str(self)`` is the one line said, ``exit_status`` the
    command's."""

    def __init__(self, line: str, exit_status: int):
        super().__init__(line)
        self.exit_status = exit_status


@contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[list[int]]:
    """While the block runs, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread; the yielded list
    holds the signals received (the first decides the exit status). Not in effect outside the main thread
    (Python delivers signals there only) or when not ``enabled``."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, frame) -> None:
        if received:  # a second signal: the user wants out now
            name = signal.Signals(signum).name
            print(f"vesl: {name} again: stopped at once; {RESUME}", file=sys.stderr, flush=True)
            os._exit(exit_status_for(received[0]))
        received.append(signum)
        stop_child_processes()  # a runner's workers: none may commit once the launcher cleans up
        raise KeyboardInterrupt

    def quiet_threads(args) -> None:  # the runner's threads fail as its workers go: no news after a signal
        if not received:
            excepthook(args)

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    excepthook, threading.excepthook = threading.excepthook, quiet_threads
    try:
        yield received
    finally:
        threading.excepthook = excepthook
        for s, handler in previous.items():
            signal.signal(s, handler)


class RunnerTracebacks(logging.Filter):
    """Drops what a local runner logs that is no news to the user: the tracebacks of the failing step (Beam
    logs the error, with its stack, before it raises it; a worker process relays its own), since a stopped
    or failed run is said in one line with its traceback kept in a file; and two warnings every
    ``multi_processing`` worker logs at start about options it does not know (VESL's)."""

    NOISE = ("No semi_persistent_directory found", "Discarding unparseable args")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam"):
            return True
        message = record.getMessage()  # a worker's record arrives as "Worker: %s" with the entry as argument
        if record.levelno >= logging.ERROR and (record.exc_info or "Traceback (most recent call last)" in message):
            return False
        return not (record.levelno == logging.WARNING and any(n in message for n in self.NOISE))


@contextmanager
def quiet_runner_tracebacks() -> Iterator[None]:
    """``RunnerTracebacks`` on every handler that could print them while the block runs."""
    quiet = RunnerTracebacks()
    handlers = [*logging.getLogger().handlers, *([logging.lastResort] if logging.lastResort else [])]
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def child_processes(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from /proc on Linux, ``pgrep -P`` elsewhere)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = direct_children(parent)
        found += children
        todo += children
    return found


def direct_children(pid: int) -> list[int]:
    if os.path.isdir("/proc"):
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                except OSError:  # gone meanwhile
                    continue
                if int(fields[1]) == pid:
                    children.append(int(entry))
        return children
    try:
        listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(p) for p in listed.split()]


def stop_child_processes() -> None:
    """Kill the processes this one started: a local runner's workers (DirectRunner ``multi_processing``)
    end without a word and commit nothing more."""
    for pid in child_processes(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def exit_status_for(signum: int) -> int:
    """A shell's status for a command a signal stopped: 128 + its number (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signum)


def interrupted(signum: int, committed: str) -> RunStopped:
    """The one line of a run a signal stopped; ``committed`` says what stays (``shards_committed``)."""
    name = signal.Signals(signum).name
    return RunStopped(f"vesl: interrupted by {name}: {committed}; {RESUME}", exit_status_for(signum))


def failed(exc: BaseException, committed: str, worker_output: str = "") -> RunStopped:
    """The one line of a run that failed: its cause, what stays, and the file with the whole traceback
    (and what the runner's worker processes printed)."""
    details = keep_traceback(exc, worker_output)
    where = f" (traceback: {details})" if details else ""
    return RunStopped(
        f"vesl: error: the run failed: {failure_cause(exc)}; {committed}; fix that and {RESUME}{where}", 1
    )


def shards_committed(committed: int, total: int | None, by_this_run: int | None) -> str:
    """``3 of 7 input shards committed (2 by this run)``; without a total (the job's workers listed the
    input): ``3 shards committed in the output folder``."""
    text = (
        f"{committed} of {total} input shards committed"
        if total is not None
        else (f"{committed} shard{'s' * (committed != 1)} committed in the output folder")
    )
    return text + (f" ({by_this_run} by this run)" if by_this_run is not None else "")


_ERRNO = re.compile(r"\[Errno \d+\] [^\n]*")
RUNNER_CONTEXT = re.compile(r"(?: \[while running '[^']*'\])+")
# Beam's FileSystems.rename says which move failed as {('source', 'target'): OSError(PermissionError(13, '...'))}.
_BEAM_RENAME = re.compile(r"\('([^']*)', '([^']*)'\): \w+\(\w+\((\d+), '([^']*)'\)\)")
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)\w*): (.+)$", re.M)


def failure_cause(exc: BaseException) -> str:
    """The innermost error of a failed run, in one line: a system error with its path
    (``[Errno 28] No space left on device: '/out/_temporary/.../part-00001'``) when there is one, else the
    last error message in the (possibly chained, possibly remote) traceback. Beam's step context
    (``[while running 'Step']``) is cut; the step is in the traceback file."""
    text = "".join(traceback.format_exception(exc))
    system = [RUNNER_CONTEXT.sub("", m).strip() for m in _ERRNO.findall(text)]
    system += [f"[Errno {n}] {message}: '{target}'" for _, target, n, message in _BEAM_RENAME.findall(text)]
    with_path = [s for s in system if re.search(r": '[^']+'$", s)]
    if with_path or system:
        return (with_path or system)[-1]
    errors = _ERROR_LINE.findall(text)
    if errors:
        name, message = errors[0] if len(errors) == 1 else innermost(errors)
        return f"{name}: {RUNNER_CONTEXT.sub('', message).strip()}"
    return f"{type(exc).__name__}: {RUNNER_CONTEXT.sub('', str(exc)).strip()}"


def innermost(errors: list[tuple[str, str]]) -> tuple[str, str]:
    """Of the error lines of a traceback, the one the others wrap: Beam repeats the original as the start
    of its own message (``RuntimeError: ValueError: boom [while running ...]``), so the original is the one
    that is not itself a wrapper (its message does not start with another error's name)."""
    plain = [(n, m) for n, m in errors if not _ERROR_LINE.match(m)]
    return (plain or errors)[-1]


def keep_traceback(exc: BaseException, worker_output: str = "") -> str | None:
    """Write the whole traceback to a file in the temporary folder (not the output: it may be what failed)."""
    try:
        fd, path = tempfile.mkstemp(prefix="vesl-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(exc)))
            if worker_output:
                f.write("\n\nThe worker processes' standard error:\n" + worker_output)
        return path
    except OSError:
        return None
