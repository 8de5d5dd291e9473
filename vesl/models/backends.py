"""The registry of detector backends (``--detector_backend NAME``). To add one: a module with its
``DetectorBackend`` subclass (``vesl.models.detector``), and one line here. A backend's module must
import no framework at module level: the launcher and the config read this registry on machines
that may not have it."""

from __future__ import annotations

from vesl.models.detector import DetectorBackend
from vesl.models.jax_backend import JaxBackend
from vesl.models.torch_backend import TorchBackend

BACKENDS: dict[str, DetectorBackend] = {backend.name: backend for backend in (TorchBackend(), JaxBackend())}


def detector_backend(name: str) -> DetectorBackend:
    """The registered backend called ``name``; ValueError naming the known ones otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown detector backend {name!r}; known: {', '.join(sorted(BACKENDS))}") from None
