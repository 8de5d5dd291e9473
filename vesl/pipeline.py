"""build_pipeline(): the whole data flow, one labelled line per stage, top to bottom.

ListShards (the launcher's list, ``DriverListing``, or ``ListOnWorkers``: ListShards + PlanShards on the workers)
shards -> FindDuplicateKeys (keys only) -> ReadShards (rejecting the losing copies) -> ExtractPhrases
       -> DetectRegions -> FilterRegions
       -> WriteShardOutputs (per input shard: Parquet + TFRecord + rejects, then the stats file
          that commits the shard; then summary.json)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from vesl import accounting
from vesl.config import VeslConfig
from vesl.context import RunContext
from vesl.io.layout import OutputLayout
from vesl.io.sinks import SINKS, sink_suffixes
from vesl.records import InputShard, KeptShard
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
class DriverListing:
    """The input as the launcher listed and planned it: the shards this run processes, and the shards of
    the same input committed by earlier runs, kept as they are (``KeptShard``)."""

    shards: tuple[InputShard, ...]
    committed: tuple[KeptShard, ...] = ()


@dataclass(frozen=True)
class ListOnWorkers:
    """The input as its patterns: the workers list the shards and plan the resume (``vesl.transforms.listing``).
    ``overwrite``: every listed shard is processed, committed or not. ``accepted_digests``: the config
    digests a kept shard may have (``vesl.launch.accepted_digests``)."""

    patterns: tuple[str, ...]
    overwrite: bool = False
    accepted_digests: tuple[str, ...] = ()


def summary_header(config: VeslConfig, provenance: Provenance, layout: OutputLayout) -> dict:
    """summary.json without the parts the run works out: ``input_shards`` and ``counts``."""
    from vesl.models.backends import detector_backend

    backend = detector_backend(config.detect.backend)
    outputs: dict[str, Any] = {
        "rejects": layout.rejects_glob,
        "stats": layout.stats_glob,
        "summary": layout.summary_path,
    }
    outputs.update({name: layout.glob(name) for name, sink in SINKS.items() if sink.enabled(config.write)})
    return {
        "schema_version": SCHEMA_VERSION,
        "box_convention": BOX_CONVENTION,
        "provenance": provenance.__dict__,
        "detector": {"backend": backend.name, "numerics": backend.describe(config.detect)},
        "outputs": outputs,
        "config": config.to_dict(),
    }


def list_and_plan(p: beam.Pipeline, config: VeslConfig, source: DriverListing | ListOnWorkers, run: RunContext):
    """(the shards this run processes, the committed shards it keeps: KeptShards)."""
    if isinstance(source, ListOnWorkers):
        listed = p | "ListShards" >> ListShards(list(source.patterns), run.layout.root)
        digests = source.accepted_digests or (config.digest(),)
        plan = listed | "PlanShards" >> PlanShards(run.layout, digests, source.overwrite, run.workers)
        return plan.to_process, plan[COMMITTED]
    inputs = p | "ListShards" >> beam.Create(list(source.shards))
    return inputs, p | "CommittedShards" >> beam.Create(list(source.committed))


def build_pipeline(
    p: beam.Pipeline, config: VeslConfig, source: DriverListing | ListOnWorkers, run: RunContext
) -> dict[str, beam.PCollection]:
    """The data flow, top to bottom. ``source``: the input shards as the launcher listed and planned them,
    or their patterns for the workers to list (``ListOnWorkers``); ``run``: where the run writes, what it
    records, its workers' settings (``vesl.context.RunContext``)."""
    inputs, kept = list_and_plan(p, config, source, run)
    shard_count = (
        (inputs | "OneInput" >> beam.Map(lambda _: 1), kept | "OneKept" >> beam.Map(lambda _: 1))
        | "AllInputShards" >> beam.Flatten()
        | "CountInputShards" >> beam.CombineGlobally(sum)
    )
    kept_ids = kept | "KeptIds" >> beam.Map(lambda shard: shard.shard_id)
    duplicates = (inputs, kept_ids) | "FindDuplicateKeys" >> FindDuplicateKeys(config.read, run.layout)
    read = (inputs, duplicates) | "ReadShards" >> ReadShards(config.read, run.workers)
    stages = [read]
    to_parse, caption_use = read[RECORDS], None
    if config.caption.enabled:  # optional: visually enriched captions
        captioned = to_parse | "CaptionImages" >> CaptionImages(config.caption, config.detect, run.workers)
        stages.append(captioned)
        to_parse, caption_use = captioned[RECORDS], config.caption.use
    phrased = to_parse | "ExtractPhrases" >> ExtractPhrases(config.phrases, caption_use)
    detect = DetectRegions(config.detect, config.filter.score_threshold, config.write.write_image_bytes, run.workers)
    if run.detect_accelerator:
        detect = detect.with_resource_hints(accelerator=run.detect_accelerator)
    detected = phrased[RECORDS] | "DetectRegions" >> detect
    labeled = detected[RECORDS] | "FilterRegions" >> FilterRegions(config.filter)

    stages += [phrased, detected, labeled]
    rejects = [stage[REJECTS] for stage in stages] | "AllRejects" >> beam.Flatten()
    events = accounting_events(inputs, read, labeled[RECORDS], rejects, run.workers.progress_dir)
    header = summary_header(config, run.provenance, run.layout)
    previous = kept | "KeptCounts" >> beam.Map(lambda shard: shard.counts)
    gone = (
        kept
        | "KeptWithoutInput" >> beam.Filter(lambda shard: shard.input_gone)
        | "CountWithoutInput" >> beam.combiners.Count.Globally()
    )
    summary = (
        labeled[RECORDS],
        rejects,
        events,
        inputs,
        previous,
        shard_count,
        gone,
    ) | "WriteShardOutputs" >> WriteShardOutputs(config.write, run, config.to_json(), header)
    return {"labeled": labeled[RECORDS], "rejects": rejects, "events": events, "summary": summary}


def accounting_events(inputs, read, labeled, rejects, progress_dir: str | None) -> beam.PCollection:
    """(shard id, event) of every shard, record read, source check, record written and record rejected."""
    return (
        inputs | "ShardEvents" >> beam.ParDo(ShardEventFn(accounting.shard_event, lambda shard: shard.path)),
        read[RECORDS] | "ReadEvents" >> beam.ParDo(ShardEventFn(accounting.read_event)),
        read[REJECTS] | "ReadRejectEvents" >> beam.ParDo(ShardEventFn(accounting.read_event)),
        read[CHECKS] | "SourceCheckEvents" >> beam.ParDo(ShardEventFn(accounting.source_event)),
        labeled
        | "WrittenEvents"
        >> beam.ParDo(ShardEventFn(accounting.written_event, lambda item: item.record.shard, True, progress_dir)),
        rejects
        | "RejectedEvents"
        >> beam.ParDo(ShardEventFn(accounting.rejected_event, finished=True, progress_dir=progress_dir)),
    ) | "AllEvents" >> beam.Flatten()
