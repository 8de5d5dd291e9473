"""A PyTorch IterableDataset over VESL's Parquet shards (local or any fsspec URL, e.g. gs://).

    ds = VeslRegionDataset("gs://bucket/vesl-out/parquet/*.parquet", size=224, mode="pad_center",
                           regions_per_image=4, patch_size=16, seed=0)
    loader = DataLoader(ds, batch_size=256, num_workers=8, collate_fn=collate_regions)
    for epoch in range(n):
        ds.set_epoch(epoch)
        for batch in loader: ...

Work is split by (file, row group) across DataLoader workers and distributed ranks
(``torch.distributed`` when initialized, else ``rank``/``world_size``) so that no two readers share an
image; the split is reshuffled each epoch with the same seed everywhere. Within a reader, a shuffle
buffer mixes images. Each image yields up to ``regions_per_image`` regions sampled without replacement
(CLOC sampled 4), padded to that count with ``valid`` False, boxes in training-input pixels
(``vesl.training.transforms``), and, with ``patch_size``, patch-level targets
(``vesl.training.patches``). Images come from the Parquet ``image`` column (runs with
``--write_image_bytes true``) or from ``image_loader(row) -> bytes``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from vesl.training.patches import patch_masks, patch_region_index
from vesl.training.transforms import TrainingTransform
from vesl.vision.decode import decode_image

COLUMNS = ["key", "caption", "width", "height", "regions", "image"]

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError:  # pragma: no cover - the package requires torch; readers may run without it
    torch = None
    IterableDataset = object


def expand_sources(source: str | Sequence[str]) -> list[str]:
    """Parquet files of a folder, glob or list of them (local or remote)."""
    from vesl.io.paths import expand_patterns

    patterns = [source] if isinstance(source, str) else list(source)
    return expand_patterns(patterns, keep=lambda path: path.endswith(".parquet"))


def _reader_slot(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(this reader's index, number of readers) over all ranks and DataLoader workers."""
    if rank is None or world_size is None:
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world_size = 0, 1
    info = get_worker_info() if torch is not None else None
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    return rank * workers + worker, world_size * workers


class VeslRegionDataset(IterableDataset):
    def __init__(
        self,
        source: str | Sequence[str],
        size: int = 224,
        mode: str = "pad_center",
        regions_per_image: int = 4,
        patch_size: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        skip_images_without_regions: bool = False,
        image_loader: Callable[[dict], bytes] | None = None,
        max_image_pixels: int = 89_478_485,
    ):
        self.files = expand_sources(source)
        self.transform = TrainingTransform(size, mode)
        self.regions_per_image = regions_per_image
        self.patch_size = patch_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.skip_images_without_regions = skip_images_without_regions
        self.image_loader = image_loader
        self.max_image_pixels = max_image_pixels
        self.epoch = 0
        self._units: list[tuple[str, int | None]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # -- splitting -------------------------------------------------------------------------------
    def units(self, readers: int) -> list[tuple[str, int | None]]:
        """Whole files when there are enough for every reader, else (file, row group) pairs."""
        if len(self.files) >= readers:
            return [(f, None) for f in self.files]
        if self._units is None:
            import fsspec
            import pyarrow.parquet as pq

            units = []
            for f in self.files:
                with fsspec.open(f, "rb") as fh:
                    units += [(f, g) for g in range(pq.ParquetFile(fh).num_row_groups)]
            self._units = units
        return self._units

    def my_units(self) -> list[tuple[str, int | None]]:
        slot, readers = _reader_slot(self.rank, self.world_size)
        units = list(self.units(readers))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(units)
        return units[slot::readers]

    # -- reading ---------------------------------------------------------------------------------
    def _rows(self, unit: tuple[str, int | None]) -> Iterator[dict]:
        import fsspec
        import pyarrow.parquet as pq

        path, group = unit
        with fsspec.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            columns = [c for c in COLUMNS if c in pf.schema_arrow.names]
            groups = range(pf.num_row_groups) if group is None else [group]
            for g in groups:
                yield from pf.read_row_group(g, columns=columns).to_pylist()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot, _ = _reader_slot(self.rank, self.world_size)
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 7919 + slot)
        buffer: list[dict] = []
        for unit in self.my_units():
            for row in self._rows(unit):
                if self.skip_images_without_regions and not row["regions"]:
                    continue
                buffer.append(row)
                if len(buffer) >= max(1, self.shuffle_buffer):
                    yield self.example(buffer.pop(rng.randrange(len(buffer))), rng)
        rng.shuffle(buffer)
        for row in buffer:
            yield self.example(row, rng)

    def example(self, row: dict, rng: random.Random) -> dict[str, Any]:
        data = row.get("image") or (self.image_loader(row) if self.image_loader else None)
        if not data:
            raise ValueError(
                f"row {row['key']!r} has no image bytes: write the output with --write_image_bytes true "
                "or give VeslRegionDataset an image_loader"
            )
        image = decode_image(data, self.max_image_pixels).image
        width, height = image.size
        if (width, height) != (row["width"], row["height"]):
            raise ValueError(
                f"row {row['key']!r}: image is {width}x{height}, the row says {row['width']}x{row['height']}"
            )
        m = self.regions_per_image
        regions = row["regions"]
        chosen = rng.sample(regions, min(m, len(regions)))
        boxes = np.zeros((m, 4), np.float32)
        valid = np.zeros(m, bool)
        scores = np.zeros(m, np.float32)
        phrases = [""] * m
        if chosen:
            stored = np.array([r["box"] for r in chosen], np.float32)
            boxes[: len(chosen)] = self.transform.boxes(stored, width, height)
            valid[: len(chosen)] = True
            scores[: len(chosen)] = [r["score"] for r in chosen]
            phrases[: len(chosen)] = [r["phrase"] for r in chosen]
        pixels = self.transform.image(image)
        example: dict[str, Any] = {
            "key": row["key"],
            "caption": row["caption"],
            "image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))) if torch else pixels,
            "boxes": torch.from_numpy(boxes) if torch else boxes,
            "valid": torch.from_numpy(valid) if torch else valid,
            "scores": torch.from_numpy(scores) if torch else scores,
            "phrases": phrases,
        }
        if self.patch_size:
            masks = patch_masks(boxes, self.transform.size, self.patch_size) & valid[:, None, None]
            index = patch_region_index(boxes, self.transform.size, self.patch_size, valid)
            example["patch_masks"] = torch.from_numpy(masks) if torch else masks
            example["patch_region_index"] = torch.from_numpy(index.astype(np.int64)) if torch else index
        return example


def collate_regions(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep keys, captions and phrases as lists."""
    out: dict[str, Any] = {}
    for name in batch[0]:
        values = [example[name] for example in batch]
        out[name] = torch.stack(values) if torch is not None and isinstance(values[0], torch.Tensor) else values
    return out
