"""The patch-seg export (``vesl.patchseg.export``, ``python -m vesl.export patchseg``) on a small output
folder written as a run writes it: real photos (the bundled ones, cropped to odd sizes, one as PNG and
one with an EXIF turn), one shard whose rows hold their image bytes, one whose rows read their images
back from a webdataset input shard (with a broken image in it), one whose input is gone.

Checked against code written here, not against the export's own helpers: every annotation against a
per-pixel painter of the rule (largest box first, ties in input order, pixel centre in the half-open
box), and each annotation reduced as patch-seg reduces it against ``patch_targets`` from the boxes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.unit.test_outputs import write_shard
from vesl.export import iter_labeled, main
from vesl.io.shard_writers import RawSample, write_webdataset
from vesl.patchseg.export import (
    MAX_CLASSES,
    ExportError,
    check_classes,
    safe_stem,
    split_fraction,
    split_of,
)
from vesl.patchseg.targets import PatchGrid, patch_targets, reduce_patches
from vesl.patchseg.vocabulary import Vocabulary
from vesl.records import ImageRecord, LabeledImage, Phrase, Region

CLASSES = ("cat", "dog", "car", "umbrella")
# The phrases regions get, and the class each names (0: none: not painted).
PHRASES = {"a cat": 1, "two dogs": 2, "the red car": 3, "an umbrella": 4, "a thing on the wall": 0}
KEYS_WITH_BYTES = ["plain-key_1", "a/b/../c.jpg", "..", "ünïcode key", "x" * 300, "CamelCase.PNG", "rotated"]


def jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def random_regions(rng: random.Random, n: int, whole: bool) -> tuple[Region, ...]:
    """Overlapping boxes of every size (some under a pixel, some at the edges), with two of equal area
    (the tie goes to input order), phrases that name no class, and (``whole``) one box on the whole
    image, so that nothing stays unlabeled."""
    regions = []
    phrases = list(PHRASES)
    for i in range(n):
        x0, y0 = rng.random() * 0.9, rng.random() * 0.9
        w, h = rng.choice([0.001, 0.05, 0.3, 0.7, 1.0]) * (1 - x0), rng.random() * (1 - y0)
        box = (x0, y0, x0 + w, y0 + h)
        phrase = phrases[i % len(phrases)]
        regions.append(Region(phrase, 0, len(phrase), "spacy", i, box, 0.5, 0.5))
    tie = (0.25, 0.25, 0.75, 0.5)  # equal area, overlapping: the first of the two is painted first
    regions.append(Region("a cat", 0, 5, "spacy", n, tie, 0.5, 0.5))
    regions.append(Region("two dogs", 0, 8, "spacy", n + 1, (0.25, 0.375, 0.75, 0.625), 0.5, 0.5))
    if whole:
        regions.append(Region("an umbrella", 0, 11, "spacy", n + 2, (0.0, 0.0, 1.0, 1.0), 0.5, 0.5))
    return tuple(regions)


def labeled(key: str, shard: str, index: int, data: bytes, size: tuple[int, int], seed: int) -> LabeledImage:
    phrases = tuple(Phrase(p, 0, len(p), "spacy") for p in PHRASES)
    record = ImageRecord(key, shard, index, "a caption", data, None, phrases, size[0], size[1], "JPEG")
    return LabeledImage(record, random_regions(random.Random(seed), 12, whole=seed % 3 == 0))


def displayed_size(data: bytes) -> tuple[int, int]:
    from vesl.vision.decode import decode_image

    return decode_image(data, 10**8).image.size


@pytest.fixture(scope="module")
def images(photo_samples) -> dict[str, bytes]:
    """Encoded images by key: the photos resized to odd sizes as JPEG, one as PNG, one as a JPEG with EXIF
    orientation 6 (displayed turned: the size and boxes of the row are the displayed ones)."""
    photos = [Image.open(io.BytesIO(p.image)).convert("RGB") for p in photo_samples]
    sizes = [(301, 157), (97, 233), (256, 256), (123, 77), (640, 479), (33, 65), (200, 120)]
    out = {}
    for i, key in enumerate(KEYS_WITH_BYTES):
        crop = photos[i % len(photos)].resize(sizes[i])
        if key == "CamelCase.PNG":
            buffer = io.BytesIO()
            crop.save(buffer, "PNG")
            out[key] = buffer.getvalue()
        elif key == "rotated":
            exif = Image.Exif()
            exif[0x0112] = 6  # displayed turned by 90 degrees: 120 x 200
            out[key] = jpeg(crop, exif=exif.tobytes())
        else:
            out[key] = jpeg(crop)
    return out


@pytest.fixture(scope="module")
def output(tmp_path_factory, images, photo_samples) -> dict:
    """An output folder: shard "bytes" (rows with their images, plus a duplicate key, an image whose size
    is not the row's, a row with neither bytes nor input), shard "input" (rows read back from a webdataset
    input shard; one record there is not an image), shard "gone" (its input is missing); exported once."""
    root = tmp_path_factory.mktemp("patchseg")
    out = root / "out"
    with_bytes = [
        labeled(key, "/in/bytes.tar", i, data, displayed_size(data), seed=i)
        for i, (key, data) in enumerate(images.items())
    ]
    # A key seen twice (a folder of Parquet files need not be deduplicated) and an image whose size is
    # not the row's (the input changed since the run): both skipped.
    with_bytes.append(with_bytes[0])
    with_bytes.append(labeled("wrong-size", "/in/bytes.tar", 99, images["plain-key_1"], (10, 10), seed=9))
    with_bytes.append(labeled("no-source", "", 100, b"", (10, 10), seed=10))  # no bytes, no input recorded
    write_shard(out, "/in/bytes.tar", with_bytes, [], row_group=3)
    tar = root / "input" / "input.tar"
    tar.parent.mkdir()
    samples = [RawSample(f"in-{i}", p.image, p.caption) for i, p in enumerate(photo_samples)]
    samples.append(RawSample("in-broken", b"not an image at all", "a broken image"))
    write_webdataset(str(tar), samples)
    from_input = [
        labeled(s.key, str(tar), i, b"", displayed_size(s.image) if i < len(photo_samples) else (50, 40), 100 + i)
        for i, s in enumerate(samples)
    ]
    write_shard(out, str(tar), from_input, [], row_group=1000)
    gone = [labeled("gone-0", str(root / "moved.tar"), 0, b"", (64, 48), 200)]
    write_shard(out, str(root / "moved.tar"), gone, [], row_group=1000)
    vocabulary = root / "vocabulary.txt"
    vocabulary.write_text("# test classes\n" + "\n".join(CLASSES) + "\n", encoding="utf-8")
    dest = root / "dest"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["patchseg", str(out), str(dest), "--vocabulary", str(vocabulary), "--validation-fraction", "0.4"])
    inputs = {s.key: s.image for s in samples}
    return {
        "out": out,
        "dest": dest,
        "code": code,
        "printed": printed.getvalue(),
        "vocabulary": vocabulary,
        "images": images,
        "inputs": inputs,
    }


def written(dest: Path) -> dict[str, dict]:
    """keys.jsonl: key -> {stem, split}."""
    lines = (dest / "keys.jsonl").read_text(encoding="utf-8").splitlines()
    return {entry["key"]: entry for entry in map(json.loads, lines)}


def rows_by_key(out: Path) -> dict[str, LabeledImage]:
    return {item.record.key: item for item in iter_labeled(str(out))}


def matched(item: LabeledImage) -> tuple[list, list[int]]:
    """The boxes and classes of the regions whose phrase names a class, in row order."""
    pairs = [(r.box, PHRASES[r.phrase]) for r in item.regions if PHRASES[r.phrase]]
    return [b for b, _ in pairs], [c for _, c in pairs]


def brute_force_label_map(boxes, classes, width: int, height: int) -> np.ndarray:
    """The rule over every pixel's centre at once: boxes sorted by area, largest first (ties: input
    order, Python's sort is stable), each painting the pixels whose centre its half-open extent holds."""
    order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    cy, cx = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    out = np.zeros((height, width), np.uint8)
    for i in order:
        x1, y1, x2, y2 = boxes[i]
        out[(x1 * width <= cx) & (cx < x2 * width) & (y1 * height <= cy) & (cy < y2 * height)] = classes[i]
    return out


