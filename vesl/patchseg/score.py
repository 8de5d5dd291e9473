"""A patch-level score of VESL's region labels against human masks, in patch-seg's terms.

    python -m vesl.evaluate patches OUTPUT --gt instances_val2017.json [--size 224 --patch 16]
        [--crop center] [--json DEST]

Locality Alignment (ICLR 2025) judges backbones with patch-seg (github iancovert/patch-seg): each
patch of an S x S input gets a multi-hot class target (``vesl.patchseg.targets``), and a probe's
predictions are scored per class. This module gives VESL's own labels the same score: VESL's boxes
and phrases, turned into patch targets, against patch targets painted from COCO's instance masks.

Targets, both sides in patch-seg's geometry (crop, ``Resize((S, S), NEAREST)``, ``union`` over p x p
blocks; class 0 "unlabeled" only where a patch holds no class):
- ground truth: every instance mask of the image (pycocotools' ``annToMask`` arithmetic: polygons and
  RLE) painted into an instance map, largest ``area`` first (ties in file order) so smaller instances
  end on top, as the box rule of ``paint_label_map``; an instance's class is its category's position
  in the file's category list plus one (1..80 for COCO). Crowd annotations (``iscrowd``) are
  included: patch-seg's COCO-Stuff thing labels include crowd regions too.
- prediction: the row's regions whose phrase the vocabulary of the file's category names matches
  (``vesl.patchseg.vocabulary``: its head-noun ``Matcher``, same indices), painted as boxes by
  ``patch_targets``; unmatched regions are unlabeled (and counted, with the most frequent unmatched
  phrases listed).

Score (patch-seg's ``UnionMetricsHelper``, ``patchseg/loss.py``): per class a 2 x 2 confusion over all
patches of all matched images (VESL's targets are binary, so no threshold), then per class accuracy
``(TP + TN) / N``, recall ``TP / (TP + FN)``, precision ``TP / (TP + FP)``, F1 ``2PR / (P + R)``,
and their macro means over the classes with at least one positive patch (the others are skipped and
counted). ``things`` averages classes 1..C-1 (the headline); ``all`` includes class 0, as patch-seg's
C outputs do. Two choices where patch-seg's code is silent or degenerate:
- a class with positives but no predicted positive has precision 0.0 (patch-seg computes 0 / 0 in
  torch, a NaN that turns its macro precision and F1 into NaN); such classes are listed;
- F1 is exact; patch-seg adds 1e-6 to the denominator (a difference below 1e-6).

Per size (COCO's: small ``area < 32**2 <=`` medium ``< 96**2 <=`` large, by the annotation's
``area``): the (image, patch, class) positives that instances of that size contribute -- a patch and
the instance's class, wherever a sampled pixel of the patch shows that instance after painting
(instances hidden under smaller ones or outside the crop contribute nothing) -- and the recall of
those pairs: the fraction that VESL predicts. A pair shown by instances of two sizes (a small and a
large person in one patch) counts in both.

JSON: ``size``, ``patch``, ``grid``, ``crop``, ``reduction``, ``crowd``; ``images_matched``,
``images_in_ground_truth``, ``images_unmatched``; ``patches`` (scored per class); ``things`` and
``all`` ({accuracy, recall, precision, f1, classes_scored, classes_skipped,
classes_without_predictions}); ``micro_accuracy`` (patch-seg's ``accuracy``: all cells of all
classes); ``by_size`` ({small, medium, large}: instances, positives, hits, recall or null);
``per_class`` (classes with a positive or predicted patch: class, name, tp, fp, fn, tn and the four
metrics); ``regions`` (total, matched, unmatched, by_kind, by_class, top_unmatched). The command line
adds ``ground_truth`` and ``output``.

Images are matched by key as ``vesl.evaluate`` matches them (file name, without extension, or id);
ground-truth images without a VESL row are counted and left out of the score.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vesl.patchseg.targets import CROPS, PatchGrid, patch_targets, reduce_patches, sampled_pixels
from vesl.patchseg.vocabulary import (
    UNLABELED,
    Match,
    MatchCounts,
    Matcher,
    add_matching_arguments,
    category_vocabulary,
    matched_boxes,
    matcher_from_arguments,
)
from vesl.records import LabeledImage

SIZES = (("small", 32**2), ("medium", 96**2), ("large", math.inf))  # name, area below which
LISTED_UNMATCHED = 20  # phrases the vocabulary did not match, most frequent first


def size_of(area: float) -> str:
    """COCO's size of an instance by its annotation area (pixels of the original image)."""
    return next(name for name, below in SIZES if area < below)


