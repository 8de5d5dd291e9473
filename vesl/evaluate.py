"""How VESL's regions match human boxes (COCO-style ground truth).

    python -m vesl.evaluate --gt ../shared/data/coco_val2017/instances_val2017.json --output out/run [--iou 0.5]
    python -m vesl.evaluate patches out/run --gt instances_val2017.json [--size 224 --patch 16]   # vesl.patchseg.score

Images are matched by key: a ground-truth image matches a VESL row whose key equals its file name,
its file name without extension, or its id. For every ground-truth box:
- class-agnostic recall: some VESL region has IoU >= ``iou`` with it;
- named recall: some such region's phrase names the box's category (``CategoryMatcher``: by head noun,
  with the bundled COCO aliases, so "a young man" names person and "a cat on a mat" names cat, not mat).
Reported per category and overall, with boxes per image on both sides. Meaningful with a real
checkpoint; testable with injected regions.

``patches``: a patch-level score of the regions against the human masks, in the terms of patch-seg
(Locality Alignment's benchmark): ``vesl.patchseg.score``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from vesl.patchseg.vocabulary import CategoryMatcher
from vesl.records import LabeledImage
from vesl.vision.geometry import box_iou


def _gt_keys(gt: dict[str, Any]) -> set[str]:
    """Every key that can match a ground-truth image: its file name, with and without extension, its id."""
    return {
        key
        for image in gt["images"]
        for key in (image["file_name"], image["file_name"].rsplit(".", 1)[0], str(image["id"]))
    }


def match_images(gt: dict[str, Any], labeled: Iterable[LabeledImage]) -> Iterator[tuple[dict, LabeledImage | None]]:
    """Each ground-truth image with the VESL row whose key is its file name, that name without extension,
    or its id (in that order of preference), or None. Only the rows the ground truth names are kept:
    ``labeled`` streams a whole output (millions of rows)."""
    wanted = _gt_keys(gt)
    by_key = {item.record.key: item for item in labeled if item.record.key in wanted}
    for image in gt["images"]:
        name = image["file_name"]
        yield image, by_key.get(name) or by_key.get(name.rsplit(".", 1)[0]) or by_key.get(str(image["id"]))


def evaluate(gt: dict[str, Any], labeled: Iterable[LabeledImage], iou: float = 0.5) -> dict[str, Any]:
    categories = {c["id"]: c["name"] for c in gt["categories"]}
    namer = CategoryMatcher(gt["categories"])
    boxes_by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in gt["annotations"]:
        if not ann.get("iscrowd"):
            boxes_by_image[ann["image_id"]].append(ann)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # gt, agnostic hits, named hits
    images = regions = gt_boxes = 0
    for image, item in match_images(gt, labeled):
        if item is None:
            continue
        images += 1
        w, h = image["width"], image["height"]
        anns = boxes_by_image.get(image["id"], [])
        gt_boxes += len(anns)
        regions += len(item.regions)
        pred = np.array([r.box for r in item.regions], np.float64).reshape(-1, 4) * [w, h, w, h]
        named = [namer.category_id(r.phrase) for r in item.regions]  # once per region, not per box
        for ann in anns:
            x, y, bw, bh = ann["bbox"]
            category = categories[ann["category_id"]]
            ious = box_iou(np.array([[x, y, x + bw, y + bh]]), pred)[0] if len(pred) else np.zeros(0)
            hit = ious >= iou
            counts = totals[category]
            counts[0] += 1
            counts[1] += bool(hit.any())
            counts[2] += any(h_ and n == ann["category_id"] for h_, n in zip(hit, named))
    per_category = {
        name: {"gt_boxes": n, "recall": round(a / n, 4), "named_recall": round(m / n, 4)}
        for name, (n, a, m) in sorted(totals.items())
    }
    n_all = sum(v[0] for v in totals.values())
    return {
        "iou": iou,
        "images_matched": images,
        "images_in_ground_truth": len(gt["images"]),
        "gt_boxes_per_image": round(gt_boxes / images, 3) if images else 0.0,
        "regions_per_image": round(regions / images, 3) if images else 0.0,
        "recall": round(sum(v[1] for v in totals.values()) / n_all, 4) if n_all else 0.0,
        "named_recall": round(sum(v[2] for v in totals.values()) / n_all, 4) if n_all else 0.0,
        "per_category": per_category,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["patches"]:
        from vesl.patchseg.score import main as patches

        return patches(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO-style instances JSON")
    parser.add_argument("--output", required=True, help="a VESL output folder")
    parser.add_argument("--iou", type=float, default=0.5)
    args = parser.parse_args(argv)
    from vesl.export import iter_labeled

    with open(args.gt, encoding="utf-8") as f:
        gt = json.load(f)
    print(json.dumps(evaluate(gt, iter_labeled(args.output), args.iou), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
