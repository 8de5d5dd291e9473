"""WriteRegions / WriteRejects / WriteSummary: Beam's file sinks over the schema module's rows."""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam

from vesl.accounting import Tally
from vesl.config import WriteConfig
from vesl.io.layout import OutputLayout
from vesl.io.tfexample import encode_example
from vesl.schema import Provenance, parquet_schema, to_parquet_row, to_tf_features


class WriteRegions(beam.PTransform):
    """LabeledImage -> Parquet rows and/or tf.train.Example records."""

    def __init__(self, config: WriteConfig, layout: OutputLayout, provenance: Provenance, config_json: str):
        super().__init__()
        self.config = config
        self.layout = layout
        self.provenance = provenance
        self.config_json = config_json

    def expand(self, labeled):
        cfg, provenance, include = self.config, self.provenance, self.config.write_image_bytes
        results = {}
        if cfg.parquet:
            results["parquet"] = (
                labeled
                | "ToParquetRow" >> beam.Map(to_parquet_row, provenance, include)
                | "WriteParquet"
                >> beam.io.WriteToParquet(
                    self.layout.parquet_prefix,
                    parquet_schema(self.config_json),
                    codec=cfg.parquet_compression,
                    file_name_suffix=".parquet",
                    num_shards=cfg.num_shards,
                )
            )
        if cfg.tfrecord:
            gzip = cfg.tfrecord_compression == "gzip"
            results["tfrecord"] = (
                labeled
                | "ToExample" >> beam.Map(lambda item: encode_example(to_tf_features(item, provenance, include)))
                | "WriteTFRecord"
                >> beam.io.WriteToTFRecord(
                    self.layout.tfrecord_prefix,
                    file_name_suffix=".tfrecord.gz" if gzip else ".tfrecord",
                    compression_type=beam.io.filesystem.CompressionTypes.GZIP
                    if gzip
                    else beam.io.filesystem.CompressionTypes.UNCOMPRESSED,
                    num_shards=cfg.num_shards,
                )
            )
        return results


class WriteRejects(beam.PTransform):
    def __init__(self, layout: OutputLayout, num_shards: int = 0):
        super().__init__()
        self.layout = layout
        self.num_shards = num_shards

    def expand(self, rejects):
        return (
            rejects
            | "ToJson" >> beam.Map(lambda r: json.dumps(r.to_json_dict(), ensure_ascii=False, sort_keys=True))
            | "WriteJsonl"
            >> beam.io.WriteToText(self.layout.rejects_prefix, file_name_suffix=".jsonl", num_shards=self.num_shards)
        )


class TallyFn(beam.CombineFn):
    def create_accumulator(self) -> Tally:
        return Tally()

    def add_input(self, tally: Tally, event) -> Tally:
        return tally.add(event)

    def merge_accumulators(self, tallies) -> Tally:
        merged = Tally()
        for tally in tallies:
            merged.merge(tally)
        return merged

    def extract_output(self, tally: Tally) -> dict[str, Any]:
        return tally.to_dict()


def summary_document(counts: dict[str, Any], header: dict[str, Any]) -> str:
    return json.dumps({**header, "counts": counts}, indent=2, sort_keys=False)


class WriteSummary(beam.PTransform):
    """Accounting events -> OUTPUT/summary.json (one file, written by the pipeline on any runner)."""

    def __init__(self, layout: OutputLayout, header: dict[str, Any]):
        super().__init__()
        self.layout = layout
        self.header = header

    def expand(self, events):
        return (
            events
            | "Tally" >> beam.CombineGlobally(TallyFn())
            | "ToJson" >> beam.Map(summary_document, self.header)
            | "WriteJson" >> beam.io.WriteToText(self.layout.summary_path, num_shards=1, shard_name_template="")
        )
