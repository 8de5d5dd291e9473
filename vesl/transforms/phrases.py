"""ExtractPhrases: records -> records with ``phrases`` (batched, so spaCy can pipe)."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics

from vesl.config import PhraseConfig
from vesl.records import Reason, Reject, Stage
from vesl.text.phrases import PhraseExtractor
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS, freeze_loaded_objects


class ExtractPhrasesFn(beam.DoFn):
    def __init__(self, config: PhraseConfig, caption_use: str | None = None):
        self.config = config
        self.caption_use = caption_use  # None: alt-text only (no captioning stage)
        self.extractor: PhraseExtractor | None = None
        self.phrases = Metrics.counter(METRICS_NAMESPACE, "phrases")
        self.no_phrase = Metrics.counter(METRICS_NAMESPACE, "captions_without_phrases")

    def setup(self):
        self.extractor = PhraseExtractor(self.config).setup()
        freeze_loaded_objects()

    def process(self, batch):
        try:
            phrase_lists = self._extract(batch)
        except Exception:
            # One caption broke the batch: parse one at a time so only that record is rejected.
            yield from self._one_by_one(batch)
            return
        for record, phrases in zip(batch, phrase_lists, strict=True):
            yield self._with_phrases(record, phrases)

    def _one_by_one(self, batch):
        for record in batch:
            try:
                phrases = self._extract([record])[0]
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
                yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(record, Stage.PHRASES, Reason.PARSER_ERROR, detail))
                continue
            yield self._with_phrases(record, phrases)

    def _extract(self, records):
        if self.caption_use is None:
            return self.extractor.extract_many([r.caption for r in records])
        return self.extractor.extract_for_records(
            [r.caption for r in records], [r.generated_caption for r in records], self.caption_use
        )

    def _with_phrases(self, record, phrases):
        self.phrases.inc(len(phrases))
        if not phrases:
            self.no_phrase.inc()
        return dataclasses.replace(record, phrases=tuple(phrases))


class ExtractPhrases(beam.PTransform):
    def __init__(self, config: PhraseConfig, caption_use: str | None = None, batch_size: int = 128):
        super().__init__()
        self.config = config
        self.caption_use = caption_use
        self.batch_size = batch_size

    def expand(self, records):
        return (
            records
            # A fixed batch: BatchElements' adaptive sizing starts at 1 and stays near ~14 captions, where
            # spaCy costs ~15% more CPU per caption than at 64-256 (docs/benchmarks.md, "Scale").
            | "Batch" >> beam.BatchElements(min_batch_size=self.batch_size, max_batch_size=self.batch_size)
            | "Parse" >> beam.ParDo(ExtractPhrasesFn(self.config, self.caption_use)).with_outputs(REJECTS, main=RECORDS)
        )
