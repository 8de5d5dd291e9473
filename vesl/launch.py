"""The launcher: from parsed options to a finished (or submitted) job and its summary.

Before any work it checks what it can (options, the machine's detector needs, the input, the output
folder, the checkpoint), takes the output folder's lease (``vesl.io.lease``), plans the resume
(``vesl.resume``; the listing of the input is the driver's or the workers', ``--list_shards``), builds
the pipeline (``vesl.pipeline.build_pipeline``), runs it and waits, showing progress on a terminal.
Every usage error is a ``UsageError`` of one line (the command exits 2).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import sys
import tempfile
import uuid
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import fsspec
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from vesl import resume
from vesl.card import write_dataset_card
from vesl.config import VeslConfig
from vesl.context import RunContext, WorkerSettings
from vesl.io.inputs import InputError, discover_inputs, input_exists, split_patterns
from vesl.io.layout import OutputLayout, shard_output_id
from vesl.io.lease import STALE_AFTER_S, LeaseHeld, LeaseLost, OutputLease, read_lease
from vesl.io.outputs import OutputFolder, committed_ids
from vesl.io.readers import as_input_shard
from vesl.local_runner import LocalRunner, local_runner
from vesl.models.backends import detector_backend
from vesl.models.checkpoint import preflight
from vesl.models.detector import BackendUnavailable
from vesl.options import VeslOptions, check_arguments, config_from_options
from vesl.pipeline import DriverListing, ListOnWorkers, build_pipeline, output_layout
from vesl.progress import ProgressMonitor
from vesl.records import InputShard, KeptShard
from vesl.schema import Provenance
from vesl.stopping import (
    RUNNER_CONTEXT,
    RunStopped,
    exit_status_for,
    failed,
    interrupted,
    quiet_runner_tracebacks,
    shards_committed,
    stop_on_signals,
)
from vesl.threads import cpu_threads_per_process, parse_cpu_threads
from vesl.transforms.write import remove_run_temporary

DEFAULT_LOCAL_RUNNER = "FnApiRunner"
LOCAL_RUNNERS = ("fnapirunner", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner", "prismrunner")
log = logging.getLogger("vesl")


class UsageError(ValueError):
    pass


@dataclass(frozen=True)
class Launch:
    """What the launcher works out from the options, before any work."""

    options: PipelineOptions
    config: VeslConfig
    local: bool  # a local runner (or a test pipeline): the launcher's machine is the workers'
    dry_run: bool  # Beam's --dry_run: build the job and hand it to the runner, which does not submit it
    on_workers: bool  # the job's workers list the input (--list_shards)
    cpu_threads: int | None

    @property
    def vesl(self) -> VeslOptions:
        return self.options.view_as(VeslOptions)

    @property
    def runner(self) -> str:
        return runner_name(self.options)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Parse options, build and run the pipeline, return summary.json's content.

    With Beam's ``--dry_run`` (DataflowRunner), nothing is listed, checked or read: the pipeline is
    built and handed to the runner, which returns the job without submitting it (``vesl.dataflow``
    writes it out); the return value then holds the pipeline and the runner's result."""
    launch = prepare(list(sys.argv[1:] if argv is None else argv), test_pipeline)
    source, weights = list_input(launch)
    provenance = make_provenance(launch.config, weights, launch.dry_run)
    pipeline = test_pipeline or beam.Pipeline(
        runner=local_runner(launch.runner, launch.options), options=launch.options
    )
    if launch.dry_run:
        return execute(launch, pipeline, source, provenance, None)
    return run_under_lease(launch, pipeline, source, provenance)


