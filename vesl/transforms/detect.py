"""DetectRegions: records with phrases -> (record, Detections), through Beam's RunInference.

- DecodeImagesFn (CPU, parallel): bytes -> validated RGB as displayed -> letterboxed uint8 input;
  bad images are rejected here, so a model batch never fails because of one image. Where the detector
  backend decodes JPEGs on its device (``DetectorBackend.decodes_on_device``), JPEGs only have their
  header checked here and go to the model encoded; one that no decoder can read after all comes back
  as a ``DecodeFailure`` and is rejected at the decode stage (``UnwrapDetectionsFn``).
- Images with no phrase skip the model (they are written with zero regions).
- RunInference with ``DetectorModelHandler`` (``vesl.models.handler``): batches of ``DetectorInput`` to
  the configured backend; one model per worker process, or one per machine with
  ``share_model_across_processes`` (GPU workers). A batch whose inference raises is rejected record by
  record (``inference_error``), so counts still balance.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import PredictionResult, RunInference

from vesl.config import DetectConfig
from vesl.context import WorkerSettings
from vesl.models.backends import detector_backend
from vesl.models.handler import DetectorModelHandler
from vesl.records import Detections, ImageRecord, Reason, Reject, Stage
from vesl.transforms import METRICS_NAMESPACE, RECORDS, REJECTS, reject_failed_batch
from vesl.vision.decode import ImageDecodeError
from vesl.vision.device_decode import DecodeFailure
from vesl.vision.prepare import prepare_image


class DecodeImagesFn(beam.DoFn):
    def __init__(self, config: DetectConfig, keep_image_bytes: bool):
        self.config = config
        self.keep_image_bytes = keep_image_bytes
        self.rejected = Metrics.counter(METRICS_NAMESPACE, "images_rejected_at_decode")
        self.decode_on_device = False

    def setup(self):
        self.decode_on_device = detector_backend(self.config.backend).decodes_on_device(self.config)

    def process(self, record: ImageRecord):
        try:
            yield prepare_image(record, self.config, self.keep_image_bytes, self.decode_on_device)
        except ImageDecodeError as exc:
            self.rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTS, Reject.of(record, Stage.DECODE, exc.reason, exc.detail))


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
    """Records with phrases -> (record, Detections) + rejects, through the configured detector backend."""

    def __init__(
        self, config: DetectConfig, min_score: float, keep_image_bytes: bool, workers: WorkerSettings = WorkerSettings()
    ):
        super().__init__()
        self.config = config
        self.min_score = min_score
        self.keep_image_bytes = keep_image_bytes
        self.cpu_threads = workers.cpu_threads

    def expand(self, records):
        decoded = records | "DecodeImages" >> beam.ParDo(
            DecodeImagesFn(self.config, self.keep_image_bytes)
        ).with_outputs(REJECTS, main=RECORDS)
        with_queries, without_queries = decoded[RECORDS] | "SplitByQueries" >> beam.Partition(
            lambda item, _: 0 if item.record.phrases else 1, 2
        )
        handler = DetectorModelHandler(self.config, self.min_score, self.cpu_threads)
        inferred, failed = with_queries | "Detector" >> RunInference(handler).with_exception_handling()
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
