"""A VESL output as a patch-seg dataset: the layout patch-seg's ADE20k dataset class reads.

    python -m vesl.export patchseg OUTPUT_DIR DEST --vocabulary coco_things [--validation-fraction 0.1]

patch-seg (github iancovert/patch-seg, Locality Alignment's benchmark) reads
``images/{training,validation}/NAME.jpg`` beside ``annotations/{training,validation}/NAME.png`` and
asserts that the sorted lists pair exactly (``image == annotation.split(".")[0] + ".jpg"``). This
writes, under DEST:

- ``images/SPLIT/STEM.jpg``: the image as VESL saw it (as displayed: EXIF orientation applied). A JPEG
  (RGB or grayscale) that needs no turning is copied byte for byte (no second compression); any other image is decoded as
  ``vesl.vision.decode`` does and encoded as JPEG, quality 95, without EXIF, so that its stored pixels
  are the displayed ones the boxes refer to (patch-seg opens images without applying EXIF orientation);
- ``annotations/SPLIT/STEM.png``: mode "L", same size, value = class index, 0 = unlabeled; each
  region's phrase mapped to a class by the vocabulary (``vesl.patchseg.vocabulary``), unmatched regions
  not painted, boxes painted by ``vesl.patchseg.targets.paint_label_map`` (largest first, pixel centre
  in the half-open box);
- ``index_to_class.json`` ({"0": "unlabeled", "1": name, ...}: patch-seg's ``index_to_class``);
- ``keys.jsonl``: one line per image written, {"key", "stem", "split"} (keys are not file names:
  ``safe_stem``); ``skipped.jsonl``: one line per row not written, {"key", "reason", "detail"};
- ``class_counts.json`` and ``class_counts.csv``: per class the regions matched, the images whose
  annotation holds it and its pixels; the vocabulary matches by kind; images written per split and
  skipped by reason (written + skipped = rows read).

The split is a hash of the key (``split_of``): the same key always lands in the same split, on any
machine, whatever else the output holds. Rows are streamed: one image is in memory at a time (with
the rows of one output file that wait for their images from the input, as the report's gallery reads
them: ``vesl.io.outputs.iter_source_images``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from vesl.patchseg.targets import paint_label_map
from vesl.patchseg.vocabulary import BUNDLED, UNLABELED, Match, MatchCounts, Matcher, Vocabulary, matched_boxes
from vesl.records import LabeledImage

SPLITS = ("training", "validation")
MAX_CLASSES = 256  # a uint8 PNG: 0 = unlabeled and at most 255 named classes
JPEG_QUALITY = 95
ROW_BATCH = 16  # rows (with their image bytes) decoded at a time
STEM_MAX = 64  # characters of a key kept in a hashed stem
_PLAIN_STEM = re.compile(r"[A-Za-z0-9_-]{1,128}")


class ExportError(ValueError):
    """A problem found before any work (too many classes, DEST not empty): one line, exit status 2."""


class SkipImage(Exception):
    """A row whose image cannot be written; ``reason`` is a count table key, ``detail`` says more."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# -- pure parts ---------------------------------------------------------------------------------------
def split_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) from the key's SHA-1 alone (a salt draws another split): stable across runs,
    machines and Python versions, unlike ``hash()``."""
    text = key if not salt else f"{salt}\x00{key}"
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split_of(key: str, validation_fraction: float, salt: str = "") -> str:
    """``validation`` when the key's fraction is below ``validation_fraction``, else ``training``."""
    return SPLITS[1] if split_fraction(key, salt) < validation_fraction else SPLITS[0]


def safe_stem(key: str) -> str:
    """A file name stem for a key: the key itself when it is plain (ASCII letters, digits, ``_``, ``-``;
    at most 128), else its plain characters (at most ``STEM_MAX``) + ``~`` + 16 hex digits of its SHA-1.
    Never a ``.`` (patch-seg pairs names by ``split(".")[0]``) nor a ``/``; plain stems hold no ``~``, so
    a hashed stem never equals a plain one; ``keys.jsonl`` records the map back."""
    if _PLAIN_STEM.fullmatch(key):
        return key
    plain = re.sub(r"[^A-Za-z0-9_-]+", "_", key).strip("_")[:STEM_MAX] or "key"
    return f"{plain}~{hashlib.sha1(key.encode('utf-8')).hexdigest()[:16]}"


