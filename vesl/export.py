"""Export VESL output for existing tools.

    python -m vesl.export grit OUTPUT_DIR DEST.parquet [--limit N]   # GRIT-compatible rows (snappy Parquet)
    python -m vesl.export coco OUTPUT_DIR DEST.json [--limit N]      # COCO-style detection JSON
    python -m vesl.export coco-results OUTPUT_DIR DEST.json --gt instances.json   # a COCO results file
    python -m vesl.export patchseg OUTPUT_DIR DEST --vocabulary FILE|coco_things|coco_stuff
        [--validation-fraction 0.1] [--split-salt TEXT] [--limit N]      # patch-seg's dataset layout
    python -m vesl.export vocabulary OUTPUT_DIR DEST.txt [--top 255]     # frequent phrase heads as a vocabulary

GRIT rows: GRIT-20M's published Parquet schema exactly (columns, order and types: key,
clip_similarity_vitb32, clip_similarity_vitl14, id, url, caption, width, height, noun_chunks,
ref_exps), so an export concatenates with a GRIT-20M shard. noun_chunks and ref_exps are lists of
[start_char, end_char, x_min, y_min, x_max, y_max, score] with coordinates normalized to the original
image (VESL's stored convention is GRIT's). VESL's regions go to ``noun_chunks``; ``ref_exps``
repeats them, as GRIT does for chunks without an expansion. VESL computes no CLIP similarity: those
two columns are null. ``id`` is a stable 63-bit number from the key. Images without a box are left
out, as GRIT leaves them out (the count is printed).

COCO: one category per distinct phrase (COCO tools need category ids), boxes as [x, y, w, h] in
pixels of the original image, ``score`` kept, and each annotation's ``phrase``/``char_start``/
``char_end``/``caption`` as extra fields.

COCO results (for ``COCO.loadRes`` and ``COCOeval`` against a ground-truth file): a list of
{image_id, category_id, bbox [x, y, w, h] in pixels, score}. Images are matched to the ground truth by
file name without extension (VESL's key; img2dataset keys of COCO URLs are those names), or by a key
that is the image id's number. A region's category is the ground-truth category its phrase names
(``vesl.patchseg.vocabulary.CategoryMatcher``: by head noun, singular or plural, with the bundled COCO
aliases: "two black cats" -> cat, "a traffic light" -> traffic light, "a young man" -> person).
Regions of unmatched images or naming no category are left out and counted.

patch-seg (``vesl.patchseg.export``): the layout patch-seg's ADE20k dataset class reads, for Locality
Alignment's patch-level probe: ``DEST/images/{training,validation}/STEM.jpg`` beside
``DEST/annotations/{training,validation}/STEM.png`` (uint8, value = class index, 0 = unlabeled; each
region's phrase mapped to a class by the vocabulary, unmatched regions not painted, larger boxes
painted first), ``index_to_class.json``, ``keys.jsonl`` (key -> file stem: keys are not file names),
``skipped.jsonl`` and ``class_counts.json``/``.csv`` (per class regions, images, pixels; matches by
kind; images written per split and skipped by reason, which add up to the rows read). The split is a
hash of the key, so a key stays in its split across runs. Images come from the output's bytes
(``--write_image_bytes true``) or else from the input shards; a JPEG is copied as it is, anything else
(or a JPEG with an EXIF turn) re-encoded at quality 95. A vocabulary of more than 255 classes is one
line of error and exit status 2, before any work.

Vocabulary (``vesl.patchseg.vocabulary.write_frequent_heads``): the ``--top`` most frequent head nouns of
the output's region phrases, one a line: a vocabulary file for ``patchseg --vocabulary``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from vesl.io.outputs import OutputFolder, is_output_folder, read_rows
from vesl.patchseg.vocabulary import CategoryMatcher, add_matching_arguments
from vesl.records import LabeledImage
from vesl.schema import from_parquet_row
from vesl.training.torch_dataset import expand_sources

GRIT_CHUNK = pa.list_(pa.list_(pa.float64()))
GRIT_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("clip_similarity_vitb32", pa.float64()),
        pa.field("clip_similarity_vitl14", pa.float64()),
        pa.field("id", pa.int64()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("noun_chunks", GRIT_CHUNK),
        pa.field("ref_exps", GRIT_CHUNK),
    ]
)


def grit_id(key: str) -> int:
    """A stable 63-bit id from the key (GRIT's ``id`` is an int64)."""
    import hashlib

    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:15], 16)


