"""VESL's command line: run the pipeline on any Beam runner.

    python -m pipelines.vesl --input 'gs://bucket/shards/*.tar' --output gs://bucket/out
        [--preset cloc|owlst|grit] [VESL options] [Beam options, e.g. --runner DataflowRunner ...]

Without --runner, Beam's FnApiRunner (the DirectRunner's engine) runs it locally; Beam 2.77's
plain DirectRunner first tries to download the Prism runner binary.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import tempfile
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

from vesl.config import VeslConfig
from vesl.io.inputs import InputError, discover_inputs, split_patterns
from vesl.io.layout import OutputLayout, shard_output_id
from vesl.io.lease import LeaseHeld, LeaseLost, OutputLease, read_lease
from vesl.io.readers import as_input_shard
from vesl.models.backends import detector_backend
from vesl.models.checkpoint import CheckpointError, preflight
from vesl.models.detector import BackendUnavailable
from vesl.options import VeslOptions, config_from_options
from vesl.pipeline import ListOnWorkers, build_pipeline, output_layout
from vesl.progress import ProgressMonitor
from vesl.records import InputShard
from vesl.schema import Provenance
from vesl.threads import cpu_threads_per_process, parse_cpu_threads
from vesl.transforms.write import remove_run_temporary

DEFAULT_LOCAL_RUNNER = "FnApiRunner"
LOCAL_RUNNERS = ("fnapirunner", "directrunner", "bundlebaseddirectrunner", "switchingdirectrunner", "prismrunner")


class UsageError(ValueError):
    pass


def expand_inputs(patterns: list[str], output: str | None = None) -> list[InputShard]:
    """Patterns (globs, folders, files; local or remote) -> the shards VESL reads, each with its
    format and img2dataset sidecars (``vesl.io.inputs``); the run's own output is never input."""
    try:
        discovery = discover_inputs(patterns, output)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    for note in discovery.notes:
        logging.getLogger("vesl").info("input: %s", note)
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


_WORKER_USAGE = re.compile(r"\b(?:InputError|CommittedConflict): (.+)")
_RUNNER_CONTEXT = re.compile(r" \[while running '[^']*'\]$")


def worker_usage_error(exc: BaseException) -> str | None:
    """The message of a usage error raised in the job (an input pattern that gives nothing, a committed shard
    of another configuration): the exception itself on a local runner, its text in the runner's error on a
    remote one; None for any other failure."""
    from vesl.transforms.listing import CommittedConflict

    if isinstance(exc, (InputError, CommittedConflict)):
        return _RUNNER_CONTEXT.sub("", str(exc).strip())
    match = _WORKER_USAGE.search(str(exc))
    return _RUNNER_CONTEXT.sub("", match[1].strip()) if match else None


def check_output(output: str) -> None:
    """``--output`` must be a folder VESL can write: checked by writing (and removing) a probe file,
    before any work, so a run never fails on its output after the expensive stages."""
    import uuid

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


@dataclass(frozen=True)
class RunPlan:
    """Which input shards this run processes, and which earlier runs committed (kept as they are)."""

    to_process: list[InputShard]
    committed: dict[str, dict]  # shard id -> counts, for shards of this input set already committed


def committed_ids(layout: OutputLayout) -> set[str]:
    """Shard ids with a stats file in the folder: committed by any run, whatever its input."""
    fs, root = fsspec.core.url_to_fs(layout.root)
    stats_dir = f"{root.rstrip('/')}/stats"
    suffix = layout.suffix("stats")
    listed = fs.ls(stats_dir, detail=False) if fs.isdir(stats_dir) else []
    return {p.rsplit("/", 1)[-1][: -len(suffix)] for p in listed if p.endswith(suffix)}