def check_classes(vocabulary: Vocabulary, name: str = "") -> int:
    """The number of classes with 0 = unlabeled; ExportError when a uint8 PNG cannot hold them."""
    if len(vocabulary) + 1 > MAX_CLASSES:
        raise ExportError(
            f"vocabulary{f' {name}' if name else ''} has {len(vocabulary)} classes: a patch-seg annotation "
            f"(uint8 PNG) holds at most {MAX_CLASSES - 1} (plus 0 = unlabeled)"
        )
    return len(vocabulary) + 1


def annotation_png(label_map: np.ndarray) -> bytes:
    """The label map as patch-seg reads it: an 8-bit grayscale ("L") PNG."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label_map, np.uint8)).save(out, "PNG")  # 2-D uint8: mode "L"
    return out.getvalue()


def jpeg_for(data: bytes | None, width: int, height: int) -> bytes:
    """The image as a JPEG whose stored pixels are the displayed ones, checked against the row's size:
    the bytes themselves for a JPEG that needs no EXIF turn and no colour conversion (RGB or grayscale),
    else re-encoded at ``JPEG_QUALITY``. Raises SkipImage (broken image, size not the row's)."""
    from vesl.config import DetectConfig
    from vesl.vision.decode import ImageDecodeError, decode_image, probe_image

    if not data:
        raise SkipImage("no_image", "no image bytes")
    try:
        header = probe_image(data, DetectConfig.max_image_pixels)
        decoded = decode_image(data, DetectConfig.max_image_pixels)  # full decode: truncated data fails here
    except ImageDecodeError as exc:
        raise SkipImage("broken_image", f"{exc.reason}: {exc.detail}") from None
    if decoded.image.size != (width, height):
        size = "x".join(map(str, decoded.image.size))
        raise SkipImage("size_mismatch", f"image is {size}, the row says {width}x{height} (input changed?)")
    if header.format == "JPEG" and header.orientation == 1 and header.mode in ("RGB", "L"):
        return data
    out = io.BytesIO()
    decoded.image.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


# -- counts -------------------------------------------------------------------------------------------
@dataclass
class ExportCounts:
    """What the export did: rows read = images written + skipped; per class the regions matched (in
    the images written), the images whose annotation holds it and its pixels; matches by kind."""

    vocabulary: Vocabulary
    rows_read: int = 0
    written: Counter = field(default_factory=Counter)  # split -> images
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    matches: MatchCounts = field(init=False)
    images: np.ndarray = field(init=False)
    pixels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matches = MatchCounts(self.vocabulary)
        self.images = np.zeros(len(self.vocabulary) + 1, np.int64)
        self.pixels = np.zeros(len(self.vocabulary) + 1, np.int64)

    @property
    def names(self) -> list[str]:
        return [UNLABELED, *self.vocabulary.names]

    @property
    def balanced(self) -> bool:
        return self.rows_read == sum(self.written.values()) + sum(self.skipped.values())

    @property
    def regions_matched(self) -> int:
        return self.matches.matched

    @property
    def regions_unmatched(self) -> int:
        return self.matches.unmatched

    def add_image(self, split: str, matches: Sequence[Match], label_map: np.ndarray) -> None:
        self.written[split] += 1
        for match in matches:
            self.matches.add(match)
        pixels = np.bincount(label_map.reshape(-1), minlength=len(self.pixels))
        self.pixels += pixels
        self.images += pixels > 0

    def table(self) -> list[dict[str, Any]]:
        """One row per class: index, name, regions, images, pixels."""
        regions = self.matches.by_class
        return [
            {"index": i, "name": name, "regions": regions[name] if i else 0, "images": int(m), "pixels": int(p)}
            for i, (name, m, p) in enumerate(zip(self.names, self.images, self.pixels))
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "images_written": {split: self.written[split] for split in SPLITS},
            "images_skipped": dict(sorted(self.skipped.items())),
            "balanced": self.balanced,
            "regions_matched": self.regions_matched,
            "regions_unmatched": self.regions_unmatched,
            "matches_by_kind": self.matches.as_dict()["by_kind"],
            "classes": self.table(),
        }

    def summary(self, dest: str) -> str:
        """The one line printed at the end."""
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items()))
        return (
            f"{dest}: training {self.written['training']}, validation {self.written['validation']} images; "
            f"skipped {sum(self.skipped.values())}{f' ({skipped})' if skipped else ''}; regions matched "
            f"{self.regions_matched}, unmatched {self.regions_unmatched}"
            f"{'' if self.balanced else ' [NOT BALANCED]'}"
        )


