"""The ``jax`` detector backend: OWLv2 in JAX (``vesl.models.owlv2_jax``, run by
``vesl.models.jax_detector``) on TPUs, GPUs or the CPU, from the same checkpoint folders as the torch
backend (Hugging Face safetensors + config). JAX is an optional extra (``pip install 'vesl[jax]'``;
``vesl[tpu]`` for TPU hosts); this module imports it only when a model is loaded or checked.

``--device`` picks XLA's platform: ``auto`` (JAX's default: a TPU or GPU when present, else the CPU),
``cpu``, ``tpu`` or ``gpu`` (``cuda`` is read as ``gpu``). Asking for a platform JAX does not see is a
one-line error, never a silent fall back to the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vesl.config import parse_bool
from vesl.models.detector import BackendFlag, BackendUnavailable, CoreDetector, DetectorBackend

PLATFORMS = {"auto": None, "cpu": "cpu", "tpu": "tpu", "gpu": "gpu", "cuda": "gpu"}
PRECISIONS = ("default", "high", "highest")
INSTALL = "install the jax extra: pip install 'vesl[jax]' (on TPU hosts 'vesl[tpu]')"


@dataclass(frozen=True)
class JaxOptions:
    # A folder (local or gs://) where XLA keeps the programs it compiles: the next worker or run with the
    # same model, shapes and JAX version reads them instead of compiling again (minutes for L/14 on TPUs).
    compilation_cache: str | None = None
    # jax_default_matmul_precision for the model's matmuls: on TPUs, "default" runs float32 matmuls as
    # bf16 passes; "highest" gives float32 results (equality checks)
    matmul_precision: str = "default"
    # spread each batch over every device of the platform on the host (4- and 8-chip TPU hosts)
    all_devices: bool = True

    def validate(self) -> list[str]:
        if self.matmul_precision not in PRECISIONS:
            return [f"matmul_precision must be one of {', '.join(PRECISIONS)}"]
        return []


def jax_devices(device: str, all_devices: bool = True) -> list:
    """The devices the model runs on; BackendUnavailable (one line) for JAX missing or a platform it lacks."""
    if device not in PLATFORMS:
        raise BackendUnavailable(f"the jax backend's --device is one of {', '.join(PLATFORMS)}, got {device!r}")
    try:
        import jax
    except ImportError:
        raise BackendUnavailable(f"--detector_backend jax needs JAX, which is not installed: {INSTALL}") from None
    platform = PLATFORMS[device]
    try:
        devices = jax.devices(platform) if platform else jax.devices()
    except RuntimeError:
        seen = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise BackendUnavailable(
            f"--device {device} was asked for but JAX sees no {platform.upper()} (it sees: {seen}); "
            f"on a {platform.upper()} host {INSTALL}"
        ) from None
    return devices if all_devices else devices[:1]


def check_cache_folder(folder: str | None) -> None:
    """JAX reads and writes a remote compilation cache through etils.epath (without it, only local paths)."""
    if folder and "://" in folder:
        try:
            from etils import epath  # noqa: F401
        except ImportError:
            raise BackendUnavailable(
                f"--jax_compilation_cache {folder} needs etils[epath] (and gcsfs for gs://): pip install 'vesl[tpu]'"
            ) from None


def checkpoint_folder(spec: str) -> Path:
    """A local folder holding the checkpoint's files: a folder as it is, a remote one copied into VESL's
    cache, a Hugging Face id from the hub's cache (downloaded once)."""
    from vesl.models.checkpoint import checkpoint_path, looks_local, one_line_errors

    with one_line_errors(spec):
        path = checkpoint_path(spec)
        if looks_local(path):
            return Path(path).expanduser()
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))


def load_jax_detector(config):
    """The checkpoint of ``config`` (a DetectConfig) as a warmed JaxOwlv2Detector."""
    import jax
    from transformers import AutoTokenizer, Owlv2Config

    from vesl.models import owlv2_jax as owl

    options = config.options
    devices = jax_devices(config.device, options.all_devices)
    check_cache_folder(options.compilation_cache)
    if options.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", options.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    folder = checkpoint_folder(config.checkpoint)
    tensors = owl.read_safetensors(folder)
    hf_config, tokenizer = Owlv2Config.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    detector = detector_from_tensors(tensors, hf_config, tokenizer, config, devices)
    detector.warm()
    return detector


def detector_from_tensors(tensors: dict, hf_config, tokenizer, config, devices):
    """A (cold) JaxOwlv2Detector over a checkpoint's tensors (numpy, by their Hugging Face names), for a
    DetectConfig's settings. Benchmarks build one from a torch model's ``state_dict`` (the same weights)."""
    from vesl.models import owlv2_jax as owl
    from vesl.models.clip_tokenizer import CLIP_MAX_LENGTH
    from vesl.models.jax_detector import JaxOwlv2Detector

    vision, text = hf_config.vision_config, hf_config.text_config
    if config.image_size % vision.patch_size:
        raise ValueError(f"image_size {config.image_size} is not a multiple of the patch size {vision.patch_size}")
    shape = owl.Owlv2Shape(
        vision=owl.TowerShape(vision.num_attention_heads, vision.layer_norm_eps, vision.hidden_act),
        text=owl.TowerShape(text.num_attention_heads, text.layer_norm_eps, text.hidden_act),
        patch=vision.patch_size,
        image_size=config.image_size,
        native_size=vision.image_size,
        text_length=min(CLIP_MAX_LENGTH, text.max_position_embeddings),
    )
    position = tensors["owlv2.vision_model.embeddings.position_embedding.weight"]
    table = owl.position_table(position, shape.patch, shape.image_size, shape.native_size, config.position_embedding)
    params = owl.params_from_tensors(tensors, table, owl.box_bias(shape.grid))
    return JaxOwlv2Detector(
        params,
        tokenizer,
        shape,
        dtype=config.dtype,
        pad_value=config.pad_value,
        query_buckets=config.query_buckets,
        max_batch=config.batch_size,
        max_candidates=config.max_candidates,
        text_cache_size=config.text_cache_size,
        devices=devices,
        matmul_precision=config.options.matmul_precision,
    )


class JaxBackend(DetectorBackend):
    name = "jax"
    options = JaxOptions
    flags = (
        BackendFlag("jax_compilation_cache", "compilation_cache", str, "folder (local or gs://) of compiled programs"),
        BackendFlag("jax_matmul_precision", "matmul_precision", str, "default | high | highest (TPU float32 matmuls)"),
        BackendFlag("jax_all_devices", "all_devices", parse_bool, "shard each batch over every device of the host"),
    )

    def load(self, config, cpu_threads: int | None = None) -> CoreDetector:
        return CoreDetector(load_jax_detector(config), config)

    def check(self, config) -> None:
        jax_devices(config.device, config.options.all_devices)
        check_cache_folder(config.options.compilation_cache)

    def describe(self, config) -> str:
        precision = config.options.matmul_precision
        return f"jax, {config.dtype}" + ("" if precision == "default" else f", matmul precision {precision}")