def folder_digests(layout: OutputLayout, shard_ids: set[str]) -> dict[str, str]:
    """Config digest -> one committed shard made with it. From ``_config.json`` when the folder has
    one; a folder written before VESL kept it is judged by every stats file (read once)."""
    fs, _ = fsspec.core.url_to_fs(layout.root)
    if not shard_ids:
        return {}
    try:
        with fsspec.open(layout.folder_config_path, "r") as f:
            return {json.load(f)["config_digest"]: layout.folder_config_path}
    except FileNotFoundError:
        pass
    paths = [layout.path("stats", shard_id) for shard_id in sorted(shard_ids)]
    digests: dict[str, str] = {}
    for path, blob in fs.cat([fsspec.core.url_to_fs(p)[1] for p in paths]).items():
        digests.setdefault(json.loads(blob).get("provenance", {}).get("config_digest"), path)
    return digests


def plan_run(shards: list[InputShard], layout: OutputLayout, config: VeslConfig, overwrite: bool) -> RunPlan:
    """Decide what to do, under the folder's lease. One folder holds shards of one configuration:
    a run with another one is refused (with ``--overwrite`` only when every committed shard of the
    folder is one this run redoes); ``--overwrite`` uncommits this input's shards first, so a run
    that dies midway leaves no shard of the old configuration behind a new ``_config.json``."""
    fs, _ = fsspec.core.url_to_fs(layout.root)
    existing = committed_ids(layout)
    ids = {shard_output_id(shard.path): shard for shard in shards}
    mine = config.digest()
    others = {d: where for d, where in folder_digests(layout, existing).items() if d != mine}
    outside = sorted(existing - set(ids))
    if others and (not overwrite or outside):
        digest, where = next(iter(others.items()))
        remedy = (
            f"{len(outside)} of them are not in this run's input, so --overwrite cannot redo them; write elsewhere"
            if overwrite
            else "pass --overwrite to redo them (only when this input covers them all), or write elsewhere"
        )
        raise UsageError(
            f"{layout.root!r} holds {len(existing)} committed shards made with another configuration "
            f"(config digest {digest}, this run {mine}; see {where}); {remedy}"
        )
    if overwrite:
        stale = [fsspec.core.url_to_fs(layout.path("stats", i))[1] for i in sorted(set(ids) & existing)]
        if stale:
            fs.rm(stale)
        done: list[str] = []
    else:
        done = sorted(set(ids) & existing)
    committed: dict[str, dict] = {}
    if done:
        paths = [fsspec.core.url_to_fs(layout.path("stats", shard_id))[1] for shard_id in done]
        for path, blob in fs.cat(paths).items():
            stats = json.loads(blob)
            digest = stats.get("provenance", {}).get("config_digest")
            if digest != mine:
                raise UsageError(
                    f"{layout.root!r} holds shards made with another configuration (config digest {digest}, "
                    f"this run {mine}: {path}); pass --overwrite to redo them, or write elsewhere"
                )
            committed[stats["shard_id"]] = stats["counts"]
    record_folder_config(layout, config)
    return RunPlan([ids[i] for i in sorted(ids) if i not in committed], committed)


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
    mine = config.digest()
    try:
        with fsspec.open(layout.folder_config_path, "r") as f:
            recorded = json.load(f)["config_digest"]
    except FileNotFoundError:
        recorded = None
    if recorded != mine:
        existing = committed_ids(layout)
        others = {d: w for d, w in folder_digests(layout, existing).items() if d != mine} if existing else {}
        if others:
            digest, where = next(iter(others.items()))
            raise UsageError(
                f"{layout.root!r} holds {len(existing)} committed shards made with another configuration "
                f"(config digest {digest}, this run {mine}; see {where}); write elsewhere, or redo them with "
                "--list_shards driver --overwrite (which checks that this input covers them all)"
            )
    record_folder_config(layout, config)
    return ListOnWorkers(tuple(patterns), overwrite)


CARD_MARK = "<!-- written by VESL -->"


def write_dataset_card(layout: OutputLayout, config: VeslConfig) -> None:
    """``OUTPUT/README.md``: a Hugging Face dataset card whose ``configs`` name the Parquet files, so
    ``datasets.load_dataset(OUTPUT)`` reads them (without it, it picks the JSON files of rejects and
    stats). A README.md that VESL did not write is left alone."""
    fs, path = fsspec.core.url_to_fs(layout.card_path)
    if fs.exists(path):
        with fs.open(path, "r") as f:
            if CARD_MARK not in f.read(4096):
                logging.getLogger("vesl").warning("%s exists and is not VESL's: no dataset card written", path)
                return
    import yaml

    from vesl.schema import hf_card_features

    front = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "parquet/*.parquet"}]}],
        "dataset_info": {"features": hf_card_features()},
    }
    card = f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---
{CARD_MARK}
# Region-text data made by VESL

