"""DetectRegions: records with phrases -> (record, Detections), through Beam's RunInference.

- DecodeImagesFn (CPU, parallel): bytes -> validated RGB as displayed -> letterboxed uint8 input;
  bad images are rejected here, so a model batch never fails because of one image. With decoding on
  the device (``image_decoder``), JPEGs only have their header checked here and go to the model
  encoded; one that no decoder can read after all comes back as a ``DecodeFailure`` and is rejected
  at the decode stage (``UnwrapDetectionsFn``).
- Images with no phrase skip the model (they are written with zero regions).
- RunInference with ``Owlv2ModelHandler`` (ours): batches of ``DetectorInput``; one model per worker
  process, or one per machine with ``share_model_across_processes`` (GPU workers). A batch whose
  inference raises is rejected record by record (``inference_error``), so counts still balance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from vesl.config import DetectConfig
from vesl.models.owlv2 import Owlv2Detector, resolve_device
from vesl.records import Detections, DetectorInput, ImageRecord, Reason, Reject, Stage
from vesl.threads import apply_cpu_threads
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS, freeze_loaded_objects, reject_failed_batch
from vesl.vision.decode import ImageDecodeError
from vesl.vision.device_decode import DecodeFailure, resolve_image_decoder
from vesl.vision.prepare import prepare_image


class DecodeImagesFn(beam.DoFn):
    def __init__(self, config: DetectConfig, keep_image_bytes: bool):
        self.config = config
        self.keep_image_bytes = keep_image_bytes
        self.rejected = Metrics.counter(METRICS_NAMESPACE, "images_rejected_at_decode")
        self.decode_on_device = False

    def setup(self):
        # Resolved as the model handler resolves it, on the same machine: both see the same GPU.
        device = resolve_device(self.config.device)
        self.decode_on_device = resolve_image_decoder(self.config.image_decoder, device) == "nvimgcodec"

    def process(self, record: ImageRecord):
        try:
            yield prepare_image(record, self.config, self.keep_image_bytes, self.decode_on_device)
        except ImageDecodeError as exc:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(record, Stage.DECODE, exc.reason, exc.detail))


class Owlv2ModelHandler(ModelHandler[DetectorInput, Detections, Owlv2Detector]):
    """Our RunInference handler: loads the checkpoint with from_pretrained on the worker and runs
    ``Owlv2Detector.detect`` on each batch."""

    def __init__(self, config: DetectConfig, min_score: float, cpu_threads: int | None = None):
        # Explicit batch size (Beam's adaptive batching would start at 1 and feed the GPU a new shape
        # on every step); a bundle's last, partial batch is padded by the detector when compiled.
        super().__init__(
            min_batch_size=config.batch_size,
            max_batch_size=config.batch_size,
            large_model=config.share_model_across_processes,
            model_copies=config.model_copies if config.share_model_across_processes else None,
        )
        self.config = config
        self.min_score = min_score
        self.cpu_threads = cpu_threads

    def load_model(self) -> Owlv2Detector:
        apply_cpu_threads(self.cpu_threads)
        detector = Owlv2Detector.from_config(self.config)
        freeze_loaded_objects()
        return detector

    def run_inference(
        self, batch: Sequence[DetectorInput], model: Owlv2Detector, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        apply_cpu_threads(self.cpu_threads)
        detections = model.detect(
            [item.image for item in batch],
            [(item.content_width, item.content_height) for item in batch],
            [[p.text for p in item.record.phrases] for item in batch],
            min_score=self.min_score,
            max_candidates=self.config.max_candidates,
            query_buckets=self.config.query_buckets,
        )
        return [PredictionResult(item, det) for item, det in zip(batch, detections, strict=True)]

    def get_num_bytes(self, batch: Sequence[DetectorInput]) -> int:
        return sum(item.image.nbytes for item in batch)

    def get_metrics_namespace(self) -> str:
        return "vesl_owlv2"


class UnwrapDetectionsFn(beam.DoFn):
    """PredictionResult -> (record, Detections); an image the detector could not decode on its device
    (nor on the CPU after) -> a decode-stage reject."""

    def __init__(self):
        self.rejected = Metrics.counter(METRICS_NAMESPACE, "images_rejected_at_decode")

    def process(self, result: PredictionResult):
        record = result.example.record
        if isinstance(result.inference, DecodeFailure):
            self.rejected.inc()
            failure = result.inference
            yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(record, Stage.DECODE, failure.reason, failure.detail))
        else:
            yield record, result.inference


class DetectRegions(beam.PTransform):
    """``cpu_threads``: PyTorch's intra-op threads in each worker process (``vesl.threads``; None: default)."""

    def __init__(self, config: DetectConfig, min_score: float, keep_image_bytes: bool, cpu_threads: int | None = None):
        super().__init__()
        self.config = config
        self.min_score = min_score
        self.keep_image_bytes = keep_image_bytes
        self.cpu_threads = cpu_threads

    def expand(self, records):
        decoded = records | "DecodeImages" >> beam.ParDo(
            DecodeImagesFn(self.config, self.keep_image_bytes)
        ).with_outputs(REJECTS, main=RECORDS)
        with_queries, without_queries = decoded[RECORDS] | "SplitByQueries" >> beam.Partition(
            lambda item, _: 0 if item.record.phrases else 1, 2
        )
        handler = Owlv2ModelHandler(self.config, self.min_score, self.cpu_threads)
        inferred, failed = with_queries | "OWLv2" >> RunInference(handler).with_exception_handling()
        detected, undecodable = inferred | "Unwrap" >> beam.ParDo(UnwrapDetectionsFn()).with_outputs(
            REJECTS, main=RECORDS
        )
        skipped = without_queries | "NoQueries" >> beam.Map(lambda item: (item.record, Detections.empty()))
        failed_rejects = failed.failed_inferences | "RejectFailedBatches" >> beam.FlatMap(
            reject_failed_batch, Stage.DETECT, Reason.INFERENCE_ERROR, lambda item: item.record
        )
        return {
            RECORDS: (detected, skipped) | "MergeDetections" >> beam.Flatten(),
            REJECTS: (decoded[REJECTS], undecodable, failed_rejects) | "MergeRejects" >> beam.Flatten(),
        }
