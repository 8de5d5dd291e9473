"""Run a command and write its exit status, peak resident memory, CPU seconds (user + system, and each),
page faults and involuntary context switches to a JSON file:

    python -m bench.peak_rss OUT.json COMMAND [ARGS...]

Why a wrapper: on Linux a process's ru_maxrss keeps the high-water mark of the process it was
forked from (it survives exec), so a run started straight from a large parent (pytest with torch
loaded) would report the parent's memory. This small process forks the command itself, so the
figure is the command's own.
"""

from __future__ import annotations

import json
import os
import sys


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
