"""build_pipeline(): the whole data flow, one labelled line per stage, top to bottom.

shards -> ReadShards -> DropDuplicateKeys -> ExtractPhrases -> DetectRegions -> FilterRegions
       -> WriteRegions (Parquet + TFRecord)
every stage's rejects -> WriteRejects;  read/written/rejected events -> WriteSummary
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam

from vesl import accounting
from vesl.config import VeslConfig
from vesl.io.layout import OutputLayout
from vesl.schema import BOX_CONVENTION, SCHEMA_VERSION, Provenance
from vesl.transforms import RECORDS, REJECTS
from vesl.transforms.dedup import DropDuplicateKeys
from vesl.transforms.detect import DetectRegions
from vesl.transforms.filter import FilterRegions
from vesl.transforms.phrases import ExtractPhrases
from vesl.transforms.read import ReadShards
from vesl.transforms.write import WriteRegions, WriteRejects, WriteSummary


def summary_header(config: VeslConfig, provenance: Provenance, layout: OutputLayout, shards: Sequence[str]) -> dict:
    outputs: dict[str, Any] = {"rejects": layout.rejects_glob, "summary": layout.summary_path}
    if config.write.parquet:
        outputs["parquet"] = layout.parquet_glob
    if config.write.tfrecord:
        outputs["tfrecord"] = layout.tfrecord_glob
    return {
        "schema_version": SCHEMA_VERSION,
        "box_convention": BOX_CONVENTION,
        "provenance": provenance.__dict__,
        "input_shards": len(shards),
        "outputs": outputs,
        "config": config.to_dict(),
    }


def build_pipeline(
    p: beam.Pipeline, config: VeslConfig, shards: Sequence[str], output: str, provenance: Provenance
) -> dict[str, beam.PCollection]:
    layout = OutputLayout(output)
    read = p | "ListShards" >> beam.Create(list(shards)) | "ReadShards" >> ReadShards(config.read)
    unique = read[RECORDS] | "DropDuplicateKeys" >> DropDuplicateKeys()
    phrased = unique[RECORDS] | "ExtractPhrases" >> ExtractPhrases(config.phrases)
    detected = phrased[RECORDS] | "DetectRegions" >> DetectRegions(
        config.detect, config.filter.score_threshold, config.write.write_image_bytes
    )
    labeled = detected[RECORDS] | "FilterRegions" >> FilterRegions(config.filter)
    labeled[RECORDS] | "WriteRegions" >> WriteRegions(config.write, layout, provenance, config.to_json())

    stages = (read, unique, phrased, detected, labeled)
    rejects = [stage[REJECTS] for stage in stages] | "AllRejects" >> beam.Flatten()
    rejects | "WriteRejects" >> WriteRejects(layout)

    events = (
        read[RECORDS] | "ReadEvents" >> beam.Map(accounting.read_event),
        read[REJECTS] | "ReadRejectEvents" >> beam.Map(accounting.read_event),
        labeled[RECORDS] | "WrittenEvents" >> beam.Map(accounting.written_event),
        rejects | "RejectedEvents" >> beam.Map(accounting.rejected_event),
    ) | "AllEvents" >> beam.Flatten()
    events | "WriteSummary" >> WriteSummary(layout, summary_header(config, provenance, layout, shards))
    return {"labeled": labeled[RECORDS], "rejects": rejects, "events": events}
