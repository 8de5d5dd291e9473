"""Run a command and write its exit status, peak resident memory, CPU seconds (user + system, and each),
page faults and involuntary context switches to a JSON file:

    python -m bench.peak_rss OUT.json COMMAND [ARGS...]

Why a wrapper: on Linux a process's ru_maxrss keeps the high-water mark of the process it was
forked from (it survives exec), so a run started straight from a large parent (pytest with torch
loaded) would report the parent's memory. This small process forks the command itself, so the
figure is the command's own. ``PeakRss`` samples the current process instead, for parts of one run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path


class PeakRss:
    """The process's peak resident memory while the block runs (sampled every 5 ms from /proc), so two
    backends measured in one process each get their own peak."""

    def __enter__(self):
        self.peak = self.current()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def current() -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return 0

    def _watch(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.current())

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def mb(self) -> float:
        return round(self.peak / 2**20, 1)


def main() -> int:
    out, command = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        json.dump(
            {
                "exit": code,
                "peak_rss_mb": round(usage.ru_maxrss / 1024),
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "user_s": usage.ru_utime,
                "system_s": usage.ru_stime,
                "minor_faults": usage.ru_minflt,
                "major_faults": usage.ru_majflt,
                "involuntary_switches": usage.ru_nivcsw,
            },
            f,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
