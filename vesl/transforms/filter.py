"""FilterRegions: (record, Detections) -> LabeledImage (main) + image-level Reject (``rejects``)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl.config import FilterConfig
from vesl.filtering.rules import filter_detections, image_reject_reason
from vesl.records import Reject, Stage
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS


class FilterRegionsFn(beam.DoFn):
    def __init__(self, config: FilterConfig):
        self.config = config
        self.regions = Metrics.counter(METRICS_NAMESPACE, "regions_kept")
        self.dropped = Metrics.counter(METRICS_NAMESPACE, "candidates_dropped")

    def process(self, pair):
        record, detections = pair
        labeled = filter_detections(record, detections, self.config)
        self.regions.inc(len(labeled.regions))
        self.dropped.inc(sum(n for _, n in labeled.region_drops))
        rejected = image_reject_reason(labeled, self.config)
        if rejected is None:
            yield labeled
        else:
            yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(record, Stage.FILTER, *rejected))


class FilterRegions(beam.PTransform):
    def __init__(self, config: FilterConfig):
        super().__init__()
        self.config = config

    def expand(self, pairs):
        return pairs | "Filter" >> beam.ParDo(FilterRegionsFn(self.config)).with_outputs(REJECTS, main=RECORDS)
