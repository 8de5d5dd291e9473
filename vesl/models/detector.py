"""The detector seam: what a detector backend provides, as Beam's ModelHandler splits a model into
"load" and "run a batch". The detection stage (``vesl.transforms.detect``) and the generic handler
(``vesl.models.handler``) know only this interface; backends are registered by name in
``vesl.models.backends`` and chosen with ``--detector_backend``.

A backend is a ``DetectorBackend``: its name, the dataclass of its own settings (``options``: what only
it understands, e.g. the torch backend's ``compile``; the settings every backend shares are
``vesl.config.DetectConfig``'s), its command-line flags for those, and
- ``load(config, cpu_threads) -> Detector`` on the worker (a ``Detector`` runs batches:
  ``detect(batch, min_score)`` gives per image its ``Detections``, or a ``DecodeFailure`` for an image
  it could not decode, in the batch's order);
- ``weights(config)`` on the launcher, before any work: the checkpoint can be loaded (one-line
  ``CheckpointError`` otherwise), and whether its weights are pretrained or random;
- ``check(config)`` on the launcher of a local run, before any work: what this machine must have for
  the settings (a GPU asked for, an optional decoder installed), as a ``ValueError`` of one line;
- ``decodes_on_device(config)`` on the worker: whether JPEGs reach ``detect`` encoded
  (``vesl.vision.device_decode.EncodedImage``) instead of decoded on the CPU;
- ``describe(config)``: its name and numerics, for the run's provenance.

No Beam and no framework import here: the launcher, the config and the tests import this module
without loading a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from vesl.records import DetectorInput
from vesl.threads import apply_cpu_threads


class BackendUnavailable(ValueError):
    """What a backend needs for the settings asked for is not on this machine (one line, naming the fix)."""


class Detector(Protocol):
    """A loaded detector. ``detect`` gets images with at least one query each (query-less images never
    reach a detector) and returns one result per image: its candidate boxes above ``min_score``, best
    first, at most ``config.max_candidates``, boxes in the stored convention; or the image's
    ``vesl.vision.device_decode.DecodeFailure``."""

    def detect(self, batch: Sequence[DetectorInput], min_score: float) -> list[Any]: ...


def batch_parts(batch: Sequence[DetectorInput]) -> tuple[list, list[tuple[int, int]], list[list[str]]]:
    """A batch as OWLv2 cores take it: (images, content sizes, each image's phrase texts)."""
    return (
        [item.image for item in batch],
        [(item.content_width, item.content_height) for item in batch],
        [[p.text for p in item.record.phrases] for item in batch],
    )


class CoreDetector:
    """An OWLv2 core (``detect(images, content sizes, phrase lists, min_score, max_candidates,
    query_buckets)``: the torch ``Owlv2Detector``, the jax ``JaxOwlv2Detector``) behind the ``Detector``
    interface. With ``cpu_threads``, PyTorch is held to the worker's thread budget before every batch
    (with OpenMP the count is per thread, and Beam runs bundles in other threads than the one that loaded
    the model: ``vesl.threads``)."""

    def __init__(self, core, config, cpu_threads: int | None = None):
        self.core = core
        self.config = config
        self.cpu_threads = cpu_threads

    def detect(self, batch: Sequence[DetectorInput], min_score: float) -> list:
        apply_cpu_threads(self.cpu_threads)
        images, sizes, queries = batch_parts(batch)
        return self.core.detect(
            images,
            sizes,
            queries,
            min_score=min_score,
            max_candidates=self.config.max_candidates,
            query_buckets=self.config.query_buckets,
        )


@dataclass(frozen=True)
class NoOptions:
    """The settings of a backend that has none of its own."""

    def validate(self) -> list[str]:
        return []


@dataclass(frozen=True)
class BackendFlag:
    """A command-line flag for one of a backend's own settings (``--FLAG VALUE`` -> ``options.FIELD``)."""

    flag: str
    field: str
    parse: Any  # str -> value
    help: str


class DetectorBackend:
    """Base of every backend; a subclass sets ``name`` and ``options`` (a frozen dataclass with a
    ``validate() -> list[str]`` of errors) and overrides ``load``, and whatever else differs."""

    name: ClassVar[str] = ""
    options: ClassVar[type] = NoOptions
    flags: ClassVar[tuple[BackendFlag, ...]] = ()

    def load(self, config, cpu_threads: int | None = None) -> Detector:
        raise NotImplementedError

    def weights(self, config) -> str:
        """``pretrained`` or ``random weights``: what the checkpoint holds (``vesl.models.checkpoint``)."""
        from vesl.models.checkpoint import preflight

        return preflight(config.checkpoint)

    def check(self, config) -> None:
        return None

    def decodes_on_device(self, config) -> bool:
        return False

    def describe(self, config) -> str:
        return f"{self.name} backend, {config.dtype}"