def patchseg_targets(png: Path, size: int, patch: int, num_classes: int, reduction: str) -> np.ndarray:
    """What patch-seg's annotation transform makes of a PNG: LargestCenterCrop, Resize NEAREST, reduce."""
    annotation = Image.open(png)
    side = min(annotation.size)
    x, y = (annotation.width - side) // 2, (annotation.height - side) // 2
    resized = annotation.crop((x, y, x + side, y + side)).resize((size, size), Image.NEAREST)
    return reduce_patches(np.asarray(resized), patch, num_classes, reduction)


def test_the_export_succeeds_and_its_counts_balance(output):
    assert output["code"] == 0
    counts = json.loads((output["dest"] / "class_counts.json").read_text())
    written_total = sum(counts["images_written"].values())
    skipped_total = sum(counts["images_skipped"].values())
    assert counts["rows_read"] == len(KEYS_WITH_BYTES) + 8 == written_total + skipped_total and counts["balanced"]
    assert written_total == len(KEYS_WITH_BYTES) + 3 and all(counts["images_written"].values())


def test_every_annotation_equals_a_per_pixel_painter_of_the_rule(output):
    rows = rows_by_key(output["out"])
    entries = written(output["dest"])
    assert len(entries) == len(KEYS_WITH_BYTES) + 3
    for key, entry in entries.items():
        png = output["dest"] / "annotations" / entry["split"] / f"{entry['stem']}.png"
        annotation = Image.open(png)
        item = rows[key]
        assert annotation.mode == "L" and annotation.size == (item.record.width, item.record.height)
        expected = brute_force_label_map(*matched(item), item.record.width, item.record.height)
        np.testing.assert_array_equal(np.asarray(annotation), expected, err_msg=key)


