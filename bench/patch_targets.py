"""Cost of patch-seg targets per image: computed from the boxes (``vesl.patchseg.targets.patch_targets``)
beside the slow way (paint the full-resolution label map, crop and resize it with Pillow, reduce).
Prints one JSON line per grid.

    python -m bench.patch_targets [--instances FILE] [--grids 224/16,448/14] [--repeat 5]

The boxes are COCO's own (the shared val2017 instances: real sizes, counts and overlaps), one class a
category; without the file, seeded random boxes (a smoke run, not a figure to quote).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from vesl.patchseg.targets import PatchGrid, paint_label_map, patch_targets, reduce_patches

INSTANCES = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_val2017" / "instances_val2017.json"
Case = tuple[np.ndarray, np.ndarray, int, int]  # boxes (normalized xyxy), classes, width, height


def coco_cases(path: Path) -> tuple[list[Case], int]:
    """Each image's boxes as stored boxes, class = the category's position (1..80)."""
    gt = json.loads(path.read_text())
    position = {c["id"]: i + 1 for i, c in enumerate(gt["categories"])}
    by_image: dict[int, list[dict]] = {i["id"]: [] for i in gt["images"]}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    cases = []
    for image in gt["images"]:
        w, h = image["width"], image["height"]
        anns = by_image[image["id"]]
        boxes = np.array([[x / w, y / h, (x + bw) / w, (y + bh) / h] for x, y, bw, bh in (a["bbox"] for a in anns)])
        classes = np.array([position[a["category_id"]] for a in anns], np.int64)
        cases.append((boxes.reshape(-1, 4), classes, w, h))
    return cases, len(gt["categories"]) + 1


def random_cases(n: int = 50, seed: int = 0) -> tuple[list[Case], int]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        corners = np.sort(rng.random((int(rng.integers(0, 20)), 2, 2)), axis=1)
        boxes = corners.transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]]
        cases.append((boxes, rng.integers(1, 81, len(boxes)), 640, 480))
    return cases, 81


def slow_targets(case: Case, grid: PatchGrid, num_classes: int) -> np.ndarray:
    boxes, classes, w, h = case
    label = Image.fromarray(paint_label_map(boxes, classes, w, h))
    side = min(w, h)
    x, y = (w - side) // 2, (h - side) // 2
    resized = label.crop((x, y, x + side, y + side)).resize((grid.size, grid.size), Image.Resampling.NEAREST)
    return reduce_patches(np.asarray(resized), grid.patch, num_classes, "union")


def per_image_ms(fn, cases: list[Case], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for case in cases:
            fn(case)
        best = min(best, time.perf_counter() - start)
    return round(best / len(cases) * 1000, 4)


def measure(cases: list[Case], num_classes: int, grid: PatchGrid, repeat: int) -> dict:
    def direct(reduction: str):
        return lambda c: patch_targets(*c, grid=grid, num_classes=num_classes, reduction=reduction)

    for case in cases:  # the two ways agree before either is timed
        assert (direct("union")(case) == slow_targets(case, grid, num_classes)).all()
    return {
        "grid": f"{grid.size}/{grid.patch}",
        "direct_union_ms_per_image": per_image_ms(direct("union"), cases, repeat),
        "direct_majority_ms_per_image": per_image_ms(direct("majority"), cases, repeat),
        "paint_resize_reduce_ms_per_image": per_image_ms(lambda c: slow_targets(c, grid, num_classes), cases, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", default=str(INSTANCES))
    parser.add_argument("--grids", default="224/16,448/14")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    path = Path(args.instances)
    cases, num_classes = coco_cases(path) if path.exists() else random_cases()
    source = str(path) if path.exists() else "seeded random boxes (smoke run)"
    for spec in args.grids.split(","):
        size, patch = map(int, spec.split("/"))
        result = measure(cases, num_classes, PatchGrid(size, patch), args.repeat)
        result.update(
            images=len(cases),
            boxes_per_image=round(sum(len(c[0]) for c in cases) / len(cases), 2),
            source=source,
            date=date.today().isoformat(),
            device=f"{platform.machine()} CPU, {os.cpu_count()} cores",
        )
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
