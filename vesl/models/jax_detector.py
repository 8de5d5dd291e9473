"""The JAX detector: ``vesl.models.owlv2_jax``'s forward run in static shapes, on one host's devices.

- Shapes: a batch is padded to a batch bucket (powers of two up to ``batch_size``, multiples of the
  device count), query lists to the config's ``query_buckets``, new phrases to text buckets; every
  bucket is compiled once, at load (``warm``), so a run compiles nothing after its first batch.
  ``traces`` counts the programs traced, per function and shape.
- Three programs: the image tower and the box / objectness heads (per batch bucket, the expensive
  one), the text tower writing new phrases into the embedding table (per text bucket), and the class
  head with the top-k post-processing (per batch x query bucket).
- The per-phrase text embeddings live on the device in one table (least recently used phrases leave
  it first); a batch sends only its new phrases' token ids and, per image, slot numbers.
- Only the ``max_candidates`` best patches per image leave the device; the threshold and the box
  conversion to the stored convention run on the host, as in the torch backend.
- Several devices (a 4- or 8-chip TPU host): one process shards each batch over all of them
  (``jax.sharding``: the batch axis split, weights and the phrase table replicated).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vesl.config import DetectConfig
from vesl.models import owlv2_jax as owl
from vesl.models.owlv2 import kept_detections, query_bucket
from vesl.records import Detections

MIN_TEXT_BUCKET = 8


def batch_buckets(max_batch: int, devices: int) -> tuple[int, ...]:
    """Batch sizes a run compiles: powers of two from the device count up to ``max_batch`` (rounded up to
    a multiple of the device count, so every device gets the same share)."""
    top = -(-max_batch // devices) * devices
    sizes, size = [], devices
    while size < top:
        sizes.append(size)
        size *= 2
    return (*sizes, top)


def text_buckets(most: int) -> tuple[int, ...]:
    sizes, size = [], MIN_TEXT_BUCKET
    while size < most:
        sizes.append(size)
        size *= 2
    return (*sizes, size)


class PhraseSlots:
    """Which phrase sits in which row of the device's embedding table: least recently used first out,
    never one the current batch needs. Row ``capacity`` is scratch (padding writes land there)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.rows: OrderedDict[str, int] = OrderedDict()
        self.free = list(range(capacity - 1, -1, -1))

    def place(self, phrases: Sequence[str]) -> tuple[dict[str, int], list[str]]:
        """Rows of the batch's distinct phrases, and those new to the table (to embed)."""
        wanted = set(phrases)
        new = [p for p in phrases if p not in self.rows]
        for phrase in new:
            if not self.free:
                victim = next(p for p in self.rows if p not in wanted)
                self.free.append(self.rows.pop(victim))
            self.rows[phrase] = self.free.pop()
        for phrase in phrases:
            self.rows.move_to_end(phrase)
        return {p: self.rows[p] for p in phrases}, new


