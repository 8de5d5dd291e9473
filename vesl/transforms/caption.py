"""CaptionImages (optional): records -> records with ``generated_caption``, through RunInference.

- DecodeForCaptionFn (CPU): bytes -> validated RGB as displayed (``vesl.vision.decode``); bad images
  are rejected here (stage ``caption``, the decoder's reason), so a model batch never fails on one.
- RunInference with ``CaptionerModelHandler`` (ours), batched; a batch whose generation raises is
  rejected record by record (``captioner_error``), so counts still balance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from vesl.config import CaptionConfig, DetectConfig
from vesl.context import WorkerSettings
from vesl.models.captioner import Captioner
from vesl.records import ImageRecord, Reason, Reject, Stage
from vesl.threads import apply_cpu_threads
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS, reject_failed_batch
from vesl.vision.decode import ImageDecodeError, decode_image


class DecodeForCaptionFn(beam.DoFn):
    def __init__(self, max_image_pixels: int, alpha_background: tuple[int, int, int]):
        self.max_image_pixels = max_image_pixels
        self.alpha_background = alpha_background
        self.rejected = Metrics.counter(METRICS_NAMESPACE, "images_rejected_at_caption")

    def process(self, record: ImageRecord):
        try:
            image = decode_image(record.image_bytes, self.max_image_pixels, self.alpha_background).image
        except ImageDecodeError as exc:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(record, Stage.CAPTION, exc.reason, exc.detail))
            return
        yield record, image


class CaptionerModelHandler(ModelHandler[tuple, str, Captioner]):
    def __init__(self, config: CaptionConfig, cpu_threads: int | None = None):
        super().__init__(
            min_batch_size=1, max_batch_size=config.batch_size, large_model=config.share_model_across_processes
        )
        self.config = config
        self.cpu_threads = cpu_threads

    def load_model(self) -> Captioner:
        apply_cpu_threads(self.cpu_threads)
        return Captioner.from_config(self.config)

    def run_inference(
        self, batch: Sequence[tuple], model: Captioner, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        apply_cpu_threads(self.cpu_threads)
        captions = model.caption([image for _, image in batch])
        return [PredictionResult(record, caption) for (record, _), caption in zip(batch, captions, strict=True)]

    def get_num_bytes(self, batch: Sequence[tuple]) -> int:
        return sum(image.width * image.height * 3 for _, image in batch)

    def get_metrics_namespace(self) -> str:
        return "vesl_captioner"


class CaptionImages(beam.PTransform):
    """Records -> records with ``generated_caption`` (+ rejects), through the captioner's RunInference."""

    def __init__(self, config: CaptionConfig, detect: DetectConfig, workers: WorkerSettings = WorkerSettings()):
        super().__init__()
        self.config = config
        self.detect = detect
        self.cpu_threads = workers.cpu_threads

    def expand(self, records):
        decoded = records | "DecodeImages" >> beam.ParDo(
            DecodeForCaptionFn(self.detect.max_image_pixels, self.detect.alpha_background)
        ).with_outputs(REJECTS, main=RECORDS)
        captioned, failed = (
            decoded[RECORDS]
            | "Captioner"
            >> RunInference(CaptionerModelHandler(self.config, self.cpu_threads)).with_exception_handling()
        )
        with_captions = captioned | "AttachCaptions" >> beam.Map(
            lambda result: dataclasses.replace(result.example, generated_caption=result.inference)
        )
        failed_rejects = failed.failed_inferences | "RejectFailedBatches" >> beam.FlatMap(
            reject_failed_batch, Stage.CAPTION, Reason.CAPTIONER_ERROR, lambda item: item[0]
        )
        return {
            RECORDS: with_captions,
            REJECTS: (decoded[REJECTS], failed_rejects) | "MergeRejects" >> beam.Flatten(),
        }
