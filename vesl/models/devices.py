"""Which PyTorch device a model runs on: used by the detector's torch backend, the captioner and the
launcher's checks, none of which needs the others' modules to ask."""

from __future__ import annotations


class DeviceUnavailable(RuntimeError):
    """A device was asked for that this machine does not have."""


def resolve_device(requested: str) -> str:
    """ "auto" -> cuda when present, else cpu. Asking for cuda without a GPU fails loudly: a GPU run
    must never go on silently on the CPU."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {requested!r} was asked for but torch sees no CUDA GPU")
    return requested
