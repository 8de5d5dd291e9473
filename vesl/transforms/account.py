"""Accounting events of the run (``vesl.accounting``), keyed by input shard, and the progress count
of records that reached their end (written or rejected)."""

from __future__ import annotations

from collections.abc import Callable

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl import progress
from vesl.io.layout import shard_output_id
from vesl.transforms import METRICS_NAMESPACE


class ShardEventFn(beam.DoFn):
    """item -> (shard id, event). ``finished``: the items are records at their end (counted for
    progress: a Beam counter, and the local progress files when ``progress_dir`` is set)."""

    def __init__(
        self,
        event_fn: Callable,
        shard_of: Callable = lambda item: item.shard,
        finished: bool = False,
        progress_dir: str | None = None,
    ):
        self.event_fn = event_fn
        self.shard_of = shard_of
        self.finished = finished
        self.progress_dir = progress_dir
        self.counter = Metrics.counter(METRICS_NAMESPACE, progress.FINISHED) if finished else None
        self.pending = 0

    def setup(self):
        self.progress = progress.counters_for(self.progress_dir) if self.finished else None

    def process(self, item):
        if self.finished:
            self.counter.inc()
            self.pending += 1
            if self.progress is not None and self.pending >= 64:
                self._report()
        yield shard_output_id(self.shard_of(item)), self.event_fn(item)

    def _report(self):
        if self.progress is not None and self.pending:
            self.progress.add(progress.FINISHED, self.pending)
        self.pending = 0

    def finish_bundle(self):
        self._report()
        if self.progress is not None:
            self.progress.flush()
