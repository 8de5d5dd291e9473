"""Decode and letterbox JPEGs on the detector's device (``image_decoder="nvimgcodec"``).

End to end, the host side (decode, resize) limits OWLv2 throughput, not the model (NOTES.md section
5). With this path the CPU only parses headers (``probe_image``: validation, size, EXIF orientation);
the encoded bytes go to the detector, which decodes a whole batch at once with NVIDIA nvImageCodec
(nvJPEG on a GPU; its libjpeg-turbo backend on a CPU, bit-identical to Pillow, which is how the tests
run it), applies the orientation and letterboxes with PyTorch on the device. Besides CPU time it
saves transfer: a JPEG is ~10x smaller than the letterboxed array it replaces, which matters when the
model runs in another process (``share_model_across_processes``) or over PCIe.

What goes to the device: JPEGs whose header says RGB (YCbCr) or grayscale. Everything else (PNG,
WebP, GIF, CMYK JPEGs, 16-bit or transparent images) takes the CPU path of ``decode.decode_image`` as
before, so compositing and bit-depth rules stay in one place. An image the device decoder fails on,
or decodes to another size than its header said, is decoded again on the CPU by ``decode_image``; if
that fails too, the image is rejected with the CPU decoder's reason (``DecodeFailure``), never
dropped.

Resizing (``letterbox_tensor``): Pillow's BILINEAR as the CPU path uses it, reproduced with
``torch.nn.functional.interpolate(antialias=True)`` in Pillow's two passes, each rounded to 8 bits;
values stay within 2 grey levels of Pillow's (tests bound it). On a GPU, nvJPEG's IDCT and chroma
upsampling add small differences of their own to libjpeg-turbo's.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vesl.config import DetectConfig
from vesl.vision.decode import ImageDecodeError, ImageHeader, decode_image
from vesl.vision.geometry import content_size, letterbox

IMAGE_DECODERS = ("auto", "pil", "nvimgcodec")
# Pillow's format / mode names of what nvJPEG decodes to RGB as Pillow does.
DEVICE_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: multi-picture JPEG (phones); first frame
DEVICE_MODES = frozenset({"RGB", "L"})


def decodes_on_device(header: ImageHeader) -> bool:
    return header.format in DEVICE_FORMATS and header.mode in DEVICE_MODES


def nvimgcodec_installed() -> bool:
    """Whether nvImageCodec is installed, without importing it (importing loads every codec extension
    and prints a line for each whose CUDA library is missing: nvJPEG 2000 and nvTIFF, which VESL does
    not use, and nvJPEG itself on a machine without a GPU)."""
    try:
        return importlib.util.find_spec("nvidia.nvimgcodec") is not None
    except ImportError:  # no "nvidia" namespace package at all
        return False


def nvimgcodec_module():
    """The nvImageCodec module, or None when it is not installed."""
    if not nvimgcodec_installed():
        return None
    os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "0")  # keeps the library's own ERROR lines out of the logs
    from nvidia import nvimgcodec

    return nvimgcodec


def resolve_image_decoder(requested: str, detector_device: str) -> str:
    """ "auto" -> "nvimgcodec" when the detector runs on a GPU and nvImageCodec is installed, else
    "pil". Asking for nvimgcodec without it installed fails loudly (it runs on a CPU too)."""
    if requested not in IMAGE_DECODERS:
        raise ValueError(f"image_decoder must be one of {IMAGE_DECODERS}, got {requested!r}")
    if requested == "pil":
        return "pil"
    available = nvimgcodec_installed()
    if requested == "nvimgcodec":
        if not available:
            raise ImportError(
                "image_decoder='nvimgcodec' needs NVIDIA nvImageCodec: pip install nvidia-nvimgcodec-cu12 "
                "(and nvidia-nvjpeg-cu12 for GPU decoding), or use --image_decoder pil"
            )
        return "nvimgcodec"
    return "nvimgcodec" if available and detector_device.startswith("cuda") else "pil"


def _cuda_tensor(image, device):
    """A decoded nvImageCodec image in device memory as a tensor, without a copy: through DLPack (the
    tensor keeps the image's buffer alive), or the CUDA array interface with a copy to own the data."""
    import torch

    try:
        return torch.from_dlpack(image)
    except (TypeError, AttributeError, RuntimeError):
        return torch.as_tensor(image, device=device).clone()


# -- orientation and letterbox on tensors --------------------------------------------------------


def orient(image, orientation: int):
    """Apply an EXIF orientation (1-8) to an ``H x W x C`` tensor, as ``PIL.ImageOps.exif_transpose``."""
    if orientation == 2:
        return image.flip(1)
    if orientation == 3:
        return image.flip(0).flip(1)
    if orientation == 4:
        return image.flip(0)
    if orientation == 5:
        return image.transpose(0, 1)
    if orientation == 6:
        return image.transpose(0, 1).flip(1)
    if orientation == 7:
        return image.transpose(0, 1).flip(0).flip(1)
    if orientation == 8:
        return image.transpose(0, 1).flip(0)
    return image


def letterbox_tensor(image, size: int):
    """``H x W x 3`` uint8 tensor -> (``3 x size x size`` float32 in [0, 1] with the image resized into
    the top-left corner and zeros elsewhere, content width, content height): ``geometry.letterbox`` on
    the tensor's device.

    Resized as Pillow does it, to stay within a grey level of the CPU path: antialiased bilinear
    (triangle filter widened by the scale), horizontal pass then vertical pass, each rounded to 8
    bits. On COCO photos at 448 px, 96% of values equal Pillow's and the mean difference is 0.04 grey
    levels (one fused float pass: 82% and 0.29)."""
    import torch

    height, width = int(image.shape[0]), int(image.shape[1])
    cw, ch = content_size(width, height, size)
    chw = image.permute(2, 0, 1).unsqueeze(0).float()
    if cw != width:
        chw = _resize_pass(chw, height, cw)
    if ch != height:
        chw = _resize_pass(chw, ch, cw)
    canvas = torch.zeros((3, size, size), dtype=torch.float32, device=image.device)
    canvas[:, :ch, :cw] = chw[0].div_(255.0)
    return canvas, cw, ch


def _resize_pass(x, out_height: int, out_width: int):
    """One antialiased bilinear pass (one axis changes), rounded to 8 bits as Pillow stores it."""
    import torch.nn.functional as F

    # PyTorch's antialiased kernel returns one value for a whole column when the output is one pixel
    # wide and taller than that (torch 2.13, CPU); resizing the transposed image avoids that path.
    transposed = out_width == 1 and out_height > 1
    if transposed:
        x = x.transpose(2, 3)
    target = (out_width, out_height) if transposed else (out_height, out_width)
    x = F.interpolate(x, size=target, mode="bilinear", antialias=True, align_corners=False)
    if transposed:
        x = x.transpose(2, 3)
    return x.round_().clamp_(0.0, 255.0)


def letterbox_on_cpu_as_tensor(data: bytes, size: int, max_pixels: int, alpha_background, device):
    """The CPU path (Pillow decode + letterbox) for one image, as the device path's output type."""
    import torch

    decoded = decode_image(data, max_pixels, alpha_background)
    pixels, cw, ch = letterbox(decoded.image, size)
    tensor = torch.from_numpy(pixels).to(device).permute(2, 0, 1).float().div_(255.0)
    return tensor, cw, ch


# Full-size pixels decoded at once (x3 bytes): 256 MP = 768 MB of device memory at most.
DECODE_CHUNK_PIXELS = 256 * 2**20


def pixel_bounded_chunks(encoded: Sequence[EncodedImage], max_pixels: int) -> list[list[EncodedImage]]:
    """Consecutive runs of images whose pixel counts add up to at most ``max_pixels`` (an image
    larger than that alone is a run of its own)."""
    chunks: list[list[EncodedImage]] = []
    total = 0
    for item in encoded:
        pixels = item.header.width * item.header.height
        if not chunks or total + pixels > max_pixels:
            chunks.append([])
            total = 0
        chunks[-1].append(item)
        total += pixels
    return chunks


@dataclass(frozen=True)
class EncodedImage:
    """An image for the detector to decode on its device, with its probed header."""

    data: bytes
    header: ImageHeader

    @property
    def nbytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class DecodeFailure:
    """An image neither the device nor the CPU decoder could read: a detector result in place of
    Detections (plain data, so it pickles across Beam's process boundaries)."""

    reason: str
    detail: str


@dataclass(frozen=True)
class DeviceLetterbox:
    pixels: object  # 3 x size x size float32 tensor in [0, 1] on the device
    content_width: int
    content_height: int
    on_cpu: bool  # decoded by the CPU fallback


class DeviceImageDecoder:
    """Batched JPEG decode + orientation + letterbox on ``device`` (cuda: nvJPEG; cpu: libjpeg-turbo),
    with the CPU decoder as per-image fallback."""

    def __init__(
        self,
        device: str,
        max_pixels: int,
        alpha_background: tuple[int, int, int] = DetectConfig.alpha_background,
        cpu_threads: int = 0,
    ):
        import torch

        nvimgcodec = nvimgcodec_module()
        if nvimgcodec is None:
            resolve_image_decoder("nvimgcodec", device)  # raises with the install hint
        self.device = torch.device(device)
        self.max_pixels = max_pixels
        self.alpha_background = alpha_background
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._decoder = nvimgcodec.Decoder(device_id=index, max_num_cpu_threads=cpu_threads)
        else:
            self._decoder = nvimgcodec.Decoder(
                device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
                max_num_cpu_threads=cpu_threads,
                backends=[nvimgcodec.Backend(nvimgcodec.CPU_ONLY)],
            )
        # VESL applies the orientation itself, from the same header Pillow reads (EXIF and XMP), so
        # both paths agree on what "as displayed" means.
        self._params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB)
        self._lock = threading.Lock()  # one decoder object; Beam may call from several threads
        self.fallbacks = 0  # images the device decoder failed on (diagnostics, bench)

    def _decode_batch(self, encoded: Sequence[bytes]) -> list:
        """nvImageCodec over the batch: per image an ``H x W x 3`` uint8 tensor on the device (as
        stored, no orientation) or None where it failed."""
        import torch

        with self._lock:
            if self.device.type == "cuda":
                stream = torch.cuda.current_stream(self.device).cuda_stream
                images = self._decoder.decode(list(encoded), params=self._params, cuda_stream=stream)
            else:
                images = self._decoder.decode(list(encoded), params=self._params)
        out = []
        for image in images:
            if image is None:
                out.append(None)
            elif self.device.type == "cuda":
                out.append(_cuda_tensor(image, self.device))
            else:
                out.append(torch.from_numpy(np.asarray(image.cpu())))
        return out

    def letterboxed(self, encoded: Sequence[EncodedImage], size: int) -> list[DeviceLetterbox | DecodeFailure]:
        """Encoded images -> letterboxed tensors on the device, or why not. Decoded in chunks of at
        most ``DECODE_CHUNK_PIXELS`` full-size pixels, so a batch of huge photos cannot exhaust the
        device's memory: only the letterboxed results are kept."""
        results: list[DeviceLetterbox | DecodeFailure] = []
        for chunk in pixel_bounded_chunks(encoded, DECODE_CHUNK_PIXELS):
            results += self._letterbox_chunk(chunk, size)
        return results

    def _letterbox_chunk(self, encoded: Sequence[EncodedImage], size: int) -> list[DeviceLetterbox | DecodeFailure]:
        try:
            decoded = self._decode_batch([item.data for item in encoded])
        except Exception:  # a batch-level failure of the library: every image goes the CPU way
            decoded = [None] * len(encoded)
        results: list[DeviceLetterbox | DecodeFailure] = []
        for item, image in zip(encoded, decoded, strict=True):
            data, header = item.data, item.header
            if image is not None and image.ndim == 3 and image.shape[2] == 3:
                image = orient(image, header.orientation)
                if (int(image.shape[1]), int(image.shape[0])) == (header.width, header.height):
                    results.append(DeviceLetterbox(*letterbox_tensor(image, size), on_cpu=False))
                    continue
            self.fallbacks += 1
            try:
                tensor, cw, ch = letterbox_on_cpu_as_tensor(
                    data, size, self.max_pixels, self.alpha_background, self.device
                )
            except ImageDecodeError as exc:
                results.append(DecodeFailure(exc.reason, exc.detail))
                continue
            results.append(DeviceLetterbox(tensor, cw, ch, on_cpu=True))
        return results
