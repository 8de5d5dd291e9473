"""Patch targets in patch-seg's geometry: equal to patch-seg's own code (known answers computed with it,
../shared/data/patchseg) and to the slow way (paint every pixel, crop and resize with Pillow, reduce
patch by patch) on random cases of every crop."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vesl.patchseg.targets import (
    CROPS,
    PatchGrid,
    paint_label_map,
    patch_targets,
    pillow_nearest_sources,
    reduce_patches,
    sampled_label_map,
    sampled_pixels,
    union_entries,
)

KNOWN_ANSWERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "patchseg" / "known_answers.json.gz"
SETTINGS = [(224, 16), (224, 14), (336, 14), (384, 14), (448, 14)]


def known_cases() -> list[dict]:
    if not KNOWN_ANSWERS.exists():
        pytest.skip(f"{KNOWN_ANSWERS} is not here (the shared data folder)")
    with gzip.open(KNOWN_ANSWERS, "rt") as f:
        return json.load(f)["cases"]


def test_known_answers_cover_what_they_promise():
    cases = known_cases()
    assert len(cases) == 120
    assert any(not c["boxes"] for c in cases)  # empty images
    assert any(min((b[2] - b[0]) * c["width"] for b in c["boxes"]) < 1 for c in cases if c["boxes"])  # sub-pixel
    assert {tuple(map(int, k.split("/"))) for c in cases for k in c["targets"]} == set(SETTINGS)


def test_painter_equals_the_known_label_maps():
    for case in known_cases():
        label_map = paint_label_map(case["boxes"], case["classes"], case["width"], case["height"]).astype(np.int64)
        assert label_map.shape == (case["height"], case["width"])
        assert (label_map.sum(), (label_map > 0).sum()) == (case["label_map_sum"], case["label_map_labeled"])


@pytest.mark.parametrize(("size", "patch"), SETTINGS)
def test_targets_equal_patch_segs_own(size, patch):
    grid = PatchGrid(size, patch)
    for n, case in enumerate(known_cases()):
        answer = case["targets"][f"{size}/{patch}"]
        args = (case["boxes"], case["classes"], case["width"], case["height"], grid, case["num_classes"])
        assert grid.grid == int(answer["grid"])
        assert union_entries(patch_targets(*args, reduction="union")) == answer["union"], n
        assert patch_targets(*args, reduction="majority").tolist() == answer["majority"], n


@pytest.mark.parametrize("target", [1, 2, 14, 27, 224, 336, 384, 448])
def test_nearest_sources_are_pillows(target):
    # Pillow accumulates the source position step by step; the closed form floor((i + 0.5) * step)
    # differs from it on some sizes (e.g. 18 -> 27), which is why the code follows Pillow.
    for source in [*range(1, 700), 1024, 1333, 3999, 4000, 4001]:
        index = Image.fromarray(np.tile(np.arange(source, dtype=np.int32), (2, 1)))
        read = np.asarray(index.resize((target, 2), Image.Resampling.NEAREST))[0]
        np.testing.assert_array_equal(pillow_nearest_sources(source, target), read, err_msg=f"{source} -> {target}")


# -- the slow way, independent of the module's painting and sampling -------------------------------------


def brute_label_map(boxes, classes, width: int, height: int) -> np.ndarray:
    """Paint every pixel: the smallest box containing the pixel's centre wins, the later one on ties."""
    label = np.zeros((height, width), np.uint8)
    best_area = np.full((height, width), np.inf)
    cx, cy = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    for box, cls in zip(boxes, classes):
        x1, y1, x2, y2 = box
        area = (x2 - x1) * (y2 - y1)
        inside = (cx >= x1 * width) & (cx < x2 * width) & (cy >= y1 * height) & (cy < y2 * height)
        wins = inside & (area <= best_area)
        label[wins], best_area[wins] = cls, area
    return label


def pillow_resized(label: np.ndarray, size: int, crop: str) -> np.ndarray:
    image = Image.fromarray(label)
    w, h = image.size
    if crop == "center":
        side = min(w, h)
        x, y = (w - side) // 2, (h - side) // 2
        image = image.crop((x, y, x + side, y + side))
    elif crop == "letterbox":
        canvas = Image.new("L", (max(w, h), max(w, h)), 0)
        canvas.paste(image, (0, 0))
        image = canvas
    return np.asarray(image.resize((size, size), Image.Resampling.NEAREST), np.int64)


