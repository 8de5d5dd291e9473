"""build_pipeline(): the whole data flow, one labelled line per stage, top to bottom.

ListShards (the driver's list, or ``ListOnWorkers``: ListShards + PlanShards on the workers)
shards -> FindDuplicateKeys (keys only) -> ReadShards (rejecting the losing copies) -> ExtractPhrases
       -> DetectRegions -> FilterRegions
       -> WriteShardOutputs (per input shard: Parquet + TFRecord + rejects, then the stats file
          that commits the shard; then summary.json)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from vesl import accounting
from vesl.config import VeslConfig
from vesl.io.layout import OutputLayout
from vesl.io.sinks import SINKS, sink_suffixes
from vesl.records import InputShard
from vesl.schema import BOX_CONVENTION, SCHEMA_VERSION, Provenance
from vesl.transforms import CHECKS, RECORDS, REJECTS
from vesl.transforms.account import ShardEventFn
from vesl.transforms.caption import CaptionImages
from vesl.transforms.dedup import FindDuplicateKeys
from vesl.transforms.detect import DetectRegions
from vesl.transforms.filter import FilterRegions
from vesl.transforms.listing import COMMITTED, ListShards, PlanShards
from vesl.transforms.phrases import ExtractPhrases
from vesl.transforms.read import ReadShards
from vesl.transforms.write import WriteShardOutputs


def output_layout(config: VeslConfig, output: str, run_id: str = "") -> OutputLayout:
    return OutputLayout(output, run_id, sink_suffixes(config.write))


@dataclass(frozen=True)
class ListOnWorkers:
    """The input as its patterns: the workers list the shards and plan the resume (``vesl.transforms.listing``).
    ``overwrite``: every listed shard is processed, committed or not."""

    patterns: tuple[str, ...]
    overwrite: bool = False


def summary_header(config: VeslConfig, provenance: Provenance, layout: OutputLayout) -> dict:
    """summary.json without the parts the run works out: ``input_shards`` and ``counts``."""
    outputs: dict[str, Any] = {
        "rejects": layout.rejects_glob,
        "stats": layout.stats_glob,
        "summary": layout.summary_path,
    }
    outputs.update({name: layout.glob(name) for name, sink in SINKS.items() if sink.enabled(config.write)})
    from vesl.models.backends import detector_backend

    backend = detector_backend(config.detect.backend)
    return {
        "schema_version": SCHEMA_VERSION,
        "box_convention": BOX_CONVENTION,
        "provenance": provenance.__dict__,
        "detector": {"backend": backend.name, "numerics": backend.describe(config.detect)},
        "outputs": outputs,
        "config": config.to_dict(),
    }


def build_pipeline(
    p: beam.Pipeline,
    config: VeslConfig,
    shards: Sequence[InputShard] | ListOnWorkers,
    output: str,
    provenance: Provenance,
    committed: dict[str, dict] | None = None,
    detect_accelerator: str | None = None,
    cpu_threads: int | None = None,
    progress_dir: str | None = None,
    run_id: str = "",
    release_lease: bool = False,
) -> dict[str, beam.PCollection]:
    """``shards``: the input shards this run processes (``vesl.io.inputs``), or ``ListOnWorkers``. ``committed``
    (with a list of shards): shard id -> counts of shards of the same input set committed by earlier runs
    (kept as they are, counted in the summary).
    ``detect_accelerator``: a Beam accelerator resource hint for the detection stage alone.
    ``cpu_threads``: PyTorch's intra-op threads in each worker process (``vesl.threads``; None: default).
    ``progress_dir``: a local folder where workers leave progress counts (``vesl.progress``).
    ``run_id``: the id of the output lease this run holds (``vesl.io.lease``): it names the run's
    temporary folder and every shard commit first checks the lease still names it. ``release_lease``:
    the job's last step gives the lease back (a job submitted without a waiting launcher)."""
    committed = committed or {}
    layout = output_layout(config, output, run_id)
    if isinstance(shards, ListOnWorkers):
        listed = p | "ListShards" >> ListShards(list(shards.patterns), output)
        plan = listed | "PlanShards" >> PlanShards(layout, config.digest(), shards.overwrite, progress_dir)
        inputs, kept = plan.to_process, plan[COMMITTED]
    else:
        inputs = p | "ListShards" >> beam.Create(list(shards))
        kept = p | "CommittedShards" >> beam.Create(sorted(committed.items()))
    shard_count = (
        (inputs | "OneInput" >> beam.Map(lambda _: 1), kept | "OneKept" >> beam.Map(lambda _: 1))
        | "AllInputShards" >> beam.Flatten()
        | "CountInputShards" >> beam.CombineGlobally(sum)
    )
    kept_ids = kept | "KeptIds" >> beam.Keys()
    duplicates = (inputs, kept_ids) | "FindDuplicateKeys" >> FindDuplicateKeys(config.read, layout)
    read = (inputs, duplicates) | "ReadShards" >> ReadShards(config.read, progress_dir)
    stages = [read]
    to_parse, caption_use = read[RECORDS], None
    if config.caption.enabled:  # optional: visually enriched captions
        captioned = to_parse | "CaptionImages" >> CaptionImages(config.caption, config.detect, cpu_threads)
        stages.append(captioned)
        to_parse, caption_use = captioned[RECORDS], config.caption.use
    phrased = to_parse | "ExtractPhrases" >> ExtractPhrases(config.phrases, caption_use)
    detect = DetectRegions(config.detect, config.filter.score_threshold, config.write.write_image_bytes, cpu_threads)
    if detect_accelerator:
        detect = detect.with_resource_hints(accelerator=detect_accelerator)
    detected = phrased[RECORDS] | "DetectRegions" >> detect
    labeled = detected[RECORDS] | "FilterRegions" >> FilterRegions(config.filter)

    stages += [phrased, detected, labeled]
    rejects = [stage[REJECTS] for stage in stages] | "AllRejects" >> beam.Flatten()
    events = (
        inputs | "ShardEvents" >> beam.ParDo(ShardEventFn(accounting.shard_event, lambda shard: shard.path)),
        read[RECORDS] | "ReadEvents" >> beam.ParDo(ShardEventFn(accounting.read_event)),
        read[REJECTS] | "ReadRejectEvents" >> beam.ParDo(ShardEventFn(accounting.read_event)),
        read[CHECKS] | "SourceCheckEvents" >> beam.ParDo(ShardEventFn(accounting.source_event)),
        labeled[RECORDS]
        | "WrittenEvents"
        >> beam.ParDo(ShardEventFn(accounting.written_event, lambda item: item.record.shard, True, progress_dir)),
        rejects
        | "RejectedEvents"
        >> beam.ParDo(ShardEventFn(accounting.rejected_event, finished=True, progress_dir=progress_dir)),
    ) | "AllEvents" >> beam.Flatten()
    header = summary_header(config, provenance, layout)
    previous = kept | "KeptCounts" >> beam.Values()
    summary = (
        labeled[RECORDS],
        rejects,
        events,
        inputs,
        previous,
        shard_count,
    ) | "WriteShardOutputs" >> WriteShardOutputs(
        config.write,
        layout,
        provenance,
        config.to_json(),
        header,
        progress_dir,
        release_lease,
    )
    return {"labeled": labeled[RECORDS], "rejects": rejects, "events": events, "summary": summary}
