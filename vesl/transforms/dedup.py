"""DropDuplicateKeys: a key read twice is written once.

The first occurrence (by shard path, then position in the shard) wins, so which copy survives does
not depend on the runner; the others are rejected as ``duplicate_key`` naming the winner. On a
resumed run, the keys of shards committed earlier take part as "ghosts" (they are not written
again), so the outcome equals a clean run's. The GroupByKey also spreads records over workers before
the expensive stages (it replaces a Reshuffle).
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl.io.layout import OutputLayout
from vesl.records import Reason, Reject, Stage
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS


class KeepFirstFn(beam.DoFn):
    def __init__(self):
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_keys")

    def process(self, keyed):
        _, entries = keyed
        entries = sorted(entries, key=lambda e: (e[1], e[2]))  # (kind, shard, index, record)
        _, first_shard, first_index, _ = entries[0]
        for kind, shard, index, record in entries:
            if kind != "record":
                continue
            if (shard, index) == (first_shard, first_index):
                yield record
            else:
                self.duplicates.inc()
                detail = f"key already read from {first_shard} record {first_index}"
                yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(record, Stage.DEDUP, Reason.DUPLICATE_KEY, detail))


class ReadCommittedKeysFn(beam.DoFn):
    """Keys that reached the dedup stage in a committed shard: its written rows (from its Parquet file,
    or its TFRecord file when no Parquet was written) and its rejects from any stage after reading."""

    def __init__(self, layout: OutputLayout):
        self.layout = layout

    def process(self, shard_id: str):
        import fsspec
        import pyarrow.parquet as pq

        with open_stats(self.layout, shard_id) as f:
            stats = json.load(f)
        shard = stats["input"]
        parquet, tfrecord = stats["files"].get("parquet"), stats["files"].get("tfrecord")
        if parquet:
            with fsspec.open(parquet, "rb") as f:
                table = pq.read_table(f, columns=["key", "source_index"])
            for key, index in zip(table.column("key").to_pylist(), table.column("source_index").to_pylist()):
                yield key, ("ghost", shard, index, None)
        elif tfrecord:  # a run with --write_parquet false: the same keys, from its Examples
            from vesl.io.tfexample import decode_example
            from vesl.io.tfrecord import read_tfrecord_file
            from vesl.schema import TFKeys

            for record in read_tfrecord_file(tfrecord):
                features = decode_example(record)
                key = features[TFKeys.KEY][1][0].decode("utf-8")
                yield key, ("ghost", shard, int(features[TFKeys.SOURCE_INDEX][1][0]), None)
        with fsspec.open(stats["files"]["rejects"], "r") as f:
            for line in f:
                reject = json.loads(line)
                if reject["stage"] != Stage.READ:
                    yield reject["key"], ("ghost", shard, reject["index"], None)


def open_stats(layout: OutputLayout, shard_id: str):
    import fsspec

    return fsspec.open(layout.path("stats", shard_id), "r")


class DropDuplicateKeys(beam.PTransform):
    def __init__(self, layout: OutputLayout | None = None, committed_shard_ids: tuple[str, ...] = ()):
        super().__init__()
        self.layout = layout
        self.committed_shard_ids = committed_shard_ids

    def expand(self, records):
        keyed = records | "ByKey" >> beam.Map(lambda r: (r.key, ("record", r.shard, r.index, r)))
        if self.committed_shard_ids:
            ghosts = (
                records.pipeline
                | "CommittedShards" >> beam.Create(list(self.committed_shard_ids))
                | "ReadCommittedKeys" >> beam.ParDo(ReadCommittedKeysFn(self.layout))
            )
            keyed = (keyed, ghosts) | "WithCommittedKeys" >> beam.Flatten()
        return (
            keyed
            | "GroupByKey" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(KeepFirstFn()).with_outputs(REJECTS, main=RECORDS)
        )