# -- The pure core: confusions and their metrics ---------------------------------------------------


@dataclass
class Confusion:
    """Per class the 2 x 2 confusion over every patch seen: counts only, so any number of images fits."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int) -> Confusion:
        return cls(*(np.zeros(num_classes, np.int64) for _ in range(4)))

    def add(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """One image's ``(G, G, C)`` binary prediction and target."""
        pred = np.asarray(prediction, bool).reshape(-1, len(self.tp))
        true = np.asarray(target, bool).reshape(-1, len(self.tp))
        self.tp += (pred & true).sum(0)
        self.fp += (pred & ~true).sum(0)
        self.fn += (~pred & true).sum(0)
        self.tn += (~pred & ~true).sum(0)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0.0 where the denominator is 0 (see the module docstring)."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def class_metrics(c: Confusion) -> dict[str, np.ndarray]:
    """Per class accuracy, recall, precision and F1 (``[C]`` each), as patch-seg defines them."""
    recall, precision = _ratio(c.tp, c.tp + c.fn), _ratio(c.tp, c.tp + c.fp)
    return {
        "accuracy": _ratio(c.tp + c.tn, c.tp + c.fp + c.fn + c.tn),
        "recall": recall,
        "precision": precision,
        "f1": _ratio(2 * precision * recall, precision + recall),
    }


def macro(c: Confusion, classes: Sequence[int], names: Sequence[str]) -> dict[str, Any]:
    """Macro means over those of ``classes`` with a positive patch (patch-seg's ``valid_classes``)."""
    per_class = class_metrics(c)
    scored = [i for i in classes if c.tp[i] + c.fn[i] > 0]
    means = {k: round(float(v[scored].mean()), 4) if scored else 0.0 for k, v in per_class.items()}
    return {
        **means,
        "classes_scored": len(scored),
        "classes_skipped": len(classes) - len(scored),
        "classes_without_predictions": [names[i] for i in scored if c.tp[i] + c.fp[i] == 0],
    }