@pytest.mark.parametrize("reduction", ["union", "majority"])
@pytest.mark.parametrize("size,patch", [(224, 16), (448, 14)])
def test_annotations_reduced_as_patchseg_does_equal_patch_targets_of_the_boxes(output, reduction, size, patch):
    rows = rows_by_key(output["out"])
    num_classes = len(CLASSES) + 1
    for key, entry in written(output["dest"]).items():
        item = rows[key]
        png = output["dest"] / "annotations" / entry["split"] / f"{entry['stem']}.png"
        got = patchseg_targets(png, size, patch, num_classes, reduction)
        boxes, classes = matched(item)
        grid = PatchGrid(size, patch)
        direct = patch_targets(boxes, classes, item.record.width, item.record.height, grid, num_classes, reduction)
        np.testing.assert_array_equal(got, direct, err_msg=key)


def test_images_and_annotations_pair_exactly_as_patchseg_checks(output):
    dest, images = output["dest"], output["images"]
    entries = written(dest)
    assert len({e["stem"] for e in entries.values()}) == len(entries)  # one stem per key
    for split in ("training", "validation"):
        image_files = sorted(os.listdir(dest / "images" / split))
        annotation_files = sorted(os.listdir(dest / "annotations" / split))
        assert len(image_files) == len(annotation_files) == sum(e["split"] == split for e in entries.values())
        for image_file, annotation_file in zip(image_files, annotation_files):  # patch-seg's own assertion
            assert image_file == annotation_file.split(".")[0] + ".jpg"
            with Image.open(dest / "images" / split / image_file) as image:
                assert image.format == "JPEG" and image.size == Image.open(dest / "annotations" / split / annotation_file).size  # fmt: skip
    index_to_class = json.loads((dest / "index_to_class.json").read_text())
    assert index_to_class == {"0": "unlabeled", "1": "cat", "2": "dog", "3": "car", "4": "umbrella"}
    for key, entry in entries.items():
        assert entry["split"] == split_of(key, 0.4) and entry["stem"] == safe_stem(key)
        assert "/" not in entry["stem"] and "." not in entry["stem"] and len(entry["stem"]) <= 128
    jpg = {key: (dest / "images" / e["split"] / f"{e['stem']}.jpg").read_bytes() for key, e in entries.items()}
    assert jpg["plain-key_1"] == images["plain-key_1"]  # a JPEG is copied, not compressed again
    assert jpg["CamelCase.PNG"] != images["CamelCase.PNG"] and Image.open(io.BytesIO(jpg["CamelCase.PNG"])).format == "JPEG"  # fmt: skip
    turned = Image.open(io.BytesIO(jpg["rotated"]))  # stored as displayed (the boxes' convention), no EXIF turn
    assert turned.size == (120, 200) and turned.getexif().get(0x0112, 1) == 1
    assert jpg["in-0"] == output["inputs"]["in-0"]  # read back from the input shard, copied as it is


