"""The ``torch`` detector backend: OWLv2 in PyTorch through transformers' ``Owlv2ForObjectDetection``
(``vesl.models.owlv2``), on CUDA GPUs or the CPU, with JPEGs optionally decoded on the GPU
(nvImageCodec). Its own settings are ``TorchOptions``; the shared ones are ``DetectConfig``'s."""

from __future__ import annotations

from dataclasses import dataclass

from vesl.config import parse_bool
from vesl.models.detector import BackendFlag, BackendUnavailable, CoreDetector, DetectorBackend

ATTENTION = ("sdpa", "eager", "flash_attention_2")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class TorchOptions:
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (transformers' attention kernels)
    compile: bool = False  # torch.compile the image tower and heads (GPU; first batches compile)
    # torch.compile mode: "default", "reduce-overhead" (CUDA graphs: one per batch shape; VESL's fixed
    # image size and query buckets keep the shapes few) or "max-autotune"
    compile_mode: str = "default"
    # Where JPEGs are decoded and letterboxed: "pil" (CPU workers), "nvimgcodec" (on the detector's
    # device, batched: nvJPEG on a GPU), or "auto" (nvimgcodec when the detector runs on a GPU and
    # nvImageCodec is installed). Other formats are always decoded on the CPU.
    image_decoder: str = "auto"

    def validate(self) -> list[str]:
        from vesl.vision.device_decode import IMAGE_DECODERS

        errors = []
        if self.attn_implementation not in ATTENTION:
            errors.append(f"attn_implementation must be one of {', '.join(ATTENTION)}")
        if self.compile_mode not in COMPILE_MODES:
            errors.append(f"compile_mode must be one of {', '.join(COMPILE_MODES)}")
        if self.image_decoder not in IMAGE_DECODERS:
            errors.append(f"image_decoder must be one of {', '.join(IMAGE_DECODERS)}")
        return errors


class TorchBackend(DetectorBackend):
    name = "torch"
    options = TorchOptions
    flags = (
        BackendFlag("attn_implementation", "attn_implementation", str, "sdpa | eager | flash_attention_2"),
        BackendFlag("compile", "compile", parse_bool, "torch.compile the image tower and heads"),
        BackendFlag("compile_mode", "compile_mode", str, "default | reduce-overhead (CUDA graphs) | max-autotune"),
        BackendFlag("image_decoder", "image_decoder", str, "auto | pil (CPU) | nvimgcodec (JPEGs on the device)"),
    )

    def load(self, config, cpu_threads: int | None = None) -> CoreDetector:
        from vesl.models.owlv2 import Owlv2Detector
        from vesl.threads import apply_cpu_threads

        apply_cpu_threads(cpu_threads)
        return CoreDetector(Owlv2Detector.from_config(config), config, cpu_threads)

    def check(self, config) -> None:
        from vesl.models.devices import DeviceUnavailable, resolve_device
        from vesl.vision.device_decode import resolve_image_decoder

        try:  # a local run that asked for a GPU fails here, not in every worker
            if config.device.startswith("cuda"):
                resolve_device(config.device)
            # --image_decoder nvimgcodec without nvImageCodec installed: said before any work
            resolve_image_decoder(config.options.image_decoder, config.device)
        except (DeviceUnavailable, ImportError) as exc:
            raise BackendUnavailable(str(exc)) from None

    def decodes_on_device(self, config) -> bool:
        from vesl.models.devices import resolve_device
        from vesl.vision.device_decode import resolve_image_decoder

        # Resolved as the loaded detector resolves it, on the same machine: both see the same GPU.
        return resolve_image_decoder(config.options.image_decoder, resolve_device(config.device)) == "nvimgcodec"

    def describe(self, config) -> str:
        options = config.options
        compiled = f", torch.compile {options.compile_mode}" if options.compile else ""
        return f"torch, {config.dtype}, {options.attn_implementation} attention{compiled}"
