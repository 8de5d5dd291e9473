"""ReadShards: (InputShards, their duplicate-key verdicts) -> ImageRecord (main) + Reject (``rejects``:
read-stage rejects and the ``duplicate_key`` rejects of ``vesl.dedup``) + SourceCheck (``checks``:
what img2dataset says it wrote, against what the shard held)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl import progress
from vesl.config import ReadConfig
from vesl.context import WorkerSettings
from vesl.dedup import losers_by_index, reject_duplicates
from vesl.io.readers import read_shard
from vesl.records import Reject, SourceCheck, Stage
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
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_keys_rejected")

    def setup(self):
        self.progress = progress.counters_for(self.progress_dir)

    def process(self, joined):
        _, grouped = joined
        losers = losers_by_index(grouped["duplicates"])
        for shard in sorted(set(grouped["shard"]), key=lambda s: (s.format, s.metadata or "", s.stats or "")):
            yield from self._read(shard, losers)

    def _read(self, shard, losers):
        pending = 0
        for item in reject_duplicates(read_shard(shard, self.config), losers):
            if not isinstance(item, SourceCheck):
                pending += 1
                if self.progress is not None and pending >= 256:
                    self.progress.add(progress.RECORDS_READ, pending)
                    pending = 0
            if isinstance(item, Reject):
                (self.duplicates if item.stage == Stage.DEDUP else self.rejects).inc()
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
    """(InputShards (already discovered), (shard path, Duplicate) verdicts) -> records. The join by
    shard path also spreads the shards over workers."""

    def __init__(self, config: ReadConfig, workers: WorkerSettings = WorkerSettings()):
        super().__init__()
        self.config = config
        self.progress_dir = workers.progress_dir

    def expand(self, inputs):
        shards, duplicates = inputs
        joined = {
            "shard": shards | "ByPath" >> beam.Map(lambda shard: (shard.path, shard)),
            "duplicates": duplicates,
        }
        return (
            joined
            | "JoinDuplicates" >> beam.CoGroupByKey()
            | "ReadShard"
            >> beam.ParDo(ReadShardFn(self.config, self.progress_dir)).with_outputs(REJECTS, CHECKS, main=RECORDS)
        )
