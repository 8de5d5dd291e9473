"""VESL's command line: run the pipeline on any Beam runner.

    python -m pipelines.vesl --input 'gs://bucket/shards/*.tar' --output gs://bucket/out
        [--preset cloc|owlst|grit] [VESL options] [Beam options, e.g. --runner DataflowRunner ...]

Without --runner, Beam's FnApiRunner (the DirectRunner's engine) runs it locally; Beam 2.77's
plain DirectRunner first tries to download the Prism runner binary. The work is the launcher's
(``vesl.launch``); this module parses, prints and chooses the exit status.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from vesl.io.lease import LeaseLost
from vesl.launch import UsageError, run
from vesl.models.checkpoint import CheckpointError
from vesl.options import VeslOptions
from vesl.stopping import RunStopped

__all__ = ["UsageError", "format_summary", "main", "run", "verdict"]


def format_summary(summary: dict[str, Any]) -> str:
    counts, provenance = summary["counts"], summary["provenance"]
    lines = [
        f"VESL {provenance['vesl_version']} - preset {provenance['preset']}, "
        f"detector {provenance['detector']} ({provenance['weights']})",
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
        errors.append(nothing_written(counts))
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


def nothing_written(counts: dict[str, Any]) -> str:
    if counts["read"] == 0:
        return f"the input held no records ({counts['shards']} shards); --allow_empty true accepts that"
    reasons = Counter(
        {f"{stage}: {reason}": n for stage, r in counts["rejected_by_stage"].items() for reason, n in r.items()}
    )
    top = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3))
    return (
        f"read {counts['read']} records but wrote none (rejected: {top}); see the rejects, or pass "
        "--allow_empty true if that is intended"
    )


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
    except RunStopped as exc:  # a signal, or a failure: said in one line, the run cleaned up
        print(exc, file=sys.stderr)
        return exc.exit_status
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
