"""The one RunInference handler of the detection stage, for every detector backend: Beam's
``ModelHandler`` (load on the worker, run a batch) over the ``vesl.models.detector`` interface."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from vesl.config import DetectConfig
from vesl.models.backends import detector_backend
from vesl.models.detector import Detector
from vesl.records import Detections, DetectorInput


class DetectorModelHandler(ModelHandler[DetectorInput, Detections, Detector]):
    """Loads ``config.backend``'s detector on the worker and runs its ``detect`` on each batch.
    ``cpu_threads``: the framework's intra-op threads in each worker process (``vesl.threads``)."""

    def __init__(self, config: DetectConfig, min_score: float, cpu_threads: int | None = None):
        # Explicit batch size (Beam's adaptive batching would start at 1 and feed the accelerator a new
        # shape on every step); a backend pads a bundle's last, partial batch where its compiler needs it.
        super().__init__(
            min_batch_size=config.batch_size,
            max_batch_size=config.batch_size,
            large_model=config.share_model_across_processes,
            model_copies=config.model_copies if config.share_model_across_processes else None,
        )
        self.config = config
        self.min_score = min_score
        self.cpu_threads = cpu_threads

    def load_model(self) -> Detector:
        from vesl.transforms import freeze_loaded_objects

        detector = detector_backend(self.config.backend).load(self.config, self.cpu_threads)
        freeze_loaded_objects()
        return detector

    def run_inference(
        self, batch: Sequence[DetectorInput], model: Detector, inference_args: dict[str, Any] | None = None
    ) -> Iterable[PredictionResult]:
        results = model.detect(batch, self.min_score)
        return [PredictionResult(item, result) for item, result in zip(batch, results, strict=True)]

    def get_num_bytes(self, batch: Sequence[DetectorInput]) -> int:
        return sum(item.image.nbytes for item in batch)

    def get_metrics_namespace(self) -> str:
        return f"vesl_detector_{self.config.backend}"
