"""ReadShards: shard paths -> ImageRecord (main) + Reject (``rejects``)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl.config import ReadConfig
from vesl.io.readers import read_shard
from vesl.records import Reject
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS


class ReadShardFn(beam.DoFn):
    def __init__(self, config: ReadConfig):
        self.config = config
        self.records = Metrics.counter(METRICS_NAMESPACE, "records_read")
        self.rejects = Metrics.counter(METRICS_NAMESPACE, "records_rejected_at_read")
        self.shards = Metrics.counter(METRICS_NAMESPACE, "shards_read")

    def process(self, path: str):
        self.shards.inc()
        for item in read_shard(path, self.config):
            if isinstance(item, Reject):
                self.rejects.inc()
                yield beam.pvalue.TaggedOutput(REJECTS, item)
            else:
                self.records.inc()
                yield item


class ReadShards(beam.PTransform):
    """Shard paths (already expanded) -> records; shards are spread over workers first."""

    def __init__(self, config: ReadConfig):
        super().__init__()
        self.config = config

    def expand(self, paths):
        return (
            paths
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShard" >> beam.ParDo(ReadShardFn(self.config)).with_outputs(REJECTS, main=RECORDS)
        )
