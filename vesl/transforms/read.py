"""ReadShards: InputShards -> ImageRecord (main) + Reject (``rejects``) + SourceCheck (``checks``: what
img2dataset says it wrote, against what the shard held)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl import progress
from vesl.config import ReadConfig
from vesl.io.readers import read_shard
from vesl.records import InputShard, Reject, SourceCheck
from vesl.transforms import CHECKS, METRICS_NAMESPACE, RECORDS, REJECTS


class ReadShardFn(beam.DoFn):
    def __init__(self, config: ReadConfig, progress_dir: str | None = None):
        self.config = config
        self.progress_dir = progress_dir
        self.progress = None
        self.records = Metrics.counter(METRICS_NAMESPACE, "records_read")
        self.rejects = Metrics.counter(METRICS_NAMESPACE, "records_rejected_at_read")
        self.shards = Metrics.counter(METRICS_NAMESPACE, "shards_read")
        self.source_problems = Metrics.counter(METRICS_NAMESPACE, "source_check_problems")

    def setup(self):
        self.progress = progress.counters_for(self.progress_dir)

    def process(self, shard: InputShard):
        pending = 0
        for item in read_shard(shard, self.config):
            if not isinstance(item, SourceCheck):
                pending += 1
                if self.progress is not None and pending >= 256:
                    self.progress.add(progress.RECORDS_READ, pending)
                    pending = 0
            if isinstance(item, Reject):
                self.rejects.inc()
                yield beam.pvalue.TaggedOutput(REJECTS, item)
            elif isinstance(item, SourceCheck):
                self.source_problems.inc(len(item.problems))
                yield beam.pvalue.TaggedOutput(CHECKS, item)
            else:
                self.records.inc()
                yield item
        self.shards.inc()
        if self.progress is not None:
            self.progress.add(progress.RECORDS_READ, pending)
            self.progress.add(progress.SHARDS_READ)
            self.progress.flush()


class ReadShards(beam.PTransform):
    """InputShards (already discovered) -> records; shards are spread over workers first."""

    def __init__(self, config: ReadConfig, progress_dir: str | None = None):
        super().__init__()
        self.config = config
        self.progress_dir = progress_dir

    def expand(self, paths):
        return (
            paths
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShard"
            >> beam.ParDo(ReadShardFn(self.config, self.progress_dir)).with_outputs(REJECTS, CHECKS, main=RECORDS)
        )