class JaxOwlv2Detector:
    def __init__(
        self,
        params: dict,
        tokenizer,
        shape: owl.Owlv2Shape,
        *,
        dtype: str = DetectConfig.dtype,
        pad_value: float = DetectConfig.pad_value,
        query_buckets: Sequence[int] = DetectConfig.query_buckets,
        max_batch: int = 8,
        max_candidates: int = DetectConfig.max_candidates,
        text_cache_size: int = DetectConfig.text_cache_size,
        devices: Sequence | None = None,
        matmul_precision: str = "default",
    ):
        self.shape, self.tokenizer, self.pad_value = shape, tokenizer, pad_value
        self.dtype = jnp.dtype(dtype)
        self.precision = matmul_precision
        self.devices = list(devices or jax.devices())
        self.mesh = Mesh(np.array(self.devices), ("batch",))
        self.replicated, self.batched = NamedSharding(self.mesh, P()), NamedSharding(self.mesh, P("batch"))
        self.params = jax.device_put(owl.cast_params(params, self.dtype), self.replicated)
        self.query_buckets = tuple(query_buckets)
        self.batch_buckets = batch_buckets(max_batch, len(self.devices))
        self.max_candidates = max_candidates
        most_phrases = self.batch_buckets[-1] * max(self.query_buckets)
        self.text_buckets = text_buckets(most_phrases)
        self.slots = PhraseSlots(max(text_cache_size, most_phrases))
        width = params["text"]["proj"].shape[1]
        self.table = jax.device_put(jnp.zeros((self.slots.capacity + 1, width), jnp.float32), self.replicated)
        self.traces: Counter[tuple] = Counter()
        self.compile_seconds: dict[tuple, float] = {}
        self._image = jax.jit(self._image_program)
        self._store = jax.jit(self._store_program, donate_argnums=1)
        self._head = jax.jit(self._head_program, static_argnames="k")

    @property
    def image_size(self) -> int:
        return self.shape.image_size

    # -- the three programs (their Python runs once per shape: when traced) ------------------------
    def _image_program(self, params, pixels, content_wh):
        self.traces[("image", pixels.shape[0])] += 1
        with jax.default_matmul_precision(self.precision):
            x = owl.normalized_pixels(pixels, content_wh, self.shape, self.pad_value, self.dtype)
            return owl.image_features(params, x, self.shape)

    def _store_program(self, params, table, ids, attention_mask, rows):
        self.traces[("text", ids.shape[0])] += 1
        with jax.default_matmul_precision(self.precision):
            return table.at[rows].set(owl.text_features(params, ids, attention_mask, self.shape))

    def _head_program(self, params, feats, boxes, objectness, table, index, mask, k: int):
        self.traces[("head", feats.shape[0], index.shape[1], k)] += 1
        with jax.default_matmul_precision(self.precision):
            logits = owl.class_logits(params, feats, table[index], mask)
            return owl.top_candidates(logits, boxes, objectness, k)

    # -- warming: every bucket compiled at load --------------------------------------------------
    def candidates(self, max_candidates: int | None = None) -> int:
        patches = self.shape.grid**2
        return min(patches, self.max_candidates if max_candidates is None else max_candidates)

    def warm(self) -> None:
        """Compile every program the run can need (a persistent compilation cache makes this a read);
        ``compile_seconds`` keeps each one's first run (its compile, or its cache read, and one run)."""
        size = self.shape.image_size
        for b in self.batch_buckets:
            pixels = np.zeros((b, size, size, 3), np.uint8)
            outputs = self._timed(("image", b), self._run_image, pixels, np.ones((b, 2), np.int32))
            for q in self.query_buckets:
                index, mask = np.zeros((b, q), np.int32), np.zeros((b, q), bool)
                self._timed(("head", b, q), self._run_head, *outputs, index, mask, self.candidates())
        for t in self.text_buckets:
            self._timed(("text", t), self.embed, [""] * t, [self.slots.capacity] * t)

    def _timed(self, key: tuple, run, *args):
        started = time.perf_counter()
        result = jax.block_until_ready(run(*args))
        self.compile_seconds[key] = round(time.perf_counter() - started, 3)
        return result

    # -- running ------------------------------------------------------------------------------
    def _run_image(self, pixels: np.ndarray, content_wh: np.ndarray):
        pixels = jax.device_put(pixels, self.batched)
        return self._image(self.params, pixels, jax.device_put(content_wh, self.batched))

    def _run_head(self, feats, boxes, objectness, index: np.ndarray, mask: np.ndarray, k: int):
        put = partial(jax.device_put, device=self.batched)
        return self._head(self.params, feats, boxes, objectness, self.table, put(index), put(mask), k=k)

    def embed(self, phrases: Sequence[str], rows: Sequence[int]):
        """Write the query embeddings of ``phrases`` into the table's ``rows`` (padded to a text bucket)."""
        n = query_bucket(len(phrases), self.text_buckets)
        padded = list(phrases) + [""] * (n - len(phrases))
        rows = np.asarray(list(rows) + [self.slots.capacity] * (n - len(phrases)), np.int32)
        tokens = self.tokenizer(
            padded, padding="max_length", max_length=self.shape.text_length, truncation=True, return_tensors="np"
        )
        ids, attention = tokens["input_ids"].astype(np.int32), tokens["attention_mask"].astype(np.int32)
        self.table = self._store(self.params, self.table, ids, attention, rows)
        return self.table

    def query_inputs(self, queries: Sequence[Sequence[str]], batch: int):
        """Per image its phrases' table rows [batch, Q] and mask of real queries (new phrases embedded)."""
        width = query_bucket(max(len(q) for q in queries), self.query_buckets)
        distinct = list(dict.fromkeys(p for q in queries for p in q))
        rows, new = self.slots.place(distinct)
        if new:
            self.embed(new, [rows[p] for p in new])
        index, mask = np.zeros((batch, width), np.int32), np.zeros((batch, width), bool)
        for i, phrase_list in enumerate(queries):
            index[i, : len(phrase_list)] = [rows[p] for p in phrase_list]
            mask[i, : len(phrase_list)] = True
        return index, mask

    def detect(
        self,
        images: Sequence[np.ndarray],
        content_sizes: Sequence[tuple[int, int]],
        queries: Sequence[Sequence[str]],
        min_score: float,
        max_candidates: int | None = None,
        query_buckets: Sequence[int] = (),
    ) -> list[Detections]:
        """Letterboxed uint8 images with their content sizes and phrase lists -> per image its Detections
        (the torch detector's signature; ``query_buckets`` are fixed at load and not read here)."""
        if not images:
            return []
        if any(len(q) == 0 for q in queries):
            raise ValueError("every image needs at least one query (route query-less images around the detector)")
        if not all(isinstance(image, np.ndarray) for image in images):
            raise ValueError("the jax backend takes images decoded on the CPU (letterboxed uint8 arrays)")
        n = len(images)
        b = query_bucket(n, self.batch_buckets, len(self.devices))
        size = self.shape.image_size
        pixels = np.zeros((b, size, size, 3), np.uint8)
        np.stack(images, out=pixels[:n])  # straight into the padded batch: no second copy
        content = np.ones((b, 2), np.int32)
        content[:n] = np.asarray(content_sizes, np.int32)
        index, mask = self.query_inputs(queries, b)
        feats, boxes, objectness = self._run_image(pixels, content)
        top = self._run_head(feats, boxes, objectness, index, mask, self.candidates(max_candidates))
        scores, labels, obj, box = (np.asarray(a)[:n] for a in jax.device_get(top))
        return [
            kept_detections(scores[i], labels[i], obj[i], box[i], content_sizes[i], size, min_score) for i in range(n)
        ]
