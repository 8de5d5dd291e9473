"""Where an OWLv2 checkpoint comes from: a Hugging Face id, a local folder, or a remote folder
(gs://, s3://, ... anything fsspec opens), loaded with transformers' ``from_pretrained``.

A checkpoint that cannot be loaded raises ``CheckpointError`` with one line that says which and why;
VESL never substitutes another model. Remote folders are copied once into a local cache.

    python -m vesl.models.checkpoint check SPEC     # exit 0 when SPEC can be loaded (downloads it)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vesl.models.tiny import RANDOM_WEIGHTS_FLAG

CACHE_ENV = "VESL_CACHE"


class CheckpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: object  # transformers Owlv2ForObjectDetection
    tokenizer: object
    spec: str
    weights: str  # "pretrained" | "random weights"


def is_remote(spec: str) -> bool:
    return "://" in spec and not spec.startswith("file://")


def looks_local(spec: str) -> bool:
    """Paths start with /, . or ~ or exist; anything else without a scheme is a Hugging Face id."""
    return spec.startswith(("/", ".", "~")) or Path(spec).exists()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "vesl")) / "checkpoints"


def localize(spec: str, what: str = "OWLv2") -> str:
    """A local folder, an HF id (returned as is), or a remote folder copied into the cache."""
    if spec.startswith("file://"):
        spec = spec[len("file://") :]
    if not is_remote(spec):
        return spec
    import fsspec

    target = cache_dir() / hashlib.sha256(spec.encode()).hexdigest()[:16]
    done = target / ".vesl-complete"
    if done.exists():
        return str(target)
    fs, root = fsspec.core.url_to_fs(spec)
    if not fs.exists(f"{root.rstrip('/')}/config.json"):
        raise checkpoint_error(spec, "no config.json there", what)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent))
    fs.get(root.rstrip("/") + "/", str(staging), recursive=True)
    if target.exists():  # an earlier copy died before it was marked complete
        shutil.rmtree(target)
    staging.rename(target)  # atomic: a reader sees no folder or a whole one
    done.touch()
    return str(target)


def describe_weights(config) -> str:
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    return "random weights" if get(RANDOM_WEIGHTS_FLAG, False) else "pretrained"


def checkpoint_error(spec: str, why: str, what: str = "OWLv2") -> CheckpointError:
    return CheckpointError(f"cannot load {what} checkpoint {spec!r}: {why}")


@contextmanager
def one_line_errors(spec: str, what: str = "OWLv2"):
    """Whatever goes wrong while loading becomes one CheckpointError line naming the checkpoint."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        why = f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no message'}"
        raise checkpoint_error(spec, why, what) from exc


def checkpoint_path(spec: str, what: str = "OWLv2") -> str:
    """What ``from_pretrained`` gets: a checked local folder, a cached copy of a remote folder, or a
    Hugging Face id as it is."""
    if is_remote(spec):
        return localize(spec, what)
    path = localize(spec, what)
    if not looks_local(path):
        return path  # a Hugging Face id
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise checkpoint_error(spec, "no such folder", what)
    return str(folder)


def _check_model_type(spec: str, model_type: str | None, expected: str | None, what: str) -> None:
    if expected is not None and model_type != expected:
        raise checkpoint_error(spec, f"model_type is {model_type!r}, not {expected!r}", what)


def load_checkpoint(
    spec: str, device: str = "cpu", dtype: str = "float32", attn_implementation: str | None = None
) -> LoadedCheckpoint:
    import torch
    from transformers import AutoTokenizer, Owlv2ForObjectDetection
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with one_line_errors(spec):
        path = checkpoint_path(spec)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = Owlv2ForObjectDetection.from_pretrained(path, dtype=getattr(torch, dtype), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    _check_model_type(spec, model.config.model_type, "owlv2", "OWLv2")
    model.to(device).eval()
    return LoadedCheckpoint(model, tokenizer, spec, describe_weights(model.config))


def preflight(spec: str, model_type: str | None = "owlv2", what: str = "OWLv2") -> str:
    """Cheap driver-side check before a pipeline is built: the checkpoint's config can be read (and,
    with ``model_type``, is of that type). Returns the weights description ("pretrained" / "random
    weights")."""
    with one_line_errors(spec, what):
        if is_remote(spec):
            import fsspec

            fs, root = fsspec.core.url_to_fs(spec)
            with fs.open(f"{root.rstrip('/')}/config.json") as f:
                config = json.load(f)
            found = config.get("model_type")
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(checkpoint_path(spec, what))
            found = config.model_type
    _check_model_type(spec, found, model_type, what)
    return describe_weights(config)


def hub_reachable(host: str = "huggingface.co", timeout_s: float = 5.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "check":
        print("usage: python -m vesl.models.checkpoint check SPEC", file=sys.stderr)
        return 2
    spec = args[1]
    hub_id = not is_remote(spec) and not looks_local(spec)
    if hub_id and not os.environ.get("HF_HUB_OFFLINE") and not hub_reachable():
        # Fail in seconds rather than after the hub client's retries; a cached copy still works.
        # (huggingface_hub reads HF_HUB_OFFLINE when first imported, which has not happened yet.)
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            loaded = load_checkpoint(spec)
        except CheckpointError:
            print(
                f"cannot load OWLv2 checkpoint {spec!r}: huggingface.co is not reachable and it is not cached",
                file=sys.stderr,
            )
            return 1
        print(f"{spec}: loadable from the local cache ({loaded.weights})")
        return 0
    try:
        loaded = load_checkpoint(spec)
    except CheckpointError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{spec}: loadable ({loaded.weights})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
