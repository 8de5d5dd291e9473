"""DropDuplicateKeys: a key read twice is written once.

The first occurrence (by shard path, then position in the shard) wins, so which copy survives does
not depend on the runner; the others are rejected as ``duplicate_key`` naming the winner. The
GroupByKey also spreads records over workers before the expensive stages (it replaces a Reshuffle).
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl.records import Reason, Reject, Stage
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS


class KeepFirstFn(beam.DoFn):
    def __init__(self):
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_keys")

    def process(self, keyed):
        _, records = keyed
        ordered = sorted(records, key=lambda r: (r.shard, r.index))
        first = ordered[0]
        yield first
        for dup in ordered[1:]:
            self.duplicates.inc()
            detail = f"key already read from {first.shard} record {first.index}"
            yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(dup, Stage.DEDUP, Reason.DUPLICATE_KEY, detail))


class DropDuplicateKeys(beam.PTransform):
    def expand(self, records):
        return (
            records
            | "ByKey" >> beam.Map(lambda r: (r.key, r))
            | "GroupByKey" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(KeepFirstFn()).with_outputs(REJECTS, main=RECORDS)
        )
