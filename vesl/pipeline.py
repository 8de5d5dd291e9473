"""build_pipeline(): the whole data flow, one labelled line per stage, top to bottom.

shards -> ReadShards -> DropDuplicateKeys -> ExtractPhrases -> DetectRegions -> FilterRegions
       -> WriteShardOutputs (per input shard: Parquet + TFRecord + rejects, then the stats file
          that commits the shard; then summary.json)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam

from vesl import accounting
from vesl.config import VeslConfig
from vesl.io.layout import OutputLayout, shard_output_id
from vesl.schema import BOX_CONVENTION, SCHEMA_VERSION, Provenance
from vesl.transforms import RECORDS, REJECTS
from vesl.transforms.caption import CaptionImages
from vesl.transforms.dedup import DropDuplicateKeys
from vesl.transforms.detect import DetectRegions
from vesl.transforms.filter import FilterRegions
from vesl.transforms.phrases import ExtractPhrases
from vesl.transforms.read import ReadShards
from vesl.transforms.write import WriteShardOutputs


def output_layout(config: VeslConfig, output: str) -> OutputLayout:
    return OutputLayout(output, tfrecord_gzip=config.write.tfrecord_compression == "gzip")


def summary_header(config: VeslConfig, provenance: Provenance, layout: OutputLayout, n_shards: int) -> dict:
    outputs: dict[str, Any] = {
        "rejects": layout.rejects_glob,
        "stats": layout.stats_glob,
        "summary": layout.summary_path,
    }
    if config.write.parquet:
        outputs["parquet"] = layout.parquet_glob
    if config.write.tfrecord:
        outputs["tfrecord"] = layout.tfrecord_glob
    return {
        "schema_version": SCHEMA_VERSION,
        "box_convention": BOX_CONVENTION,
        "provenance": provenance.__dict__,
        "input_shards": n_shards,
        "outputs": outputs,
        "config": config.to_dict(),
    }


def _by_shard(event_fn, shard_of=lambda item: item.shard):
    """(shard id, event) pairs: accounting is per input shard."""
    return lambda item: (shard_output_id(shard_of(item)), event_fn(item))


def build_pipeline(
    p: beam.Pipeline,
    config: VeslConfig,
    shards: Sequence[str],
    output: str,
    provenance: Provenance,
    committed: dict[str, dict] | None = None,
    detect_accelerator: str | None = None,
) -> dict[str, beam.PCollection]:
    """``shards``: the input shards this run processes. ``committed``: shard id -> counts of shards
    of the same input set committed by earlier runs (kept as they are, counted in the summary).
    ``detect_accelerator``: a Beam accelerator resource hint for the detection stage alone."""
    committed = committed or {}
    layout = output_layout(config, output)
    paths = p | "ListShards" >> beam.Create(list(shards))
    read = paths | "ReadShards" >> ReadShards(config.read)
    unique = read[RECORDS] | "DropDuplicateKeys" >> DropDuplicateKeys(layout, tuple(sorted(committed)))
    stages = [read, unique]
    to_parse, caption_use = unique[RECORDS], None
    if config.caption.enabled:  # optional: visually enriched captions
        captioned = to_parse | "CaptionImages" >> CaptionImages(config.caption, config.detect)
        stages.append(captioned)
        to_parse, caption_use = captioned[RECORDS], config.caption.use
    phrased = to_parse | "ExtractPhrases" >> ExtractPhrases(config.phrases, caption_use)
    detect = DetectRegions(config.detect, config.filter.score_threshold, config.write.write_image_bytes)
    if detect_accelerator:
        detect = detect.with_resource_hints(accelerator=detect_accelerator)
    detected = phrased[RECORDS] | "DetectRegions" >> detect
    labeled = detected[RECORDS] | "FilterRegions" >> FilterRegions(config.filter)

    stages += [phrased, detected, labeled]
    rejects = [stage[REJECTS] for stage in stages] | "AllRejects" >> beam.Flatten()
    events = (
        paths | "ShardEvents" >> beam.Map(lambda path: (shard_output_id(path), accounting.shard_event(path))),
        read[RECORDS] | "ReadEvents" >> beam.Map(_by_shard(accounting.read_event)),
        read[REJECTS] | "ReadRejectEvents" >> beam.Map(_by_shard(accounting.read_event)),
        labeled[RECORDS] | "WrittenEvents" >> beam.Map(_by_shard(accounting.written_event, lambda i: i.record.shard)),
        rejects | "RejectedEvents" >> beam.Map(_by_shard(accounting.rejected_event)),
    ) | "AllEvents" >> beam.Flatten()
    header = summary_header(config, provenance, layout, len(shards) + len(committed))
    summary = (labeled[RECORDS], rejects, events, paths) | "WriteShardOutputs" >> WriteShardOutputs(
        config.write, layout, provenance, config.to_json(), header, list(committed.values())
    )
    return {"labeled": labeled[RECORDS], "rejects": rejects, "events": events, "summary": summary}