def prepare(argv: list[str], test_pipeline: beam.Pipeline | None) -> Launch:
    """Options -> a Launch; every usage error found without touching the input or the output."""
    try:
        check_arguments(argv)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = PipelineOptions(argv)
    if options.view_as(StandardOptions).runner is None and test_pipeline is None:
        options.view_as(StandardOptions).runner = DEFAULT_LOCAL_RUNNER
    vesl_options = options.view_as(VeslOptions)
    if not vesl_options.input or not vesl_options.output:
        raise UsageError("--input and --output are required")
    try:
        config = config_from_options(vesl_options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cpu_threads = resolve_cpu_threads(options)  # a bad --cpu_threads fails here, before any work
    runner = runner_name(options)
    local = runner.lower() in LOCAL_RUNNERS or test_pipeline is not None
    if local:
        try:  # what this machine lacks for the detector's settings (a GPU, a decoder): said before any work
            detector_backend(config.detect.backend).check(config.detect)
        except BackendUnavailable as exc:
            raise UsageError(str(exc)) from None
    on_workers = vesl_options.list_shards == "workers" or (vesl_options.list_shards == "auto" and not local)
    dry_run = bool(options.view_as(TestOptions).dry_run)
    return Launch(options, config, local, dry_run, on_workers, cpu_threads)


def runner_name(options: PipelineOptions) -> str:
    """``--runner`` as given (Beam matches names case-insensitively), the default local runner if none."""
    return str(options.view_as(StandardOptions).runner or DEFAULT_LOCAL_RUNNER)


def resolve_cpu_threads(options: PipelineOptions) -> int | None:
    """``--cpu_threads``: the count given, or for ``auto`` the cores each of the runner's processes on a
    machine may use (``vesl.threads``). Raises UsageError for a bad value."""
    try:
        given = parse_cpu_threads(options.view_as(VeslOptions).cpu_threads)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if given is not None:
        return given
    direct = options.view_as(DirectOptions)
    return cpu_threads_per_process(
        runner_name(options),
        direct.direct_running_mode,
        direct.direct_num_workers,
        options.view_as(DebugOptions).experiments,
    )


# -- the input, the output and the checkpoint, before any work ------------------------------------
def list_input(launch: Launch) -> tuple[list[InputShard] | None, str]:
    """The input's shards (None: the job's workers list them) and the detector's weights description,
    after checking the output folder and the checkpoints. A dry run checks nothing (it is offline)."""
    vesl_options, config = launch.vesl, launch.config
    if launch.dry_run:  # the patterns stand for their shards
        if launch.on_workers:
            return None, "not checked (dry run)"
        shards = [as_input_shard(p) or InputShard(p, "unknown") for p in sorted(split_patterns(vesl_options.input))]
        return shards, "not checked (dry run)"
    if launch.on_workers:
        patterns = split_patterns(vesl_options.input)
        check_patterns_exist(patterns)
        shards = None
        described = f"{len(patterns)} pattern(s), listed by the job's workers"
    else:
        shards = expand_inputs(vesl_options.input, vesl_options.output)
        described = describe_inputs(shards)
    check_output(vesl_options.output)
    print(f"vesl: input: {described}", file=sys.stderr)
    return shards, detector_backend(config.detect.backend).weights(config.detect)


def make_provenance(config: VeslConfig, weights: str, dry_run: bool) -> Provenance:
    captioner = config.caption.describe()
    if config.caption.enabled and not dry_run:
        captioner += f"; {preflight(config.caption.checkpoint, model_type=None, what='captioning')}"
    return Provenance.for_run(
        config.preset, config.detect.checkpoint, config.detect.image_size, weights, config.digest(), captioner
    )


def expand_inputs(patterns: list[str], output: str | None = None) -> list[InputShard]:
    """Patterns (globs, folders, files; local or remote) -> the shards VESL reads, each with its
    format and img2dataset sidecars (``vesl.io.inputs``); the run's own output is never input."""
    try:
        discovery = discover_inputs(patterns, output)
    except (InputError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    for note in discovery.notes:
        log.info("input: %s", note)
    return discovery.shards


def describe_inputs(shards: list[InputShard]) -> str:
    """``3 shards: webdataset 3 (img2dataset: metadata + stats)``, for the one line said before work."""
    formats = Counter(shard.format for shard in shards)
    sidecars = sum(1 for shard in shards if shard.metadata or shard.stats)
    text = f"{len(shards)} shard{'s' * (len(shards) != 1)}: " + ", ".join(
        f"{f} {n}" for f, n in sorted(formats.items())
    )
    if sidecars:
        text += f" ({sidecars} with img2dataset's metadata/stats, checked against what is read)"
    return text


def check_patterns_exist(patterns: list[str]) -> None:
    """Before a worker-side listing: a pattern without a wildcard must name something (one call each;
    globs are matched by the job)."""
    for pattern in patterns:
        fs, path = fsspec.core.url_to_fs(pattern)
        if not any(c in path for c in "*?[") and not fs.exists(path):
            raise UsageError(f"no input matches {pattern!r}")


def check_output(output: str) -> None:
    """``--output`` must be a folder VESL can write: checked by writing (and removing) a probe file,
    before any work, so a run never fails on its output after the expensive stages."""
    try:
        fs, root = fsspec.core.url_to_fs(output)
        if fs.exists(root) and not fs.isdir(root):
            raise UsageError(f"--output {output!r} is a file, not a folder")
        probe = f"{root.rstrip('/')}/.vesl-write-probe-{uuid.uuid4().hex[:12]}"
        fs.makedirs(root, exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"--output {output!r} is not writable ({type(exc).__name__}: {exc})") from None


_WORKER_USAGE = re.compile(r"\b(?:InputError|ConfigConflict): (.+)")


def worker_usage_error(exc: BaseException) -> str | None:
    """The message of a usage error raised in the job (an input pattern that gives nothing, a committed shard
    of another configuration): the exception itself on a local runner, its text in the runner's error on a
    remote one; None for any other failure."""
    if isinstance(exc, (InputError, resume.ConfigConflict)):
        return RUNNER_CONTEXT.sub("", str(exc).strip())
    match = _WORKER_USAGE.search(str(exc))
    return RUNNER_CONTEXT.sub("", match[1].strip()) if match else None


# -- the resume plan, under the lease -------------------------------------------------------------
def accepted_digests(config: VeslConfig) -> tuple[str, ...]:
    """This configuration's digest, then what earlier VESL versions called it (folders they wrote resume)."""
    return (config.digest(), *sorted(config.earlier_digests()))


def folder_digests(layout: OutputLayout, shard_ids: set[str]) -> dict[str, str]:
    """Config digest -> one committed shard made with it. From ``_config.json`` when the folder has
    one; a folder written before VESL kept it is judged by every stats file (read once)."""
    if not shard_ids:
        return {}
    try:
        with fsspec.open(layout.folder_config_path, "r") as f:
            return {json.load(f)["config_digest"]: layout.folder_config_path}
    except FileNotFoundError:
        pass
    fs, _ = fsspec.core.url_to_fs(layout.root)
    paths = [fsspec.core.url_to_fs(layout.path("stats", shard_id))[1] for shard_id in sorted(shard_ids)]
    digests: dict[str, str] = {}
    for path, blob in fs.cat(paths).items():
        digests.setdefault(json.loads(blob).get("provenance", {}).get("config_digest"), path)
    return digests


def plan_on_driver(
    shards: list[InputShard], layout: OutputLayout, config: VeslConfig, overwrite: bool
) -> DriverListing:
    """Decide what to do (``vesl.resume``), apply it to the folder, and return the shards to process with
    the counts of the committed shards kept. One folder holds shards of one configuration: a run with
    another one is refused (with ``--overwrite`` only when every committed shard of the folder is one this
    run redoes); ``--overwrite`` uncommits this input's shards first, so a run that dies midway leaves no
    shard of the old configuration behind a new ``_config.json``."""
    existing, mine = committed_ids(layout), accepted_digests(config)
    ids = {shard_output_id(shard.path): shard for shard in shards}
    decision = resume.plan(ids, existing, overwrite)
    others = resume.foreign(folder_digests(layout, existing), mine)
    if others and (not overwrite or decision.outside):
        digest, where = next(iter(others.items()))
        remedy = (
            f"{len(decision.outside)} of them are not in this run's input, so --overwrite cannot redo them; "
            "write elsewhere"
            if overwrite
            else resume.REDO
        )
        raise resume.another_configuration(layout.root, digest, mine[0], where, remedy, len(existing))
    kept = read_committed(layout, decision.keep.values(), mine)
    changed = [i for i, c in decision.keep.items() if resume.changed(kept[c].get("input_identity"), ids[i].identity)]
    if changed:
        say_shards("redone: the input changed since commit", [ids[i].path for i in changed])
        decision = resume.redo(decision, changed)
    gone = inputs_gone(read_committed(layout, decision.outside, mine))
    if gone:
        say_shards(
            "kept though the input is gone (summary.json: input_shards_gone)", [s["input"] for s in gone.values()]
        )
    uncommit(layout, decision, ids)
    record_folder_config(layout, config)
    committed = [KeptShard(c, kept[c]["counts"]) for c in decision.keep.values()]
    committed += [KeptShard(c, stats["counts"], input_gone=True) for c, stats in gone.items()]
    return DriverListing(
        tuple(ids[i] for i in decision.process), tuple(sorted(committed, key=lambda shard: shard.shard_id))
    )


def say_shards(what: str, paths: list[str]) -> None:
    """One line about some committed shards, naming the first few."""
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    one = len(paths) == 1
    log.warning(
        "%d committed shard%s %s %s: %s%s",
        len(paths),
        "" if one else "s",
        "is" if one else "are",
        what,
        ", ".join(paths[:3]),
        more,
    )


def uncommit(layout: OutputLayout, decision: resume.ResumePlan, ids: dict[str, InputShard]) -> None:
    """``--overwrite``, or an input that changed: a shard redone under its own id loses its stats file (its
    files are rewritten); one committed under VESL 0.1's name loses its files too (the rerun writes them
    under the new name)."""
    fs, _ = fsspec.core.url_to_fs(layout.root)
    same = [fsspec.core.url_to_fs(layout.path("stats", i))[1] for i in decision.uncommit if i in ids]
    if same:
        fs.rm(same)
    for renamed in (i for i in decision.uncommit if i not in ids):
        OutputFolder(layout.root).uncommit(renamed)


def read_committed(layout: OutputLayout, shard_ids, mine: tuple[str, ...]) -> dict[str, dict]:
    """The stats of committed shards (by shard id), each checked to be of this configuration."""
    ids = sorted(shard_ids)
    if not ids:
        return {}
    fs, _ = fsspec.core.url_to_fs(layout.root)
    committed = {}
    for path, blob in fs.cat([fsspec.core.url_to_fs(layout.path("stats", i))[1] for i in ids]).items():
        stats = json.loads(blob)
        digest = stats.get("provenance", {}).get("config_digest")
        if digest not in mine:
            raise resume.another_configuration(layout.root, digest, mine[0], path, resume.REDO)
        committed[stats["shard_id"]] = stats
    return committed


def inputs_gone(committed: dict[str, dict]) -> dict[str, dict]:
    """The committed shards (of no input of this run) whose input no longer exists; those whose input is
    still there belong to another input set written into the same folder, and are left alone."""
    return {shard_id: stats for shard_id, stats in committed.items() if not input_exists(stats.get("input"))}


def record_folder_config(layout: OutputLayout, config: VeslConfig) -> None:
    """``_config.json`` (the folder's configuration, checked by the next run without reading any stats file)
    and the dataset card."""
    with fsspec.open(layout.folder_config_path, "w") as f:
        json.dump({"config_digest": config.digest(), "config": config.to_dict()}, f, indent=2, sort_keys=True)
    write_dataset_card(layout, config)


def plan_on_workers(patterns: list[str], layout: OutputLayout, config: VeslConfig, overwrite: bool) -> ListOnWorkers:
    """The launcher's part of a worker-side listing: the folder must hold this configuration's shards
    only (``_config.json``, one small read; the stats folder is listed only when it names another
    configuration, or for a folder written before VESL kept it). Which shards are committed is decided
    in the job (``vesl.transforms.listing.PlanShards``)."""
    mine = accepted_digests(config)
    try:
        with fsspec.open(layout.folder_config_path, "r") as f:
            recorded = json.load(f)["config_digest"]
    except FileNotFoundError:
        recorded = None
    if recorded not in mine:
        existing = committed_ids(layout)
        others = resume.foreign(folder_digests(layout, existing), mine)
        if others:
            digest, where = next(iter(others.items()))
            raise resume.another_configuration(
                layout.root, digest, mine[0], where, resume.REDO_ON_WORKERS, len(existing)
            )
    record_folder_config(layout, config)
    return ListOnWorkers(tuple(patterns), overwrite, mine)


# -- running ------------------------------------------------------------------------------------
def run_under_lease(launch: Launch, pipeline: beam.Pipeline, source, provenance: Provenance) -> dict[str, Any]:
    """Take the output folder's lease, run, clean up and give it back (a submitted job keeps it until its
    last step). A local run stopped by SIGINT or SIGTERM, or a run that fails, is said in one line
    (``vesl.stopping.RunStopped``: what stays committed, what could not be cleaned up)."""
    lease = take_lease(launch)
    layout = output_layout(launch.config, launch.vesl.output, lease.held.run_id)
    summary, stopped, before, planned = None, None, None, []
    with stop_on_signals(launch.local) as received, quiet_runner_tracebacks():
        try:
            if launch.local and source is None:  # the workers plan: what was committed before, for a stop's line
                before = committed_ids(layout)
            clear_temporary(layout)  # the folder is ours: leftovers are dead runs'
            if lease.taken_over:
                OutputFolder(layout.root).remove_uncommitted(layout)
            with lease.heartbeat():
                summary = execute_reporting(launch, pipeline, source, provenance, lease, planned)
        except (Exception, KeyboardInterrupt) as exc:  # KeyboardInterrupt: a signal outside the runner
            stopped = exc
        if summary is not None and summary.get("submitted"):
            hand_over(lease, summary)
            return summary
        if isinstance(stopped, KeyboardInterrupt) and not launch.local:  # the job may run on: touch nothing
            raise RunStopped(stopped_waiting(launch.vesl.output), exit_status_for(signal.SIGINT)) from None
        run_failed = stopped is not None and not isinstance(stopped, (UsageError, LeaseLost))
        # a run that lost its lease leaves the folder alone: its uncommitted files may be the new holder's
        left = clean_up(lease, layout, run_failed and not lease.lost)
        workers = pipeline.runner.worker_output() if isinstance(pipeline.runner, LocalRunner) else ""
        if planned and isinstance(planned[0], DriverListing):  # kept by the plan: committed before this run
            before = {shard.shard_id for shard in planned[0].committed}
        if stopped is not None and (received or run_failed):
            raise stop_line(stopped, received, layout, source, before, left, workers) from None
        if stopped is not None:
            raise stopped
    if lease.lost:
        raise LeaseLost(f"{launch.vesl.output!r}: {lease.lost} while this run was working; check its shards")
    return summary


def stopped_waiting(output: str) -> str:
    return (
        "vesl: stopped waiting for the job (Ctrl-C); it may still be running and writing "
        f"{output!r}: cancel it on the runner, or rerun the same command once it ended (its lease goes "
        f"stale {STALE_AFTER_S / 60:g} minutes after this launcher stopped renewing it)"
    )


def take_lease(launch: Launch) -> OutputLease:
    lease = OutputLease(launch.vesl.output)
    try:
        lease.acquire(launch.config.digest(), take_over=launch.vesl.take_over_lease)
    except LeaseHeld as exc:
        raise UsageError(str(exc)) from None
    return lease


def hand_over(lease: OutputLease, summary: dict[str, Any]) -> None:
    """A submitted job holds the lease now; its last step gives it back."""
    if not lease.mark_submitted(summary.get("job_id")) and read_lease(lease.output) is None:
        lease.lost = None  # the job has finished already (a local runner) and released it


def clean_up(lease: OutputLease, layout: OutputLayout, stopped: bool) -> list[str]:
    """Remove the run's temporary files (and, for a run that stopped, the files of the shards it did not
    commit: no reader of the folder should find them), then give the lease back. What a fault keeps from
    being done (a read-only disk) is left to the rerun, which takes the lease over and clears it; returned
    for the stop line."""
    left = []
    steps = [("temporary files", lambda: remove_run_temporary(layout))]
    if stopped:
        steps.append(("files of uncommitted shards", lambda: OutputFolder(layout.root).remove_uncommitted(layout)))
    steps.append(("the lease", lease.release))
    for what, step in steps:
        try:
            step()
        except OSError as exc:
            left.append(f"{what} ({exc.strerror or type(exc).__name__})")
    return left


def stop_line(exc: BaseException, received: list[int], layout: OutputLayout, shards, before, left, workers: str):
    """The RunStopped of a run a signal stopped or that failed: how many shards stay committed, and what
    is left for the rerun to clear."""
    try:
        now = committed_ids(layout)
        if shards is not None:
            mine = set(resume.match([shard_output_id(s.path) for s in shards], now).values())
            state = shards_committed(len(mine), len(shards), None if before is None else len(mine - before))
        else:
            state = shards_committed(len(now), None, None if before is None else len(now - before))
    except Exception as listing_error:  # the output cannot be listed now (the fault itself, maybe)
        state = f"the committed shards could not be listed ({type(listing_error).__name__})"
    if left:
        state += "; not removed, the rerun will: " + ", ".join(left)
    return interrupted(received[0], state) if received else failed(exc, state, workers)


def execute_reporting(
    launch: Launch, pipeline, source, provenance, lease: OutputLease, planned: list | None = None
) -> dict[str, Any]:
    """``execute``, with the job's own usage errors and a lost lease said in one line."""
    try:
        return execute(launch, pipeline, source, provenance, lease, planned)
    except resume.ConfigConflict as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        if LeaseLost.__name__ in str(exc):  # a worker's commit fence stopped the run
            lease.lost = lease.lost or "the lease was taken over by another run"
            raise LeaseLost(f"{launch.vesl.output!r}: {lease.lost}; this run stopped committing") from None
        if usage := worker_usage_error(exc):  # the workers' listing or plan refused the input
            raise UsageError(usage) from None
        raise


def clear_temporary(layout: OutputLayout) -> None:
    fs, _ = fsspec.core.url_to_fs(layout.root)
    if fs.exists(layout.temp_parent):
        fs.rm(layout.temp_parent, recursive=True)


def execute(
    launch: Launch, pipeline, shards: list[InputShard] | None, provenance, lease, planned: list | None = None
) -> dict[str, Any]:
    """Plan (under ``lease``), build, run and wait; None for ``lease`` means a dry run, None for ``shards``
    a listing by the workers. ``planned`` (a list) receives the plan as soon as it is made and applied."""
    vesl_options, config = launch.vesl, launch.config
    run_id = lease.held.run_id if lease is not None and lease.held else ""
    layout = output_layout(config, vesl_options.output, run_id)
    source = plan_source(launch, layout, shards)
    if planned is not None:
        planned.append(source)
    show_progress = launch.local and not launch.dry_run and vesl_options.wait and wants_progress(vesl_options.progress)
    progress_dir = tempfile.mkdtemp(prefix="vesl-progress-") if show_progress else None
    run = RunContext(
        layout,
        provenance,
        WorkerSettings(launch.cpu_threads, progress_dir),
        detect_accelerator=vesl_options.detect_accelerator,
        release_lease=not vesl_options.wait,
    )
    build_pipeline(pipeline, config, source, run)
    shards_total = len(source.shards) if isinstance(source, DriverListing) else None  # None: the workers count
    monitor = ProgressMonitor(progress_dir, shards_total) if progress_dir else nullcontext()
    try:
        with monitor:
            result = pipeline.run()
            if launch.dry_run:
                return {
                    "dry_run": True,
                    "pipeline": pipeline,
                    "result": result,
                    "options": launch.options,
                    "config": config,
                }
            if not vesl_options.wait:
                job_id = result.job_id() if hasattr(result, "job_id") else None
                return {"submitted": True, "job_id": job_id, "output": vesl_options.output}
            result.wait_until_finish()
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
    with fsspec.open(layout.summary_path, "r") as f:
        return json.load(f)


def plan_source(launch: Launch, layout: OutputLayout, shards: list[InputShard] | None):
    """The pipeline's input: the shards to process (with the committed ones kept), or ListOnWorkers."""
    overwrite = launch.vesl.overwrite
    if shards is None:
        patterns = split_patterns(launch.vesl.input)
        if launch.dry_run:
            return ListOnWorkers(tuple(patterns), overwrite, accepted_digests(launch.config))
        return plan_on_workers(patterns, layout, launch.config, overwrite)
    if launch.dry_run:
        return DriverListing(tuple(shards))
    listing = plan_on_driver(shards, layout, launch.config, overwrite)
    kept = sum(not shard.input_gone for shard in listing.committed)
    if kept:
        log.warning(
            "resuming: %d of %d shards already committed in %s are kept (--overwrite redoes them)",
            kept,
            len(shards),
            launch.vesl.output,
        )
    return listing


def wants_progress(setting: str) -> bool:
    """``auto``: when stderr is a terminal."""
    return sys.stderr.isatty() if setting == "auto" else setting == "true"