def iter_labeled(output_dir: str, limit: int | None = None) -> Iterator[LabeledImage]:
    """The rows of an output as typed records (without image bytes), streamed: a VESL output folder's
    committed shards (``vesl.io.outputs``), or the Parquet files of any other folder, glob or file."""
    if is_output_folder(output_dir):
        yield from OutputFolder(output_dir).labeled(limit)
        return
    for row in read_rows(expand_sources(output_dir), limit=limit):
        yield from_parquet_row(row)[0]


def grit_row(labeled: LabeledImage) -> dict[str, Any]:
    record = labeled.record
    chunks = [[r.char_start, r.char_end, *r.box, r.score] for r in labeled.regions]
    return {
        "key": record.key,
        "clip_similarity_vitb32": None,
        "clip_similarity_vitl14": None,
        "id": grit_id(record.key),
        "url": record.url,
        "caption": record.caption,
        "width": record.width,
        "height": record.height,
        "noun_chunks": chunks,
        "ref_exps": [list(c) for c in chunks],
    }


def export_grit(output_dir: str, dest: str, limit: int | None = None) -> int:
    """Rows written (images with at least one box)."""
    import pyarrow.parquet as pq

    rows = [grit_row(item) for item in iter_labeled(output_dir, limit) if item.regions]
    pq.write_table(pa.Table.from_pylist(rows, schema=GRIT_SCHEMA), dest, compression="snappy")
    return len(rows)


def coco_document(items: list[LabeledImage]) -> dict[str, Any]:
    categories: dict[str, int] = {}
    images, annotations = [], []
    for image_id, item in enumerate(items, start=1):
        record = item.record
        images.append(
            {
                "id": image_id,
                "file_name": record.key,
                "width": record.width,
                "height": record.height,
                "coco_url": record.url,
                "caption": record.caption,
            }
        )
        for region in item.regions:
            category = categories.setdefault(region.phrase, len(categories) + 1)
            x0, y0, x1, y1 = region.box
            w, h = (x1 - x0) * record.width, (y1 - y0) * record.height
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [round(x0 * record.width, 2), round(y0 * record.height, 2), round(w, 2), round(h, 2)],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "score": round(region.score, 5),
                    "phrase": region.phrase,
                    "char_start": region.char_start,
                    "char_end": region.char_end,
                }
            )
    return {
        "info": {"description": "VESL region-text pairs (boxes in pixels of the original image)"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "phrase"} for name, i in categories.items()],
    }