def per_class_table(c: Confusion, names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class with a positive or a predicted patch: its counts and metrics."""
    metrics = class_metrics(c)
    rows = []
    for i, name in enumerate(names):
        if c.tp[i] + c.fn[i] + c.fp[i] == 0:
            continue
        counts = {k: int(getattr(c, k)[i]) for k in ("tp", "fp", "fn", "tn")}
        rows.append({"class": i, "name": name, **counts, **{k: round(float(v[i]), 4) for k, v in metrics.items()}})
    return rows


@dataclass(frozen=True)
class TruthTargets:
    """One image's ground truth: its ``(G, G, C)`` union targets, and per size the (patch, class)
    positives its instances of that size contribute (``(G, G, C)`` bool, class 0 never set)."""

    targets: np.ndarray
    by_size: dict[str, np.ndarray]
    instances: Counter


@dataclass
class PatchScore:
    """The score accumulated one image at a time; ``result()`` gives its JSON."""

    names: tuple[str, ...]  # class names, index 0 = unlabeled
    confusion: Confusion = field(init=False)
    size_positives: Counter = field(default_factory=Counter)
    size_hits: Counter = field(default_factory=Counter)
    size_instances: Counter = field(default_factory=Counter)
    images: int = 0

    def __post_init__(self) -> None:
        self.confusion = Confusion.zeros(len(self.names))

    def add(self, prediction: np.ndarray, truth: TruthTargets) -> None:
        self.images += 1
        self.confusion.add(prediction, truth.targets)
        for size, positives in truth.by_size.items():
            self.size_positives[size] += int(positives.sum())
            self.size_hits[size] += int((positives & prediction).sum())
        self.size_instances.update(truth.instances)

    def by_size(self) -> dict[str, dict[str, Any]]:
        out = {}
        for size, _ in SIZES:
            positives, hits = self.size_positives[size], self.size_hits[size]
            recall = round(hits / positives, 4) if positives else None
            out[size] = {"instances": self.size_instances[size], "positives": positives, "hits": hits, "recall": recall}
        return out

    def result(self) -> dict[str, Any]:
        c, names = self.confusion, self.names
        total = c.tp + c.fp + c.fn + c.tn
        return {
            "patches": int(total[0]) if len(total) else 0,
            "things": macro(c, range(1, len(names)), names),
            "all": macro(c, range(len(names)), names),
            "micro_accuracy": round(float((c.tp + c.tn).sum() / total.sum()), 4) if total.sum() else 0.0,
            "by_size": self.by_size(),
            "per_class": per_class_table(c, names),
        }


# -- Ground truth from instance masks --------------------------------------------------------------


def instance_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """An annotation's ``(H, W)`` bool mask: pycocotools' ``COCO.annToMask`` (polygons, uncompressed and
    compressed RLE), without building a ``COCO`` index (which prints to stdout)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def paint_instances(masks: Sequence[np.ndarray], areas: Sequence[float], height: int, width: int) -> np.ndarray:
    """The ``(H, W)`` instance map: 1 + the index of the instance shown at each pixel, 0 for none;
    largest area first (ties in input order), so smaller instances end on top (the box rule)."""
    out = np.zeros((height, width), np.int32)
    for i in np.argsort(-np.asarray(areas, np.float64), kind="stable"):
        out[masks[i]] = i + 1
    return out


def truth_targets(
    instance_map: np.ndarray,
    classes: Sequence[int],
    sizes: Sequence[str],
    grid: PatchGrid,
    num_classes: int,
    crop: str,
) -> TruthTargets:
    """An instance map's union targets and per-size positives, after the crop and NEAREST resize."""
    height, width = instance_map.shape
    xs, ys = sampled_pixels(width, height, grid.size, crop)
    sampled = np.where((ys[:, None] >= 0) & (xs[None, :] >= 0), instance_map[np.ix_(ys, xs)], 0)
    class_of = np.asarray([0, *classes], np.int64)
    labels = class_of[sampled]
    by_size = {}
    for size, _ in SIZES:
        shown = np.isin(sampled, [i + 1 for i, s in enumerate(sizes) if s == size])
        positives = reduce_patches(np.where(shown, labels, 0), grid.patch, num_classes)
        positives[..., 0] = False
        by_size[size] = positives
    return TruthTargets(reduce_patches(labels, grid.patch, num_classes), by_size, Counter(sizes))


def coco_truth(
    image: dict,
    annotations: Sequence[dict],
    class_of: dict[int, int],
    grid: PatchGrid,
    num_classes: int,
    crop: str,
) -> TruthTargets:
    """A COCO image's ground truth from its instance masks (crowd included)."""
    h, w = image["height"], image["width"]
    masks = [instance_mask(a["segmentation"], h, w) for a in annotations]
    instance_map = paint_instances(masks, [a["area"] for a in annotations], h, w)
    classes = [class_of[a["category_id"]] for a in annotations]
    sizes = [size_of(a["area"]) for a in annotations]
    return truth_targets(instance_map, classes, sizes, grid, num_classes, crop)


# -- VESL's side -----------------------------------------------------------------------------------


@dataclass
class RegionTally:
    """How the vocabulary took the regions: per kind of match and per class (``MatchCounts``), and the
    phrases it left unlabeled (most frequent first)."""

    counts: MatchCounts
    unmatched_phrases: Counter = field(default_factory=Counter)

    def add(self, phrase: str, match: Match) -> None:
        self.counts.add(match)
        if match.class_index is None:
            self.unmatched_phrases[phrase.lower()] += 1

    def result(self) -> dict[str, Any]:
        counts = self.counts.as_dict()
        return {
            "total": counts["regions"],
            "matched": self.counts.matched,
            "unmatched": self.counts.unmatched,
            "by_kind": counts["by_kind"],
            "by_class": counts["by_class"],
            "top_unmatched": [[phrase, n] for phrase, n in self.unmatched_phrases.most_common(LISTED_UNMATCHED)],
        }


def predicted_targets(
    item: LabeledImage,
    matcher: Matcher,
    tally: RegionTally,
    size: tuple[int, int],
    grid: PatchGrid,
    num_classes: int,
    crop: str,
) -> np.ndarray:
    """A VESL row's ``(G, G, C)`` union targets at the ground truth's image ``size`` (W, H): its regions
    whose phrase names a class, as boxes; every region's match counted in ``tally``."""
    phrases = [region.phrase for region in item.regions]
    boxes, classes, matches = matched_boxes([region.box for region in item.regions], phrases, matcher)
    for phrase, match in zip(phrases, matches):
        tally.add(phrase, match)
    return patch_targets(boxes, classes, *size, grid, num_classes, "union", crop)


def score_output(
    gt: dict[str, Any],
    labeled: Iterable[LabeledImage],
    grid: PatchGrid,
    crop: str = "center",
    matcher: Matcher | None = None,
) -> dict[str, Any]:
    """The patch-level score of VESL's rows against a COCO instances file (see the module docstring).
    ``matcher``: over ``category_vocabulary(gt["categories"])``; default by head noun."""
    from vesl.evaluate import match_images

    categories = gt["categories"]
    names = (UNLABELED, *(c["name"] for c in categories))
    class_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    matcher = matcher or Matcher(category_vocabulary(categories))
    score, regions = PatchScore(names), RegionTally(MatchCounts(matcher.vocabulary))
    for image, item in match_images(gt, labeled):
        if item is None:
            continue
        w, h = image["width"], image["height"]
        truth = coco_truth(image, by_image.get(image["id"], []), class_of, grid, len(names), crop)
        score.add(predicted_targets(item, matcher, regions, (w, h), grid, len(names), crop), truth)
    return {
        "size": grid.size,
        "patch": grid.patch,
        "grid": grid.grid,
        "crop": crop,
        "reduction": "union",
        "crowd": "included",
        "images_matched": score.images,
        "images_in_ground_truth": len(gt["images"]),
        "images_unmatched": len(gt["images"]) - score.images,
        **score.result(),
        "regions": regions.result(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vesl.evaluate patches",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", help="a VESL output folder (or Parquet files)")
    parser.add_argument("--gt", required=True, help="COCO-style instances JSON with segmentations")
    parser.add_argument("--size", type=int, default=224, help="the backbone's input side S (default 224)")
    parser.add_argument("--patch", type=int, default=16, help="the backbone's patch side p (default 16)")
    parser.add_argument("--crop", choices=CROPS, default="center", help="how the image becomes S x S")
    parser.add_argument("--json", default=None, help="also write the JSON here (e.g. for vesl.report --patch-score)")
    add_matching_arguments(parser)
    args = parser.parse_args(argv)
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        parser.exit(2, "vesl.evaluate patches needs pycocotools for the masks: pip install pycocotools\n")
    from vesl.export import iter_labeled

    with open(args.gt, encoding="utf-8") as f:
        gt = json.load(f)
    matcher = matcher_from_arguments(parser, args, category_vocabulary(gt["categories"]))
    result = {"ground_truth": args.gt, "output": args.output}
    grid = PatchGrid(args.size, args.patch)
    result.update(score_output(gt, iter_labeled(args.output), grid, args.crop, matcher))
    document = json.dumps(result, indent=2)
    if args.json:
        import fsspec

        with fsspec.open(args.json, "w", encoding="utf-8") as f:
            f.write(document + "\n")
    print(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
