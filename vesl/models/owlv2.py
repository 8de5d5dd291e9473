"""The OWLv2 detector core: prepared images + per-image phrase lists -> candidate boxes.

It runs transformers' ``Owlv2ForObjectDetection`` module by module, as its ``forward`` does, with
three changes that make batches correct and cheaper:
- every image's query list is padded to a bucket size (``query_buckets``) so a batch has one shape,
  and padded queries are masked in the class head, so they can never win a box (the model's own mask,
  ``input_ids[..., 0] > 0``, is always true: NOTES.md section 3);
- each distinct phrase of a batch is embedded once, and embeddings of recent phrases are kept on the
  device (``text_cache_size``): captions repeat the same few thousand phrases;
- post-processing happens on the device: per box the best real query, its score and the box's
  objectness; only boxes above ``min_score``, best ``max_candidates`` first, leave the device;
- images may arrive encoded (``EncodedImage``) and are then decoded and letterboxed on the device as
  one batch (``vesl.vision.device_decode``); an image no decoder reads gets a ``DecodeFailure`` in
  place of its Detections, and the rest of the batch goes on.
Boxes come back in the stored convention (``vesl.vision.geometry``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from vesl.config import DetectConfig
from vesl.models.clip_tokenizer import CLIP_MAX_LENGTH
from vesl.models.devices import resolve_device
from vesl.models.torch_backend import TorchOptions
from vesl.records import Detections
from vesl.vision.device_decode import DecodeFailure, DeviceImageDecoder, EncodedImage, resolve_image_decoder
from vesl.vision.geometry import detector_to_stored

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# OWLv2 pads each image to a square, after rescaling to [0, 1], with this grey: 0.5 as scenic (its home)
# does in its inference notebook and training preprocessing; transformers' Owlv2ImageProcessor pads with
# 0.0. Declared once, as DetectConfig's default; the detector's other keyword defaults are the config's
# too (the torch backend's own: TorchOptions'), so a detector built without a config computes as one built
# from the default config.
PAD_VALUE: float = DetectConfig.pad_value


def batch_bucket(n_images: int, max_batch: int) -> int:
    """The batch size a compiled image tower runs at: the next power of two, at most ``max_batch``
    (so it sees at most log2(max_batch) + 2 shapes, whatever sizes Beam's batches have)."""
    bucket = 1
    while bucket < n_images:
        bucket *= 2
    return max(n_images, min(bucket, max_batch))


def query_bucket(n: int, buckets: Sequence[int], multiple: int = 1) -> int:
    """The smallest bucket that holds ``n`` queries (or images: the jax backend's batches); beyond the
    largest, ``n`` rounded up to ``multiple``."""
    return next((bucket for bucket in buckets if bucket >= n), -(-n // multiple) * multiple)


POSITION_EMBEDDINGS = ("interpolate", "truncate")


def truncate_position_embedding(embeddings_module, height: int, width: int):
    """Position embeddings for a smaller input by keeping the top-left ``height/p x width/p`` part of
    the checkpoint's grid (no resampling), plus the class token's. Replaces transformers' bicubic
    interpolation when ``position_embedding="truncate"``."""
    import torch

    weight = embeddings_module.position_embedding.weight  # [1 + G*G, D]
    grid = round((weight.shape[0] - 1) ** 0.5)
    rows, cols = height // embeddings_module.patch_size, width // embeddings_module.patch_size
    if rows > grid or cols > grid:
        raise ValueError(f"cannot truncate a {grid}x{grid} position grid to {rows}x{cols}")
    patches = weight[1:].reshape(grid, grid, -1)[:rows, :cols].reshape(rows * cols, -1)
    return torch.cat([weight[:1], patches]).unsqueeze(0)


def kept_detections(
    scores, labels, objectness, boxes, content: tuple[int, int], image_size: int, min_score: float
) -> Detections:
    """One image's top candidates (detector-input cxcywh boxes) above ``min_score``, as stored boxes: what
    every backend returns, so their numerics meet here."""
    keep = scores > min_score
    stored = detector_to_stored(boxes[keep], (content[0] / image_size, content[1] / image_size))
    return Detections(
        stored, scores[keep].astype(np.float32), objectness[keep].astype(np.float32), labels[keep].astype(np.int32)
    )


class Owlv2Detector:
    def __init__(
        self,
        model,
        tokenizer,
        device: str,
        image_size: int,
        dtype: str = DetectConfig.dtype,
        *,
        position_embedding: str = "interpolate",
        text_cache_size: int = DetectConfig.text_cache_size,
        compile_model: bool = TorchOptions.compile,
        compile_mode: str = TorchOptions.compile_mode,
        image_decoder: DeviceImageDecoder | None = None,
        max_batch_size: int | None = None,
        pad_value: float = PAD_VALUE,
    ):
        import torch

        self.pad_value = pad_value
        self.model = model
        self.image_decoder = image_decoder  # for EncodedImage inputs
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.image_size = image_size
        vision = model.config.vision_config
        if image_size % vision.patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {vision.patch_size}")
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding must be one of {POSITION_EMBEDDINGS}, got {position_embedding!r}")
        # At another size than the checkpoint's, position embeddings are adapted (and box biases are
        # computed for the new grid): interpolated (transformers) or truncated (scenic).
        self.interpolate_pos_encoding = image_size != vision.image_size
        # Truncation only exists for smaller inputs (scenic supports no larger ones); a larger input
        # is interpolated whatever the setting.
        if self.interpolate_pos_encoding and position_embedding == "truncate" and image_size < vision.image_size:
            embeddings = model.owlv2.vision_model.embeddings
            embeddings.interpolate_pos_encoding = lambda emb, h, w: truncate_position_embedding(embeddings, h, w)
        self.position_embedding = position_embedding
        self.text_length = min(CLIP_MAX_LENGTH, model.config.text_config.max_position_embeddings)
        self._mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1)
        self.text_cache_size = text_cache_size
        self._text_cache: OrderedDict[str, object] = OrderedDict()
        self._image_heads = (
            torch.compile(self._image_heads_eager, dynamic=False, mode=compile_mode)
            if compile_model
            else self._image_heads_eager
        )
        # A compiled tower (and each CUDA graph) is specialised to one batch size: partial batches are
        # padded up to a power-of-two bucket so a run compiles a handful of shapes, not one per size.
        self.pad_batches_to = max_batch_size if compile_model and max_batch_size else None
        if self.pad_batches_to:
            import torch._dynamo

            shapes = self.pad_batches_to.bit_length() + 2
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, shapes)

    @classmethod
    def from_config(cls, config) -> Owlv2Detector:
        """Load ``config.checkpoint`` (a DetectConfig with the torch backend's options) on its device."""
        from vesl.models.checkpoint import load_checkpoint

        device = resolve_device(config.device)
        attn = config.options.attn_implementation
        loaded = load_checkpoint(config.checkpoint, device=device, dtype=config.dtype, attn_implementation=attn)
        return cls.for_model(loaded.model, loaded.tokenizer, device, config)

    @classmethod
    def for_model(cls, model, tokenizer, device: str, config) -> Owlv2Detector:
        """A detector over an already built model, with a DetectConfig's settings (the torch backend's)."""
        options = config.options
        image_decoder = None
        if resolve_image_decoder(options.image_decoder, device) == "nvimgcodec":
            image_decoder = DeviceImageDecoder(device, config.max_image_pixels, config.alpha_background)
        return cls(
            model,
            tokenizer,
            device,
            config.image_size,
            config.dtype,
            position_embedding=config.position_embedding,
            text_cache_size=config.text_cache_size,
            compile_model=options.compile,
            compile_mode=options.compile_mode,
            image_decoder=image_decoder,
            max_batch_size=config.batch_size,
            pad_value=config.pad_value,
        )

    # -- inputs -----------------------------------------------------------------------------
    def pixel_values(self, pixels: Sequence, content_sizes: Sequence[tuple[int, int]]):
        """Letterboxed images -> normalized NCHW tensor, padding = ``pad_value``. Each image is uint8
        ``size x size x 3`` (CPU-decoded) or a float ``3 x size x size`` tensor in [0, 1] already on
        the device (decoded there)."""
        import torch

        size = self.image_size
        host_rows = [i for i, p in enumerate(pixels) if isinstance(p, np.ndarray)]
        if len(host_rows) == len(pixels):
            x = self._upload([pixels[i] for i in host_rows])
        else:
            device_rows = [i for i, p in enumerate(pixels) if not isinstance(p, np.ndarray)]
            x = torch.empty((len(pixels), 3, size, size), dtype=torch.float32, device=self.device)
            if host_rows:
                x[torch.tensor(host_rows, device=self.device)] = self._upload([pixels[i] for i in host_rows])
            x[torch.tensor(device_rows, device=self.device)] = torch.stack([pixels[i] for i in device_rows])
        sizes = torch.tensor(content_sizes, device=self.device)
        cols = torch.arange(size, device=self.device).view(1, 1, 1, size)
        rows = torch.arange(size, device=self.device).view(1, 1, size, 1)
        outside = (cols >= sizes[:, 0].view(-1, 1, 1, 1)) | (rows >= sizes[:, 1].view(-1, 1, 1, 1))
        x = torch.where(outside, torch.full_like(x, self.pad_value), x)
        return ((x - self._mean) / self._std).to(self.dtype)

    def _upload(self, pixels: Sequence[np.ndarray]):
        """uint8 HWC arrays -> float NCHW in [0, 1] on the device."""
        import torch

        host = torch.from_numpy(np.stack(pixels))
        if self.device.type == "cuda":
            host = host.pin_memory()  # page-locked: the copy below runs asynchronously
        return host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)

    def prepare_batch(self, images: Sequence, content_sizes: Sequence[tuple[int, int]]):
        """Images (letterboxed uint8 arrays or ``EncodedImage``) -> (pixel values, content sizes,
        {index: DecodeFailure}). A failed image keeps its place in the batch (fixed shapes) as padding;
        its results are replaced by the failure."""
        encoded_rows = [i for i, image in enumerate(images) if isinstance(image, EncodedImage)]
        if not encoded_rows:
            return self.pixel_values(images, content_sizes), list(content_sizes), {}
        if self.image_decoder is None:
            raise ValueError("encoded images need a detector built with an image decoder (image_decoder=nvimgcodec)")
        decoded = self.image_decoder.letterboxed([images[i] for i in encoded_rows], self.image_size)
        pixels, sizes = list(images), list(content_sizes)
        failures: dict[int, DecodeFailure] = {}
        blank = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        for i, result in zip(encoded_rows, decoded, strict=True):
            if isinstance(result, DecodeFailure):
                failures[i] = result
                pixels[i], sizes[i] = blank, (1, 1)
            else:
                pixels[i], sizes[i] = result.pixels, (result.content_width, result.content_height)
        return self.pixel_values(pixels, sizes), sizes, failures

    def _embed_phrases(self, phrases: Sequence[str]):
        tokens = self.tokenizer(
            list(phrases), padding="max_length", max_length=self.text_length, truncation=True, return_tensors="pt"
        )
        features = self.model.owlv2.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        ).pooler_output
        return features / features.norm(p=2, dim=-1, keepdim=True)

    def text_embeddings(self, phrases: Sequence[str]):
        """Normalized query embeddings of distinct phrases, as Owlv2Model.forward returns them; recent
        phrases come from the cache."""
        import torch

        if self.text_cache_size <= 0:
            return self._embed_phrases(phrases)
        cache = self._text_cache
        missing = [p for p in phrases if p not in cache]
        if missing:
            for phrase, embedding in zip(missing, self._embed_phrases(missing)):
                cache[phrase] = embedding
        rows = []
        for phrase in phrases:
            cache.move_to_end(phrase)
            rows.append(cache[phrase])
        while len(cache) > self.text_cache_size:
            cache.popitem(last=False)
        return torch.stack(rows)

    # -- forward + post-processing ----------------------------------------------------------
    def query_inputs(self, queries: Sequence[Sequence[str]], query_buckets: Sequence[int] = ()):
        """Per-image phrase lists -> (distinct phrases, [B, Q] index into them, [B, Q] mask of real
        queries), Q being the bucket that holds the longest list."""
        width = query_bucket(max(len(q) for q in queries), query_buckets)
        distinct: dict[str, int] = {}
        index = np.zeros((len(queries), width), np.int64)
        mask = np.zeros((len(queries), width), bool)
        for i, phrase_list in enumerate(queries):
            for j, phrase in enumerate(phrase_list):
                index[i, j] = distinct.setdefault(phrase, len(distinct))
                mask[i, j] = True
        return list(distinct), index, mask

    def _image_heads_eager(self, pixel_values):
        """Image-only part of the model (the expensive part): patch features, boxes, objectness."""
        import torch

        feature_map, _ = self.model.image_embedder(
            pixel_values=pixel_values, interpolate_pos_encoding=self.interpolate_pos_encoding
        )
        b, h, w, d = feature_map.shape
        image_feats = feature_map.reshape(b, h * w, d)
        boxes = self.model.box_predictor(image_feats, feature_map, self.interpolate_pos_encoding).float()
        objectness = torch.sigmoid(self.model.objectness_predictor(image_feats).float())
        return image_feats, boxes, objectness

    def _image_heads_padded(self, pixel_values):
        """The image heads at the batch's bucket size (when compiled), cut back to the batch."""
        import torch

        n = pixel_values.shape[0]
        padded = batch_bucket(n, self.pad_batches_to) if self.pad_batches_to else n
        if padded == n:
            return self._image_heads(pixel_values)
        filler = pixel_values.new_zeros((padded - n, *pixel_values.shape[1:]))
        outputs = self._image_heads(torch.cat([pixel_values, filler]))
        return tuple(t[:n] for t in outputs)

    def forward(self, pixel_values, phrases: Sequence[str], index: np.ndarray, mask: np.ndarray):
        """The model's heads on a batch: logits [B, P, Q] (float32, padded queries at the dtype's
        minimum), boxes [B, P, 4] (cxcywh on the padded square) and objectness [B, P] (probability)."""
        import torch

        text = self.text_embeddings(phrases)
        query_embeds = text[torch.from_numpy(index).to(self.device)]
        query_mask = torch.from_numpy(mask).to(self.device)
        image_feats, boxes, objectness = self._image_heads_padded(pixel_values)
        logits, _ = self.model.class_predictor(image_feats, query_embeds.to(image_feats.dtype), query_mask)
        return logits.float(), boxes, objectness

    def detect(
        self,
        images: Sequence,
        content_sizes: Sequence[tuple[int, int]],
        queries: Sequence[Sequence[str]],
        min_score: float,
        max_candidates: int,
        query_buckets: Sequence[int] = (),
    ) -> list[Detections | DecodeFailure]:
        """Images (letterboxed uint8 arrays, or ``EncodedImage`` to decode on the device) with their
        content sizes and phrase lists -> per image its Detections (or DecodeFailure)."""
        import torch

        if not images:
            return []
        if any(len(q) == 0 for q in queries):
            raise ValueError("every image needs at least one query (route query-less images around the detector)")
        phrases, index, mask = self.query_inputs(queries, query_buckets)
        with torch.inference_mode():
            pixel_values, content_sizes, failures = self.prepare_batch(images, content_sizes)
            logits, boxes, objectness = self.forward(pixel_values, phrases, index, mask)
            best_score, best_query = torch.sigmoid(logits).max(dim=-1)  # masked queries score 0
            k = min(max_candidates, best_score.shape[1])
            top_score, top_idx = best_score.topk(k, dim=1)  # sorted, best first
            top_query = best_query.gather(1, top_idx)
            top_obj = objectness.gather(1, top_idx)
            top_boxes = boxes.gather(1, top_idx.unsqueeze(-1).expand(-1, -1, 4))
            scores, labels, obj, box = (t.cpu().numpy() for t in (top_score, top_query, top_obj, top_boxes))
        return [
            failures[i]
            if i in failures
            else kept_detections(scores[i], labels[i], obj[i], box[i], content, self.image_size, min_score)
            for i, content in enumerate(content_sizes)
        ]