def test_broken_and_missing_images_are_skipped_counted_and_said(output):
    counts = json.loads((output["dest"] / "class_counts.json").read_text())
    reasons = {"broken_image": 1, "duplicate_stem": 1, "input_unreadable": 1, "no_source_shard": 1, "size_mismatch": 1}
    assert counts["images_skipped"] == reasons
    skipped = [json.loads(line) for line in (output["dest"] / "skipped.jsonl").read_text().splitlines()]
    assert sorted((s["key"], s["reason"]) for s in skipped) == [
        ("gone-0", "input_unreadable"),
        ("in-broken", "broken_image"),
        ("no-source", "no_source_shard"),
        ("plain-key_1", "duplicate_stem"),
        ("wrong-size", "size_mismatch"),
    ]
    assert {"in-broken", "gone-0", "wrong-size", "no-source"}.isdisjoint(written(output["dest"]))
    said = [line for line in output["printed"].splitlines() if line.startswith("skipped ")]
    assert len(said) == 5 and all(s["key"] in line for s, line in zip(skipped, said))
    summary = output["printed"].splitlines()[-1]
    assert (
        "skipped 5 (broken_image 1, duplicate_stem 1, input_unreadable 1, no_source_shard 1, size_mismatch 1)"
        in summary
    )


def test_the_class_counts_are_the_annotations(output):
    dest = output["dest"]
    counts = json.loads((dest / "class_counts.json").read_text())
    pixels = np.zeros(len(CLASSES) + 1, np.int64)
    images = np.zeros(len(CLASSES) + 1, np.int64)
    for entry in written(dest).values():
        found = np.bincount(np.asarray(Image.open(dest / "annotations" / entry["split"] / f"{entry['stem']}.png")).reshape(-1), minlength=len(CLASSES) + 1)  # fmt: skip
        pixels += found
        images += found > 0
    assert [c["pixels"] for c in counts["classes"]] == pixels.tolist()
    assert [c["images"] for c in counts["classes"]] == images.tolist()
    rows = rows_by_key(output["out"])
    regions = [r for key in written(dest) for r in rows[key].regions]
    assert counts["regions_unmatched"] == sum(PHRASES[r.phrase] == 0 for r in regions)
    assert counts["regions_matched"] == sum(PHRASES[r.phrase] > 0 for r in regions)
    assert [c["regions"] for c in counts["classes"]][1:] == [sum(PHRASES[r.phrase] == i for r in regions) for i in range(1, 5)]  # fmt: skip
    assert counts["matches_by_kind"]["head"] == counts["regions_matched"]
    csv_lines = (dest / "class_counts.csv").read_text().splitlines()
    assert csv_lines[0] == "index,name,regions,images,pixels" and len(csv_lines) == len(CLASSES) + 2