# -- reading the rows with their images ----------------------------------------------------------------
@dataclass(frozen=True)
class RowImage:
    """A row and its encoded image, or why there is none (``data`` None, ``why`` and ``detail`` set)."""

    labeled: LabeledImage
    data: bytes | None
    why: str = ""
    detail: str = ""


def iter_row_images(output_dir: str, limit: int | None = None) -> Iterator[RowImage]:
    """Every row (at most ``limit``) with its image: from the output's ``image`` column when the run
    wrote it, else from its input shard (``iter_source_images``, once per output file, for the rows of
    that file only). A row with neither comes back with why."""
    from vesl.io.outputs import source_files

    remaining = limit
    for path in source_files(output_dir, "parquet"):
        if remaining is not None and remaining <= 0:
            return
        for item in _file_row_images(path, remaining):
            yield item
            if remaining is not None:
                remaining -= 1


def _file_row_images(path: str, limit: int | None) -> Iterator[RowImage]:
    from vesl.io.outputs import iter_file_rows, iter_source_images
    from vesl.schema import FIELDS, from_parquet_row

    columns = [spec.name for spec in FIELDS]  # the image column too, where the file has it
    waiting: list[dict] = []  # rows without bytes (their image column dropped: they hold no image)
    for n, row in enumerate(iter_file_rows(path, columns, batch_rows=ROW_BATCH)):
        if limit is not None and n >= limit:
            break
        if row.get("image"):
            yield RowImage(from_parquet_row(row)[0], row["image"])
        else:
            waiting.append({k: v for k, v in row.items() if k != "image"})
    for found in iter_source_images(waiting):
        yield RowImage(from_parquet_row(found.row)[0], found.data, found.why, found.detail)


# -- writing -------------------------------------------------------------------------------------------
def check_dest(dest: Path) -> None:
    """DEST must not hold a patch-seg dataset already: two exports in one folder would mix."""
    for sub in ("images", "annotations"):
        folder = dest / sub
        if folder.is_dir() and any(folder.iterdir()):
            raise ExportError(f"{folder} is not empty: export into a new folder")


