"""A PyTorch IterableDataset over VESL's Parquet shards (local or any fsspec URL, e.g. gs://).

    ds = VeslRegionDataset("gs://bucket/vesl-out/parquet/*.parquet", size=224, mode="pad_center",
                           regions_per_image=4, patch_size=16, seed=0)
    loader = DataLoader(ds, batch_size=256, num_workers=8, collate_fn=collate_regions)
    for epoch in range(n):
        ds.set_epoch(epoch)
        for batch in loader: ...

Work is split by rows across distributed ranks (``torch.distributed`` when initialized, else
``rank``/``world_size``) and DataLoader workers (``plan_rows``): every rank yields the same number of
images per epoch, whatever the files' row counts (DDP steps in lockstep), and no two readers share an
image. The remainder (images mod world_size) is left out, different images each epoch
(``remainder="drop"``, the default), or filled from the start (``"pad"``). The split is reshuffled
each epoch with the same seed everywhere, also with ``persistent_workers``. Within a reader, a
shuffle buffer mixes images. ``skip_images_without_regions`` filters after the split, so ranks can
then differ by the images skipped: for DDP, drop them at write time (``--drop_images_without_regions``). Each image yields up to ``regions_per_image`` regions sampled without replacement
(CLOC sampled 4), padded to that count with ``valid`` False, boxes in training-input pixels
(``vesl.training.transforms``), and, with ``patch_size``, patch-level targets
(``vesl.training.patches``); with ``patch_vocabulary`` also patch-seg's per-patch class targets of the
whole image (``patch_classes``: ``union`` (G, G, C) bool or ``majority`` (G, G) class ids; the
reader's mode decides the crop: ``center_crop`` is patch-seg's, ``pad_bottom_right`` the detector's
letterbox, ``resize`` none). Images come from the Parquet ``image`` column (runs with
``--write_image_bytes true``) or from ``image_loader(row) -> bytes``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from vesl.config import DetectConfig
from vesl.patchseg.vocabulary import Matcher, Vocabulary
from vesl.training.patches import patch_masks, patch_region_index, reader_patch_classes
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
    """Parquet files of a VESL output folder, folder, glob or list of them (``vesl.io.outputs.source_files``)."""
    from vesl.io.outputs import source_files

    return source_files(source, "parquet")


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    return rank, world_size


def _worker() -> tuple[int, int]:
    info = get_worker_info() if torch is not None else None
    return (info.id, info.num_workers) if info is not None else (0, 1)


RowSlice = tuple[str, int, int, int]  # (file, row group, first row, end row) within that row group


def plan_rows(
    groups: Sequence[tuple[str, int, int]],
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    worker: int = 0,
    num_workers: int = 1,
    remainder: str = "drop",
) -> list[RowSlice]:
    """The rows one reader (a DataLoader worker of a rank) reads in an epoch, as row-group slices.

    ``groups``: every (file, row group, rows) of the dataset, in file order. The row groups are
    shuffled with (seed, epoch), the same on every rank, and laid end to end; each rank takes an
    equal contiguous run of that sequence, so every rank yields the same number of images (DDP
    steps in lockstep) and a row group is read by at most two ranks. The remainder (rows mod
    world_size): ``drop`` leaves out the last rows of the shuffled sequence, different ones each
    epoch, so every image is read at most once per epoch and exactly once when the count divides;
    ``pad`` fills the last ranks from the start of the sequence, so every image is read at least
    once. Within a rank, its workers take contiguous parts differing by at most one row."""
    if remainder not in ("drop", "pad"):
        raise ValueError(f"remainder must be 'drop' or 'pad', got {remainder!r}")
    order = list(groups)
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    total = sum(rows for _, _, rows in order)
    if total == 0:
        return []
    per_rank = total // world_size if remainder == "drop" else -(-total // world_size)
    start = rank * per_rank
    share, extra = divmod(per_rank, num_workers)
    start += worker * share + min(worker, extra)
    count = share + (1 if worker < extra else 0)
    return _take(order, total, start % total, count)


def _take(order: Sequence[tuple[str, int, int]], total: int, start: int, count: int) -> list[RowSlice]:
    """``count`` rows of the row-group sequence from global row ``start``, wrapping at the end."""
    slices: list[RowSlice] = []
    while count > 0:
        offset = 0
        for path, group, rows in order:
            if count <= 0:
                break
            if offset + rows > start:  # this row group holds row ``start``
                lo = start - offset
                n = min(rows - lo, count)
                slices.append((path, group, lo, lo + n))
                count, start = count - n, start + n
            offset += rows
        start = 0  # "pad": go on from the first row
    return slices


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
        max_image_pixels: int = DetectConfig.max_image_pixels,
        remainder: str = "drop",
        patch_vocabulary: Vocabulary | Matcher | None = None,
        patch_reduction: str = "union",
    ):
        if patch_vocabulary is not None and not patch_size:
            raise ValueError("patch_vocabulary needs patch_size (the backbone's patch, e.g. 16)")
        self.patch_classes = (
            reader_patch_classes(patch_vocabulary, size, patch_size, mode, patch_reduction)
            if patch_vocabulary is not None
            else None
        )
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
        self.remainder = remainder
        self.epoch = 0
        self._iterations = 0  # iterations since set_epoch: the epoch count of a persistent worker
        self._groups: list[tuple[str, int, int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch. With ``persistent_workers`` the workers keep their own copy of
        the dataset and never see this call: each of them then counts its epochs itself (every
        new iteration is the next epoch), so epochs reshuffle either way."""
        self.epoch = epoch
        self._iterations = 0

    # -- splitting -------------------------------------------------------------------------------
    def row_groups(self) -> list[tuple[str, int, int]]:
        """(file, row group, rows) of every file, from the Parquet footers (read once)."""
        if self._groups is None:
            import fsspec
            import pyarrow.parquet as pq

            groups = []
            for f in self.files:
                with fsspec.open(f, "rb") as fh:
                    meta = pq.ParquetFile(fh).metadata
                groups += [(f, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
            self._groups = groups
        return self._groups

    def my_rows(self, epoch: int | None = None) -> list[RowSlice]:
        rank, world_size = _rank_and_world(self.rank, self.world_size)
        worker, workers = _worker()
        epoch = self.epoch if epoch is None else epoch
        return plan_rows(self.row_groups(), self.seed, epoch, rank, world_size, worker, workers, self.remainder)

    # -- reading ---------------------------------------------------------------------------------
    def _rows(self, piece: RowSlice) -> Iterator[dict]:
        import fsspec
        import pyarrow.parquet as pq

        path, group, lo, hi = piece
        with fsspec.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            columns = [c for c in COLUMNS if c in pf.schema_arrow.names]
            yield from pf.read_row_group(group, columns=columns).slice(lo, hi - lo).to_pylist()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch + self._iterations
        self._iterations += 1
        rank, _ = _rank_and_world(self.rank, self.world_size)
        worker, _ = _worker()
        rng = random.Random(((self.seed * 1_000_003 + epoch) * 7919 + rank) * 104_729 + worker)
        buffer: list[dict] = []
        for piece in self.my_rows(epoch):
            for row in self._rows(piece):
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
        if self.patch_classes is not None:
            stored_boxes, phrases = [r["box"] for r in regions], [r["phrase"] for r in regions]
            targets = self.patch_classes(stored_boxes, phrases, width, height)
            example["patch_classes"] = torch.from_numpy(targets) if torch else targets
        return example


def collate_regions(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep keys, captions and phrases as lists."""
    out: dict[str, Any] = {}
    for name in batch[0]:
        values = [example[name] for example in batch]
        out[name] = torch.stack(values) if torch is not None and isinstance(values[0], torch.Tensor) else values
    return out