def brute_reduce(label: np.ndarray, patch: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    g = label.shape[0] // patch
    union = np.zeros((g, g, num_classes), bool)
    majority = np.zeros((g, g), np.int64)
    for r in range(g):
        for c in range(g):
            block = label[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].reshape(-1)
            counts = Counter(block.tolist())
            top = max(counts.values())
            majority[r, c] = min(k for k, v in counts.items() if v == top)
            classes = set(counts) - ({0} if len(counts) > 1 else set())
            union[r, c, sorted(classes)] = True
    return union, majority


edge = st.sampled_from([0.0, 1.0, 0.5, 1e-4, 0.9999])
coordinate = st.one_of(edge, st.floats(0, 1))


@st.composite
def cases(draw):
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    boxes = []
    for _ in range(draw(st.integers(0, 6))):
        xs, ys = sorted([draw(coordinate), draw(coordinate)]), sorted([draw(coordinate), draw(coordinate)])
        boxes.append([xs[0], ys[0], xs[1], ys[1]])
    num_classes = draw(st.sampled_from([2, 8, 183]))
    classes = [draw(st.integers(1, num_classes - 1)) for _ in boxes]
    return width, height, boxes, classes, num_classes


@settings(max_examples=150, deadline=None)
@given(cases(), st.sampled_from(CROPS), st.sampled_from([(28, 7), (30, 4), (32, 32), (56, 14), (8, 1)]))
def test_targets_equal_painting_every_pixel_and_resizing_with_pillow(case, crop, setting):
    width, height, boxes, classes, num_classes = case
    size, patch = setting
    label = brute_label_map(boxes, classes, width, height)
    np.testing.assert_array_equal(paint_label_map(boxes, classes, width, height), label)
    union, majority = brute_reduce(pillow_resized(label, size, crop), patch, num_classes)
    grid = PatchGrid(size, patch)
    args = (boxes, classes, width, height, grid, num_classes)
    np.testing.assert_array_equal(patch_targets(*args, reduction="union", crop=crop), union)
    np.testing.assert_array_equal(patch_targets(*args, reduction="majority", crop=crop), majority)
    sampled = sampled_label_map(boxes, classes, width, height, size, crop)
    np.testing.assert_array_equal(reduce_patches(sampled, patch, num_classes, "union"), union)


def test_reduction_keeps_unlabeled_only_alone_and_breaks_ties_low():
    label = np.array([[0, 3], [3, 0]])  # a tie between 0 and 3 in one 2 x 2 patch
    assert reduce_patches(label, 2, 4, "majority").tolist() == [[0]]
    assert reduce_patches(label, 2, 4, "union")[0, 0].tolist() == [False, False, False, True]
    assert reduce_patches(np.zeros((2, 2), int), 2, 4, "union")[0, 0].tolist() == [True, False, False, False]


def test_a_box_of_class_0_paints_unlabeled_over_what_it_covers():
    boxes, classes = [[0, 0, 1, 1], [0, 0, 0.5, 1]], [1, 0]  # the smaller, on top, is "unlabeled"
    got = patch_targets(boxes, classes, 40, 40, PatchGrid(4, 2), 2, "majority", "none")
    assert got.tolist() == [[0, 1], [0, 1]]
    brute = brute_reduce(pillow_resized(brute_label_map(boxes, classes, 40, 40), 4, "none"), 2, 2)[1]
    assert got.tolist() == brute.tolist()


def test_bad_arguments_are_refused():
    for size, patch in ((16, 0), (8, 16), (8, -1)):
        with pytest.raises(ValueError, match=f"1 <= patch <= size, got size {size}, patch {patch}"):
            PatchGrid(size, patch)
    assert PatchGrid(1, 1).grid == 1 and PatchGrid(14, 14).grid == 1
    for bad in (4, -1):
        with pytest.raises(ValueError, match=r"label map holds classes outside 0\.\.3$"):
            reduce_patches(np.full((2, 2), bad), 2, 4)
        with pytest.raises(ValueError, match=r"boxes hold classes outside 0\.\.3$"):
            patch_targets([[0, 0, 1, 1]], [bad], 10, 10, PatchGrid(28, 14), 4)
    reduce_patches(np.full((2, 2), 3), 2, 4)  # the largest class fits
    with pytest.raises(ValueError, match="2 boxes but 1 classes"):
        paint_label_map([[0, 0, 1, 1], [0, 0, 1, 1]], [1], 10, 10)
    with pytest.raises(ValueError, match="reduction must be one of"):
        patch_targets([], [], 10, 10, PatchGrid(28, 14), 2, reduction="mean")
    with pytest.raises(ValueError, match="crop"):
        patch_targets([], [], 10, 10, PatchGrid(28, 14), 2, crop="middle")
    with pytest.raises(ValueError, match="reduction"):
        reduce_patches(np.zeros((4, 4), int), 2, 2, "mean")
    with pytest.raises(ValueError, match="classes outside"):
        patch_targets([[0, 0, 1, 1]], [5], 10, 10, PatchGrid(28, 14), 5)
    with pytest.raises(ValueError, match="boxes but"):
        patch_targets([[0, 0, 1, 1]], [], 10, 10, PatchGrid(28, 14), 5)


def test_reader_targets_leave_unmatched_regions_out_instead_of_painting_them_unlabeled():
    from vesl.patchseg.vocabulary import Vocabulary
    from vesl.training.patches import PatchClassTargets, reader_patch_classes

    targets = PatchClassTargets(Vocabulary(("cat", "dog")), PatchGrid(32, 16), "majority", "none")
    # a cat over the whole image, a dog on the top-left patch, a smaller unnamed box on the bottom right
    boxes = [[0, 0, 1, 1], [0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]
    got = targets(boxes, ["a cat", "two dogs", "a thing"], 100, 60)
    assert got.tolist() == [[2, 1], [1, 1]]
    assert targets.num_classes == 3
    assert reader_patch_classes(Vocabulary(("cat",)), 224, 16, "center_crop").crop == "center"
    with pytest.raises(ValueError, match="pad_center"):
        reader_patch_classes(Vocabulary(("cat",)), 224, 16, "pad_center")


def test_the_default_crop_is_patch_segs_centre_square():
    xs, ys = sampled_pixels(300, 100, 10)  # the square is x in [100, 200)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (105, 195, 5, 95)
    boxes, classes = [[0, 0, 0.5, 1]], [1]  # the left half: the square's left half is x in [100, 150)
    assert sampled_label_map(boxes, classes, 300, 100, 10)[0].tolist() == [1] * 5 + [0] * 5