class PatchsegWriter:
    """Writes the layout under DEST, one row at a time, and the count tables at the end
    (``write_counts``); ``keys`` and ``skipped`` are DEST's keys.jsonl and skipped.jsonl, open for
    writing. Every row given to ``write`` is counted once, written or skipped."""

    def __init__(
        self, dest: Path, vocabulary: Vocabulary, validation_fraction: float, salt: str, keys: TextIO, skipped: TextIO
    ):
        self.dest = dest
        self.validation_fraction = validation_fraction
        self.salt = salt
        self.counts = ExportCounts(vocabulary)
        index_to_class = {str(i): name for i, name in vocabulary.index_to_class().items()}
        for kind in ("images", "annotations"):
            for split in SPLITS:
                (dest / kind / split).mkdir(parents=True, exist_ok=True)
        (dest / "index_to_class.json").write_text(json.dumps(index_to_class, indent=1) + "\n", encoding="utf-8")
        self._keys = keys
        self._skipped = skipped

    def write(self, item: RowImage, matcher: Matcher) -> str | None:
        """Write one row's image and annotation; its split, or None when it was skipped (and counted)."""
        record = item.labeled.record
        self.counts.rows_read += 1
        if item.data is None:
            return self.skip(record.key, item.why, item.detail)
        try:
            jpeg = jpeg_for(item.data, record.width, record.height)
        except SkipImage as skip:
            return self.skip(record.key, skip.reason, skip.detail)
        regions = item.labeled.regions
        boxes, classes, matches = matched_boxes([r.box for r in regions], [r.phrase for r in regions], matcher)
        label_map = paint_label_map(boxes, classes, record.width, record.height)
        split, stem = split_of(record.key, self.validation_fraction, self.salt), safe_stem(record.key)
        try:
            self._create(self.dest / "images" / split / f"{stem}.jpg", jpeg)
        except FileExistsError:
            return self.skip(
                record.key,
                "duplicate_stem",
                f"{stem}.jpg already written (a key seen twice, or keys that differ in case only, "
                "on a case-insensitive file system)",
            )
        self._create(self.dest / "annotations" / split / f"{stem}.png", annotation_png(label_map))
        self.counts.add_image(split, matches, label_map)
        self._keys.write(json.dumps({"key": record.key, "stem": stem, "split": split}, ensure_ascii=False) + "\n")
        return split

    def skip(self, key: str, reason: str, detail: str, log: Callable[[str], None] = print) -> None:
        """Count a row not written, record it in skipped.jsonl and say so in one line."""
        self.counts.skipped[reason] += 1
        self._skipped.write(json.dumps({"key": key, "reason": reason, "detail": detail}, ensure_ascii=False) + "\n")
        log(f"skipped {key!r}: {reason}: {detail}")

    @staticmethod
    def _create(path: Path, data: bytes) -> None:
        """Write a new file (never over one: the same stem twice is a duplicate key, not an update)."""
        with open(path, "xb") as f:
            f.write(data)

    def write_counts(self) -> ExportCounts:
        """class_counts.json and class_counts.csv, once every row is written or skipped."""
        document = self.counts.as_dict()
        (self.dest / "class_counts.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        with open(self.dest / "class_counts.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["index", "name", "regions", "images", "pixels"])
            writer.writeheader()
            writer.writerows(document["classes"])
        return self.counts


def load_vocabulary(spec: str) -> Vocabulary:
    """A vocabulary file, or a bundled one by name (``coco_things``, ``coco_stuff``)."""
    if not os.path.exists(spec) and spec in BUNDLED:
        return Vocabulary.bundled(spec)
    return Vocabulary.load(spec)


def check_export(dest: str, vocabulary: Vocabulary, validation_fraction: float, vocabulary_name: str = "") -> None:
    """What makes an export impossible, found before any work (ExportError): too many classes for 8-bit
    PNGs, a split fraction outside [0, 1], a DEST that is not empty."""
    check_classes(vocabulary, vocabulary_name)
    if not 0.0 <= validation_fraction <= 1.0:
        raise ExportError(f"--validation-fraction must be in [0, 1], got {validation_fraction}")
    check_dest(Path(dest))


def export_patchseg(
    output_dir: str,
    dest: str,
    vocabulary: Vocabulary,
    validation_fraction: float = 0.1,
    salt: str = "",
    limit: int | None = None,
    matcher: Matcher | None = None,
    vocabulary_name: str = "",
) -> ExportCounts:
    """Write the patch-seg dataset of ``output_dir`` under ``dest``; phrases matched by ``matcher``
    (default: by head noun, ``Matcher(vocabulary)``). Raises ExportError before any work when it cannot
    be done."""
    check_export(dest, vocabulary, validation_fraction, vocabulary_name)
    root = Path(dest)
    matcher = matcher or Matcher(vocabulary)
    root.mkdir(parents=True, exist_ok=True)
    with (
        open(root / "keys.jsonl", "w", encoding="utf-8") as keys,
        open(root / "skipped.jsonl", "w", encoding="utf-8") as skipped,
    ):
        writer = PatchsegWriter(root, vocabulary, validation_fraction, salt, keys, skipped)
        for item in iter_row_images(output_dir, limit):
            writer.write(item, matcher)
    return writer.write_counts()
