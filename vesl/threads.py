"""How many CPU threads each worker process's PyTorch may use.

PyTorch sizes its intra-op pool to the machine's cores in every process. A runner that puts several
SDK processes on one machine then runs cores x processes compute threads, and OpenMP's waiting
threads spin: on this 2-vCPU VM, Beam's DirectRunner with two worker processes
(``--direct_running_mode multi_processing``) spent 27.4 CPU-ms an image against 5.0 with one thread
per process, and took 3x the wall time (docs/benchmarks.md, "Local parallelism"). So the launcher
gives each process its share of the cores (``--cpu_threads auto``), and the model stages apply it
when they load their model on the worker. It changes no output, so it is not part of the
configuration's digest.
"""

from __future__ import annotations

import os


def cpu_threads_per_process(
    runner: str,
    running_mode: str | None = None,
    direct_num_workers: int | None = None,
    experiments: list[str] | None = None,
    cpu_count: int | None = None,
) -> int | None:
    """The intra-op threads for each SDK process of a run (``--cpu_threads auto``); None: PyTorch's default
    (one process owns the machine's cores).

    - DirectRunner in ``multi_processing`` or ``multi_threading`` mode with N workers: cores // N, at
      least 1 (N = 0 means one worker per core, as Beam reads it); in its ``in_memory`` mode, and the
      FnApiRunner, one process and thread: the default.
    - DataflowRunner: the Python SDK starts one process per vCPU on a worker, so 1, unless the job runs
      one SDK process (``--experiments no_use_multiple_sdk_containers``): the default.
    - Any other runner: the default."""
    cores = cpu_count or os.cpu_count() or 1
    name = runner.lower().rsplit(".", 1)[-1]
    if name in ("directrunner", "direct", "portabledirectrunner") and running_mode in (
        "multi_processing",
        "multi_threading",
    ):
        workers = direct_num_workers if direct_num_workers and direct_num_workers > 0 else cores
        return max(1, cores // workers)
    if name in ("dataflowrunner", "dataflow"):
        return None if "no_use_multiple_sdk_containers" in (experiments or []) else 1
    return None


def parse_cpu_threads(value: str | int | None) -> int | None:
    """``--cpu_threads``: ``auto`` (None here: the launcher decides) or a positive thread count."""
    if value is None or str(value).strip().lower() == "auto":
        return None
    threads = int(value)
    if threads < 1:
        raise ValueError(f"--cpu_threads must be auto or a count >= 1, got {value!r}")
    return threads


def apply_cpu_threads(threads: int | None) -> None:
    """On the worker, in the thread about to run a model: hold PyTorch's intra-op pool to ``threads``
    (None: leave it). Called before every batch, not once at load: with OpenMP the count is a per-thread
    setting, and Beam's SDK harness loads a model in one thread and runs bundles in others."""
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