One row per image: its caption, the phrases parsed from it and the regions the detector found
(`regions[].box`: normalized xyxy on the original image). Rejected records and their reasons are in
`rejects/`, counts in `summary.json`. Preset `{config.preset}`, config digest `{config.digest()}`.

```python
import datasets
ds = datasets.load_dataset("path/to/this/folder", split="train")
```
"""
    with fs.open(path, "w") as f:
        f.write(card)


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
        str(options.view_as(StandardOptions).runner or DEFAULT_LOCAL_RUNNER),
        direct.direct_running_mode,
        direct.direct_num_workers,
        options.view_as(DebugOptions).experiments,
    )


def is_dry_run(options: PipelineOptions) -> bool:
    return bool(options.view_as(TestOptions).dry_run)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Parse options, build and run the pipeline, return summary.json's content.

    With Beam's ``--dry_run`` (DataflowRunner), nothing is listed, checked or read: the pipeline is
    built and handed to the runner, which returns the job without submitting it (``vesl.dataflow``
    writes it out); the return value then holds the pipeline and the runner's result."""
    argv = list(sys.argv[1:] if argv is None else argv)
    options = PipelineOptions(argv)
    if options.view_as(StandardOptions).runner is None and test_pipeline is None:
        options.view_as(StandardOptions).runner = DEFAULT_LOCAL_RUNNER
    vesl_options = options.view_as(VeslOptions)
    if not vesl_options.input or not vesl_options.output:
        raise UsageError("--input and --output are required")
    try:
        config: VeslConfig = config_from_options(vesl_options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    dry_run = is_dry_run(options)
    cpu_threads = resolve_cpu_threads(options)  # a bad --cpu_threads fails here, before any work
    runner = str(options.view_as(StandardOptions).runner or "").lower()
    backend = detector_backend(config.detect.backend)
    if runner in LOCAL_RUNNERS or test_pipeline is not None:
        try:  # what this machine lacks for the detector's settings (a GPU, a decoder): said before any work
            backend.check(config.detect)
        except BackendUnavailable as exc:
            raise UsageError(str(exc)) from None
    local = runner in LOCAL_RUNNERS or test_pipeline is not None
    on_workers = vesl_options.list_shards == "workers" or (vesl_options.list_shards == "auto" and not local)
    shards: list[InputShard] | None = None  # None: the job's workers list the input
    if dry_run:  # offline: no listing, no checkpoint check
        if not on_workers:  # the patterns stand for their shards
            patterns = sorted(split_patterns(vesl_options.input))
            shards = [as_input_shard(p) or InputShard(p, "unknown") for p in patterns]
        weights = "not checked (dry run)"
    elif on_workers:
        patterns = split_patterns(vesl_options.input)
        check_patterns_exist(patterns)
        check_output(vesl_options.output)
        print(f"vesl: input: {len(patterns)} pattern(s), listed by the job's workers", file=sys.stderr)
        weights = backend.weights(config.detect)
    else:
        shards = expand_inputs(vesl_options.input, vesl_options.output)
        check_output(vesl_options.output)
        print(f"vesl: input: {describe_inputs(shards)}", file=sys.stderr)
        weights = backend.weights(config.detect)
    captioner = config.caption.describe()
    if config.caption.enabled and not dry_run:
        captioner += f"; {preflight(config.caption.checkpoint, model_type=None, what='captioning')}"
    provenance = Provenance.for_run(
        config.preset, config.detect.checkpoint, config.detect.image_size, weights, config.digest(), captioner
    )
    pipeline = test_pipeline or beam.Pipeline(options=options)
    if dry_run:
        return launch(pipeline, options, config, shards, provenance, None, local, cpu_threads)
    lease = OutputLease(vesl_options.output)
    try:
        lease.acquire(config.digest(), take_over=vesl_options.take_over_lease)
    except LeaseHeld as exc:
        raise UsageError(str(exc)) from None
    submitted = False
    try:
        clear_temporary(output_layout(config, vesl_options.output))  # the folder is ours: leftovers are dead runs'
        with lease.heartbeat():
            try:
                summary = launch(pipeline, options, config, shards, provenance, lease, local, cpu_threads)
            except Exception as exc:
                if LeaseLost.__name__ in str(exc):  # a worker's commit fence stopped the run
                    lease.lost = lease.lost or "the lease was taken over by another run"
                    raise LeaseLost(f"{vesl_options.output!r}: {lease.lost}; this run stopped committing") from None
                if usage := worker_usage_error(exc):  # the workers' listing or plan refused the input
                    raise UsageError(usage) from None
                raise
        submitted = bool(summary.get("submitted"))
    finally:
        if submitted:  # the job holds the lease now; its last step gives it back
            if not lease.mark_submitted(summary.get("job_id")) and read_lease(vesl_options.output) is None:
                lease.lost = None  # the job has finished already (a local runner) and released it
        else:
            lease.release()
    if lease.lost:
        raise LeaseLost(f"{vesl_options.output!r}: {lease.lost} while this run was working; check its shards")
    return summary


def clear_temporary(layout: OutputLayout) -> None:
    fs, _ = fsspec.core.url_to_fs(layout.root)
    if fs.exists(layout.temp_parent):
        fs.rm(layout.temp_parent, recursive=True)


def launch(
    pipeline: beam.Pipeline,
    options: PipelineOptions,
    config: VeslConfig,
    shards: list[InputShard] | None,
    provenance: Provenance,
    lease: OutputLease | None,
    local: bool,
    cpu_threads: int | None = None,
) -> dict[str, Any]:
    """Plan (under ``lease``), build, run and wait; None for ``lease`` means a dry run, None for ``shards``
    a listing by the workers. ``cpu_threads``: ``resolve_cpu_threads``' answer."""
    vesl_options = options.view_as(VeslOptions)
    dry_run = lease is None
    run_id = lease.held.run_id if lease is not None and lease.held else ""
    layout = output_layout(config, vesl_options.output, run_id)
    source: list[InputShard] | ListOnWorkers
    if shards is None:
        patterns = split_patterns(vesl_options.input)
        plan = RunPlan([], {})
        if dry_run:
            source = ListOnWorkers(tuple(patterns), vesl_options.overwrite)
        else:
            source = plan_on_workers(patterns, layout, config, vesl_options.overwrite)
    else:
        plan = RunPlan(shards, {}) if dry_run else plan_run(shards, layout, config, vesl_options.overwrite)
        source = plan.to_process
    if plan.committed:
        logging.getLogger("vesl").warning(
            "resuming: %d of %d shards already committed in %s are kept (--overwrite redoes them)",
            len(plan.committed),
            len(shards),
            vesl_options.output,
        )
    show_progress = local and not dry_run and vesl_options.wait and wants_progress(vesl_options.progress)
    progress_dir = tempfile.mkdtemp(prefix="vesl-progress-") if show_progress else None
    build_pipeline(
        pipeline,
        config,
        source,
        vesl_options.output,
        provenance,
        plan.committed,
        detect_accelerator=vesl_options.detect_accelerator,
        cpu_threads=cpu_threads,
        progress_dir=progress_dir,
        run_id=run_id,
        release_lease=not vesl_options.wait,
    )
    shards_total = len(plan.to_process) if shards is not None else None  # None: counted as the workers list
    monitor = ProgressMonitor(progress_dir, shards_total) if progress_dir else nullcontext()
    try:
        with monitor:
            result = pipeline.run()
            if dry_run:
                return {"dry_run": True, "pipeline": pipeline, "result": result, "options": options, "config": config}
            if not vesl_options.wait:
                job_id = result.job_id() if hasattr(result, "job_id") else None
                return {"submitted": True, "job_id": job_id, "output": vesl_options.output}
            result.wait_until_finish()
    finally:
        if progress_dir:
            shutil.rmtree(progress_dir, ignore_errors=True)
        if not dry_run and vesl_options.wait:
            remove_run_temporary(layout)
    with fsspec.open(layout.summary_path, "r") as f:
        return json.load(f)


def wants_progress(setting: str) -> bool:
    """``auto``: when stderr is a terminal."""
    return sys.stderr.isatty() if setting == "auto" else setting == "true"


def format_summary(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    lines = [
        f"VESL {summary['provenance']['vesl_version']} - preset {summary['provenance']['preset']}, "
        f"detector {summary['provenance']['detector']} ({summary['provenance']['weights']})",
        f"  shards {counts['shards']}: read {counts['read']} = written {counts['written']}"
        f" + rejected {counts['rejected']}"
        f"  [{'balanced' if counts['balanced'] else 'NOT BALANCED'}]",
        f"  phrases/image {counts['phrases_per_image']}, regions/image {counts['regions_per_image']}, "
        f"written with zero regions {counts['written_without_regions']}",
    ]
    for stage, reasons in counts["rejected_by_stage"].items():
        lines.append(f"  rejected at {stage}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    source = counts.get("source_checks", {})
    if source.get("shards"):
        state = f"{source['problems']} problems" if source["problems"] else "consistent with what was read"
        lines.append(
            f"  img2dataset: {source['urls_tried']} URLs tried in {source['shards']} shards, "
            f"{source['downloaded']} downloaded, {source['failed']} failed; its stats: {state}"
        )
    lines += [f"  {name}: {path}" for name, path in summary["outputs"].items()]
    return "\n".join(lines)


def print_help() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.vesl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Beam pipeline option (--runner, --project, --region, --temp_location, ...) is passed to Beam.",
    )
    VeslOptions._add_argparse_args(parser)
    parser.print_help()


def verdict(counts: dict[str, Any], allow_empty: bool = False) -> tuple[int, list[str]]:
    """The exit status of a finished run and what to say on stderr: counts that do not balance fail
    it, and so does a run that wrote nothing (unless ``allow_empty``); problems found in the input's
    own bookkeeping and failed detector batches are warnings."""
    errors, warnings = [], []
    if not counts["balanced"]:
        errors.append(
            f"counts do not balance: read {counts['read']} != written {counts['written']} + rejected "
            f"{counts['rejected']} (a record was lost or counted twice; please report it)"
        )
    if counts["written"] == 0 and not allow_empty:
        if counts["read"] == 0:
            errors.append(f"the input held no records ({counts['shards']} shards); --allow_empty true accepts that")
        else:
            reasons = Counter(
                {f"{stage}: {reason}": n for stage, r in counts["rejected_by_stage"].items() for reason, n in r.items()}
            )
            top = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3))
            errors.append(
                f"read {counts['read']} records but wrote none (rejected: {top}); see the rejects, or pass "
                "--allow_empty true if that is intended"
            )
    failed = counts["rejected_by_stage"].get("detect", {}).get("inference_error", 0)
    if failed:
        warnings.append(f"{failed} records were rejected because a detector batch failed; see the rejects")
    source = counts.get("source_checks", {})
    if source.get("problems"):
        listed = source.get("problems_listed") or ["?"]
        warnings.append(
            f"img2dataset's own counts disagree with what was read ({source['problems']} problems, e.g. "
            f"{listed[0]}); all are listed in summary.json under counts.source_checks"
        )
    lines = [f"vesl: error: {e}" for e in errors] + [f"vesl: warning: {w}" for w in warnings]
    return (1 if errors else 0), lines


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print_help()
        return 0
    try:
        summary = run(args)
    except (UsageError, CheckpointError) as exc:
        print(f"vesl: error: {exc}", file=sys.stderr)
        return 2
    except LeaseLost as exc:  # another run took the folder: this one stopped, its committed shards stand
        print(f"vesl: error: {exc}", file=sys.stderr)
        return 1
    if summary.get("submitted"):
        print(f"vesl: submitted job {summary['job_id']}; its outputs and summary.json will be in {summary['output']}")
        return 0
    print(format_summary(summary))
    status, lines = verdict(summary["counts"], PipelineOptions(args).view_as(VeslOptions).allow_empty)
    for line in lines:
        print(line, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