def coco_results(items: list[LabeledImage], gt: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(results list, counts) for ``COCO.loadRes``."""
    import posixpath

    by_name = {posixpath.splitext(posixpath.basename(i["file_name"]))[0]: i["id"] for i in gt["images"]}
    ids = {i["id"] for i in gt["images"]}
    categories = CategoryMatcher(gt["categories"])
    results: list[dict[str, Any]] = []
    counts = {"images_matched": 0, "images_unmatched": 0, "regions": 0, "regions_without_category": 0}
    for item in items:
        record = item.record
        image_id = by_name.get(record.key)
        if image_id is None and record.key.isdigit() and int(record.key) in ids:
            image_id = int(record.key)
        if image_id is None:
            counts["images_unmatched"] += 1
            continue
        counts["images_matched"] += 1
        for region in item.regions:
            category_id = categories.category_id(region.phrase)
            if category_id is None:
                counts["regions_without_category"] += 1
                continue
            x0, y0, x1, y1 = region.box
            w, h = (x1 - x0) * record.width, (y1 - y0) * record.height
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [round(x0 * record.width, 2), round(y0 * record.height, 2), round(w, 2), round(h, 2)],
                    "score": round(region.score, 5),
                }
            )
            counts["regions"] += 1
    return results, counts


def export_coco_results(output_dir: str, dest: str, gt_path: str, limit: int | None = None) -> dict[str, int]:
    import fsspec

    with fsspec.open(gt_path, "r") as f:
        gt = json.load(f)
    results, counts = coco_results(list(iter_labeled(output_dir, limit)), gt)
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(results, f)
    return counts


def export_coco(output_dir: str, dest: str, limit: int | None = None) -> int:
    items = list(iter_labeled(output_dir, limit))
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(coco_document(items), f)
    return len(items)


ADE20K_CLASSES = 151  # patch-seg's Ade20kPatchDataset: num_classes fixed (150 ADE20k classes + unlabeled)


def _export_patchseg(args: argparse.Namespace) -> int:
    """The patchseg subcommand: a problem found before any work (the vocabulary unreadable or too large,
    DEST not empty) is one line and exit status 2; 1 when the counts do not balance."""
    from vesl.patchseg.export import ExportError, check_export, export_patchseg, load_vocabulary
    from vesl.patchseg.vocabulary import matcher_from_arguments

    try:
        vocabulary = load_vocabulary(args.vocabulary)
    except (ValueError, OSError) as exc:
        print(f"error: vocabulary {args.vocabulary}: {exc}", file=sys.stderr)
        return 2
    try:  # the checks first: building the matcher may load a checkpoint (--match-embedding)
        check_export(args.dest, vocabulary, args.validation_fraction, args.vocabulary)
        counts = export_patchseg(
            args.output_dir,
            args.dest,
            vocabulary,
            args.validation_fraction,
            args.split_salt,
            args.limit,
            matcher=matcher_from_arguments(args.parser, args, vocabulary),
            vocabulary_name=args.vocabulary,
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(counts.summary(args.dest))
    if len(vocabulary) + 1 > ADE20K_CLASSES:
        print(
            f"note: patch-seg's Ade20kPatchDataset counts {ADE20K_CLASSES} classes; "
            f"set its num_classes to {len(vocabulary) + 1} for this vocabulary"
        )
    return 0 if counts.balanced else 1


def _export_vocabulary(args: argparse.Namespace) -> int:
    from vesl.patchseg.vocabulary import write_frequent_heads

    n = write_frequent_heads(args.output_dir, args.dest, args.top)
    print(f"{args.dest}: {n} heads")
    return 0


def _export_coco_results(args: argparse.Namespace) -> int:
    counts = export_coco_results(args.output_dir, args.dest, args.gt, args.limit)
    print(f"{args.dest}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _export_rows(args: argparse.Namespace) -> int:
    n = (export_grit if args.format == "grit" else export_coco)(args.output_dir, args.dest, args.limit)
    print(f"{args.dest}: {n} images")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")

    def command(name: str, run, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("output_dir")
        sub.add_argument("dest")
        sub.set_defaults(run=run)
        return sub

    for name, help in (("grit", "GRIT-compatible rows (Parquet)"), ("coco", "COCO-style detection JSON")):
        command(name, _export_rows, help).add_argument("--limit", type=int, default=None)
    results = command("coco-results", _export_coco_results, "a COCO results file (COCO.loadRes)")
    results.add_argument("--gt", required=True, help="the COCO ground-truth JSON (instances_*.json)")
    results.add_argument("--limit", type=int, default=None)
    patchseg = command("patchseg", _export_patchseg, "patch-seg's dataset layout (images + label PNGs)")
    patchseg.add_argument(
        "--vocabulary", required=True, help="class vocabulary: a file, or coco_things / coco_stuff (bundled)"
    )
    patchseg.add_argument("--validation-fraction", type=float, default=0.1, help="share of keys in validation/")
    patchseg.add_argument("--split-salt", default="", help="another split of the same keys (default: none)")
    patchseg.add_argument("--limit", type=int, default=None, help="read at most N rows")
    add_matching_arguments(patchseg)
    patchseg.set_defaults(parser=patchseg)
    vocabulary = command("vocabulary", _export_vocabulary, "the output's most frequent phrase heads, one a line")
    vocabulary.add_argument(
        "--top", type=int, default=255, help="how many heads (default 255: the most a patch-seg PNG holds)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
