"""What a run is besides its configuration, handed to ``build_pipeline`` and from there to the stages:
where it writes, what it records, and the settings of its workers. Frozen and small: the stages that
need it are pickled with it to the workers."""

from __future__ import annotations

from dataclasses import dataclass, field

from vesl.io.layout import OutputLayout
from vesl.schema import Provenance


@dataclass(frozen=True)
class WorkerSettings:
    """``cpu_threads``: the framework's intra-op threads in each worker process (``vesl.threads``; None:
    its default). ``progress_dir``: a local folder where workers leave progress counts
    (``vesl.progress``; None: Beam's counters only)."""

    cpu_threads: int | None = None
    progress_dir: str | None = None


@dataclass(frozen=True)
class RunContext:
    """``layout``: the output folder, its file names and this run's id (``layout.run_id``: the output lease
    it holds, ``vesl.io.lease``; it names the run's temporary folder, and every shard commit first checks
    that the lease still names it). ``detect_accelerator``: a Beam accelerator resource hint for the
    detection stage alone. ``release_lease``: the job's last step gives the lease back (a job submitted
    without a waiting launcher)."""

    layout: OutputLayout
    provenance: Provenance
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    detect_accelerator: str | None = None
    release_lease: bool = False
