"""FindDuplicateKeys: the keys pass of duplicate detection (``vesl.dedup``).

Each input shard's keys are read (``ReadKeysFn``: the shard's records exactly as the main read will
yield them, with their bytes dropped at once), grouped by key with the keys of shards committed by
earlier runs, and every losing occurrence becomes a ``Duplicate`` keyed by the shard that holds it.
``ReadShards`` joins them to their shard and rejects those records as it reads them. Only keys and
positions go through the shuffle; no record and no image byte does.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl.config import ReadConfig
from vesl.dedup import duplicates_of
from vesl.io.layout import OutputLayout
from vesl.io.outputs import OutputFolder, iter_rejects
from vesl.io.readers import read_shard
from vesl.records import ImageRecord, InputShard, Stage
from vesl.transforms import METRICS_NAMESPACE


class ReadKeysFn(beam.DoFn):
    """InputShard -> (key, (shard path, index, False)) for every record it holds."""

    def __init__(self, config: ReadConfig):
        self.config = config

    def process(self, shard: InputShard):
        # The data alone: img2dataset's sidecars add rejects and checks after the records, never records;
        # and no image bytes where the format lets them be skipped.
        data_only = dataclasses.replace(shard, metadata=None, stats=None)
        for item in read_shard(data_only, self.config, keys_only=True):
            if isinstance(item, ImageRecord):
                yield item.key, (item.shard, item.index, False)


class PickFirstFn(beam.DoFn):
    """(key, occurrences) -> (losing shard path, Duplicate) for every occurrence but the first."""

    def __init__(self):
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_keys")

    def process(self, keyed):
        key, occurrences = keyed
        for duplicate in duplicates_of(key, occurrences):
            self.duplicates.inc()
            yield duplicate.shard, duplicate


class ReadCommittedKeysFn(beam.DoFn):
    """Keys that reached the dedup stage in a committed shard: its written rows (read back by the first
    output sink, in ``vesl.io.sinks.SINKS`` order, whose file the shard has) and its rejects from any
    stage after reading."""

    def __init__(self, layout: OutputLayout):
        self.layout = layout

    def process(self, shard_id: str):
        from vesl.io.sinks import SINKS

        committed = OutputFolder(self.layout.root).shard(shard_id)
        shard, files = committed.input, committed.files
        sink = next((sink for name, sink in SINKS.items() if name in files), None)
        if sink is not None:
            for key, index in sink.read_keys(files[sink.name]):
                yield key, (shard, index, True)
        for reject in iter_rejects(files["rejects"]):
            if reject["stage"] != Stage.READ:
                yield reject["key"], (shard, reject["index"], True)


class FindDuplicateKeys(beam.PTransform):
    """(InputShards, ids of committed shards whose keys count) -> (shard path, Duplicate): the verdicts
    that ``ReadShards`` applies. A bare PCollection of InputShards: no committed shard."""

    def __init__(self, config: ReadConfig, layout: OutputLayout | None = None):
        super().__init__()
        self.config = config
        self.layout = layout

    def expand(self, inputs):
        shards, committed_ids = inputs if isinstance(inputs, tuple) else (inputs, None)
        keyed = shards | "SpreadShards" >> beam.Reshuffle() | "ReadKeys" >> beam.ParDo(ReadKeysFn(self.config))
        if committed_ids is not None:
            ghosts = committed_ids | "ReadCommittedKeys" >> beam.ParDo(ReadCommittedKeysFn(self.layout))
            keyed = (keyed, ghosts) | "WithCommittedKeys" >> beam.Flatten()
        return keyed | "GroupKeys" >> beam.GroupByKey() | "PickFirst" >> beam.ParDo(PickFirstFn())