def test_more_than_255_classes_is_one_line_of_error_before_any_work(output, tmp_path, capsys):
    names = tmp_path / "many.txt"
    names.write_text("\n".join(f"class{i}" for i in range(MAX_CLASSES)) + "\n")
    dest = tmp_path / "dest"
    assert main(["patchseg", str(output["out"]), str(dest), "--vocabulary", str(names)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "256 classes" in err and "at most 255" in err
    assert not dest.exists()
    check_classes(Vocabulary(tuple(f"class{i}" for i in range(MAX_CLASSES - 1))))  # 255 fit
    with pytest.raises(ExportError):
        check_classes(Vocabulary(tuple(f"class{i}" for i in range(MAX_CLASSES))))


def test_a_second_export_into_the_same_folder_is_refused(output, capsys):
    code = main(["patchseg", str(output["out"]), str(output["dest"]), "--vocabulary", str(output["vocabulary"])])
    assert code == 2 and "not empty" in capsys.readouterr().err


def test_the_split_is_a_stable_hash_of_the_key_near_the_fraction():
    keys = [f"{i:012d}" for i in range(20000)]
    validation = [k for k in keys if split_of(k, 0.1) == "validation"]
    assert abs(len(validation) / len(keys) - 0.1) < 0.01
    assert [split_of(k, 0.1) for k in keys[:500]] == [split_of(k, 0.1) for k in keys[:500]]
    # Pinned: the same key lands in the same split on any machine, in any later version.
    assert split_fraction("000000000139") == pytest.approx(int("b7a38ee10e5ec203", 16) / 2**64)
    assert split_of("x", 0.0) == "training" and split_of("x", 1.0) == "validation"
    salted = [k for k in keys if split_of(k, 0.1, salt="another") == "validation"]
    assert abs(len(salted) / len(keys) - 0.1) < 0.01 and len(set(salted) & set(validation)) < len(validation) / 3


def test_stems_are_safe_unique_and_stable():
    keys = ["abc", "a/b", "a_b", "a.b", "..", ".", "", "A", "a", "x" * 500, "x" * 499, "ü", "u", "a~b"]
    stems = [safe_stem(k) for k in keys]
    assert len(set(stems)) == len(stems)
    assert safe_stem("abc") == "abc" and safe_stem("a/b") == safe_stem("a/b")
    for stem in stems:
        assert stem and "/" not in stem and "." not in stem and len(stem) <= 128


def test_limit_reads_at_most_n_rows_and_the_vocabulary_command_writes_heads(output, tmp_path, capsys):
    dest = tmp_path / "limited"
    assert main(["patchseg", str(output["out"]), str(dest), "--vocabulary", "coco_things", "--limit", "5"]) == 0
    counts = json.loads((dest / "class_counts.json").read_text())
    assert counts["rows_read"] == 5 and len(json.loads((dest / "index_to_class.json").read_text())) == 81
    assert main(["vocabulary", str(output["out"]), str(tmp_path / "heads.txt"), "--top", "3"]) == 0
    heads = Vocabulary.load(str(tmp_path / "heads.txt"))
    assert len(heads) == 3 and set(heads.names) <= {"cat", "dog", "car", "umbrella", "thing"}


def test_the_embedding_match_labels_what_the_head_noun_leaves(output, tmp_path, tiny_checkpoint, capsys):
    # "a thing on the wall" names no class by its head; the tiny detector's text tower with a threshold
    # of -1 (every similarity passes) gives it its nearest class, so no region stays unmatched.
    dest = tmp_path / "embedded"
    args = ["patchseg", str(output["out"]), str(dest), "--vocabulary", str(output["vocabulary"])]
    assert main([*args, "--match-embedding", tiny_checkpoint, "--embedding-threshold", "-1"]) == 0
    counts = json.loads((dest / "class_counts.json").read_text())
    plain = json.loads((output["dest"] / "class_counts.json").read_text())
    assert counts["matches_by_kind"]["embedding"] == plain["matches_by_kind"]["unmatched"] > 0
    assert counts["matches_by_kind"]["unmatched"] == 0 and counts["balanced"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([*args[:2], str(tmp_path / "other"), *args[3:], "--match-embedding", tiny_checkpoint])
    assert stop.value.code == 2 and "--embedding-threshold" in capsys.readouterr().err


def test_a_vocabulary_larger_than_patch_segs_ade20k_class_count_is_pointed_out(output, tmp_path, capsys):
    # coco_stuff's 182 classes fit a PNG but not Ade20kPatchDataset's fixed 151 classes
    dest = tmp_path / "stuff"
    assert main(["patchseg", str(output["out"]), str(dest), "--vocabulary", "coco_stuff"]) == 0
    assert "set its num_classes to 183" in capsys.readouterr().out
    assert main(["patchseg", str(output["out"]), str(tmp_path / "few"), "--vocabulary", str(output["vocabulary"])]) == 0
    assert "num_classes" not in capsys.readouterr().out
