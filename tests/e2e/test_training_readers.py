"""Training jobs read the output: the PyTorch dataset in a training-loop shape, tf.data (where
TensorFlow is installed) and the numpy reader, the GRIT and COCO exports, the report, the evaluation."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pipelines.vesl import run
from tests.unit.test_outputs import write_shard
from tests.unit.test_patchseg_export import CLASSES, jpeg, labeled
from vesl.evaluate import evaluate
from vesl.export import GRIT_SCHEMA, export_coco, export_grit, iter_labeled
from vesl.io.shard_writers import RawSample, write_webdataset
from vesl.patchseg.targets import PatchGrid
from vesl.patchseg.vocabulary import Vocabulary
from vesl.records import ImageRecord, LabeledImage, Region
from vesl.report import build_report
from vesl.training.patches import PatchClassTargets
from vesl.training.tfdata import example_patch_classes, iter_numpy_examples
from vesl.training.torch_dataset import VeslRegionDataset, collate_regions

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def output(tmp_path_factory, tiny_checkpoint, photo_samples):
    root = tmp_path_factory.mktemp("training")
    for shard in range(3):  # 3 shards x 3 photos, distinct keys
        samples = [RawSample(f"{shard}-{s.key}", s.image, s.caption) for s in photo_samples]
        write_webdataset(str(root / f"part-{shard}.tar"), samples)
    out = root / "out"
    run(
        [
            "--input",
            str(root / "*.tar"),
            "--output",
            str(out),
            "--checkpoint",
            tiny_checkpoint,
            "--image_size",
            "64",
            "--score_threshold",
            "0",
            "--max_candidates",
            "6",
            "--write_image_bytes",
            "true",
            "--runner",
            "FnApiRunner",
        ]
    )
    return out


def all_keys(out) -> set[str]:
    return {
        k for f in (out / "parquet").glob("*.parquet") for k in pq.read_table(f, columns=["key"]).column(0).to_pylist()
    }


def test_a_training_loop_with_two_workers_sees_each_image_once_per_epoch(output):
    keys = all_keys(output)
    assert len(keys) == 9
    dataset = VeslRegionDataset(
        str(output / "parquet"),
        size=64,
        mode="pad_center",
        regions_per_image=4,
        patch_size=16,
        shuffle_buffer=4,
        seed=7,
    )
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_regions)
    orders = []
    for epoch in range(2):
        dataset.set_epoch(epoch)
        seen = []
        for batch in loader:  # what a training step gets
            assert batch["image"].shape[1:] == (3, 64, 64) and batch["image"].dtype == torch.uint8
            assert batch["boxes"].shape[1:] == (4, 4) and batch["valid"].shape[1:] == (4,)
            boxes, valid = batch["boxes"][batch["valid"]], batch["valid"]
            assert (boxes >= 0).all() and (boxes <= 64).all()
            assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
            assert batch["patch_masks"].shape[1:] == (4, 4, 4)
            assert not batch["patch_masks"][~valid].any()
            assert batch["patch_region_index"].shape[1:] == (4, 4)
            assert all(len(p) == 4 for p in batch["phrases"])
            seen += batch["key"]
        assert sorted(seen) == sorted(keys)  # every image exactly once per epoch
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled between epochs


@pytest.mark.parametrize("mode", ["resize", "pad_center", "pad_bottom_right"])
def test_ranks_split_without_overlap_and_boxes_stay_inside(output, mode):
    """9 images over 2 ranks: 5 each with remainder "pad" (one image read twice), every image read."""
    seen = []
    per_rank = []
    for rank in range(2):
        dataset = VeslRegionDataset(
            str(output / "parquet" / "*.parquet"),
            size=48,
            mode=mode,
            rank=rank,
            world_size=2,
            regions_per_image=8,
            seed=1,
            remainder="pad",
        )
        count = 0
        for example in dataset:
            boxes = example["boxes"][example["valid"]]
            assert (boxes >= 0).all() and (boxes <= 48).all()
            seen.append(example["key"])
            count += 1
        per_rank.append(count)
    assert per_rank == [5, 5] and set(seen) == all_keys(output) and len(seen) == 10


def test_dataset_explains_missing_image_bytes(tmp_path, output):
    table = pq.read_table(next((output / "parquet").glob("*.parquet")))
    pq.write_table(table.drop(["image"]), tmp_path / "noimages.parquet")
    with pytest.raises(ValueError, match="--write_image_bytes"):
        next(iter(VeslRegionDataset(str(tmp_path / "noimages.parquet"))))


@pytest.fixture(scope="module")
def region_output(tmp_path_factory, photo_samples) -> tuple[Path, str]:
    """An output folder of portrait and landscape photos (with their bytes) whose regions overlap at
    every size and name classes of a 4-class vocabulary (or none); and that vocabulary's file."""
    root = tmp_path_factory.mktemp("patch-classes")
    photos = [Image.open(io.BytesIO(p.image)).convert("RGB") for p in photo_samples]
    items = []
    for i, size in enumerate([(301, 157), (97, 233), (256, 256), (640, 479), (33, 65), (120, 200)]):
        data = jpeg(photos[i % len(photos)].resize(size))
        items.append(labeled(f"r{i}", "/in/regions.tar", i, data, size, seed=i))
    write_shard(root / "out", "/in/regions.tar", items, [], row_group=2)
    vocabulary = root / "classes.txt"
    vocabulary.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return root / "out", str(vocabulary)


def expected_patch_classes(output, vocabulary: str, grid: PatchGrid, crop: str, reduction: str) -> dict:
    targets = PatchClassTargets(Vocabulary.load(vocabulary), grid, reduction, crop)
    expected = {}
    for item in iter_labeled(str(output)):
        boxes = [r.box for r in item.regions]
        phrases = [r.phrase for r in item.regions]
        expected[item.record.key] = targets(boxes, phrases, item.record.width, item.record.height)
    return expected


@pytest.mark.parametrize(("mode", "crop"), [("center_crop", "center"), ("pad_bottom_right", "letterbox")])
def test_torch_reader_gives_patch_seg_class_targets_of_every_region(region_output, mode, crop):
    output, vocabulary_file = region_output
    vocabulary = Vocabulary.load(vocabulary_file)
    expected = expected_patch_classes(output, vocabulary_file, PatchGrid(64, 16), crop, "union")
    assert all(t[..., 1:].sum() for t in expected.values())  # every image has a matched region
    dataset = VeslRegionDataset(
        str(output), size=64, mode=mode, regions_per_image=2, patch_size=16, patch_vocabulary=vocabulary
    )
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_regions)
    seen = set()
    for batch in loader:
        assert batch["patch_classes"].shape[1:] == (4, 4, len(vocabulary) + 1)
        for key, got in zip(batch["key"], batch["patch_classes"]):
            np.testing.assert_array_equal(got.numpy(), expected[key])
            seen.add(key)
    assert seen == set(expected)
    with pytest.raises(ValueError, match="mode"):
        VeslRegionDataset(str(output), size=64, mode="pad_center", patch_size=16, patch_vocabulary=vocabulary)


def test_tf_data_gives_the_same_patch_class_targets(region_output, tf_python):
    output, vocabulary = region_output
    pattern = str(output / "tfrecord" / "*.tfrecord")
    for crop, reduction in (("center", "union"), ("none", "majority")):
        expected = expected_patch_classes(output, vocabulary, PatchGrid(64, 16), crop, reduction)
        script = str(ROOT / "tests" / "tf_checks.py")
        done = subprocess.run(
            [tf_python, script, pattern, "--patch-vocabulary", vocabulary, "64/16", crop, reduction],
            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])["patch_classes"]
        form = (lambda t: np.argwhere(t).tolist()) if reduction == "union" else (lambda t: t.tolist())
        assert got == {key: form(t) for key, t in expected.items()}
        targets = PatchClassTargets(Vocabulary.load(vocabulary), PatchGrid(64, 16), reduction, crop)
        numpy_side = {e["image/key"].decode(): example_patch_classes(e, targets) for e in iter_numpy_examples(pattern)}
        assert {k: form(t) for k, t in numpy_side.items()} == got


def test_numpy_reader_and_tf_data(output, tf_python, tmp_path):
    """TensorFlow 2.21 (its own venv) reads VESL's TFRecords, plain and gzip, through VESL's tf.data
    reader and through bare tf.io.parse_single_example, to values bit-equal to the numpy reader's."""
    examples = list(iter_numpy_examples(str(output / "tfrecord" / "*.tfrecord")))
    assert {e["image/key"].decode() for e in examples} == all_keys(output)
    first = examples[0]
    assert first["image/object/bbox/xmin"].dtype == np.float32 and isinstance(first["image/width"], int)
    gz = tmp_path / "gz"
    gz.mkdir()
    for f in (output / "tfrecord").glob("*.tfrecord"):
        (gz / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
    expected = sorted((tf_values(e) for e in examples), key=lambda e: e["image/key"])
    for pattern in (output / "tfrecord" / "*.tfrecord", gz / "*.tfrecord.gz"):
        done = subprocess.run(
            [tf_python, str(ROOT / "tests" / "tf_checks.py"), str(pattern)],
            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["tensorflow"].startswith("2.21")
        for read in ("vesl_reader", "bare"):
            assert sorted(result[read], key=lambda e: e["image/key"]) == expected, read
        # The OD API's decoder keys: class text and label per box, "jpeg" as image/format
        parquet = {
            row["key"]: row
            for f in (output / "parquet").glob("*.parquet")
            for row in pq.read_table(f, columns=["key", "regions", "image_format"]).to_pylist()
        }
        assert {o["source_id"] for o in result["od_api"]} == set(parquet)
        for o in result["od_api"]:
            row = parquet[o["source_id"]]
            assert o["format"] == row["image_format"] == "jpeg"
            assert o["texts"] == [r["phrase"] for r in row["regions"]] and o["xmin"] == len(row["regions"])
            assert o["labels"] == [r["query_index"] + 1 for r in row["regions"]] and all(v >= 1 for v in o["labels"])


def test_hf_datasets_loads_the_output_folder_with_images(output, hf_python):
    """datasets 5.2 (its own venv): load_dataset(OUTPUT_DIR) reads parquet/ through the folder's
    dataset card (not the JSON files of rejects and stats), and the image bytes load as
    datasets.Image (PIL images of the rows' sizes); boxes are the Parquet's."""
    done = subprocess.run(
        [hf_python, str(ROOT / "tests" / "hf_checks.py"), str(output)],
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(output.parent / "hf-home")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["datasets"] == "5.2.0" and result["features"]["image"] == "Image"
    assert result["features"]["regions"] == "List"
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == all_keys(output)
    for r in rows.values():
        assert r["image"] == ["PIL", r["width"], r["height"]]
    table = {
        row["key"]: [list(map(float, g["box"])) for g in row["regions"]]
        for f in (output / "parquet").glob("*.parquet")
        for row in pq.read_table(f, columns=["key", "regions"]).to_pylist()
    }
    assert {k: r["boxes"] for k, r in rows.items()} == table


def test_a_reader_only_install_reads_the_output(output, readers_python):
    """VESL installed as a training host would (--no-deps + requirements/readers.txt: the newest
    pyarrow, numpy, protobuf and pillow, no caps), without torch, TensorFlow, Beam or spaCy: the
    numpy TFRecord reader and the dataset (numpy arrays without torch) read every image."""
    done = subprocess.run(
        [readers_python, str(ROOT / "tests" / "readers_checks.py"), str(output)],
        cwd="/",  # not the repository: the installed copy must be what runs
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tfrecord_keys"] == result["parquet_keys"] == sorted(all_keys(output))
    assert set(result["absent"]) == {"torch", "tensorflow", "apache_beam", "spacy", "transformers", "nltk"}


def tf_values(example: dict) -> dict:
    """The numpy reader's example as tests/tf_checks.py prints TensorFlow's (hex bytes, float bits),
    over the features VESL's tf.data spec declares, lists padded as parse_single_example fills them."""
    import struct

    from vesl.training.tfdata import FEATURE_TYPES

    out = {}
    for key, (kind, scalar) in FEATURE_TYPES.items():
        value = example.get(key)
        if scalar and kind == "bytes":
            out[key] = (value or b"").hex()
        elif scalar:
            out[key] = int(value or 0)
        else:
            values = [] if value is None else np.asarray(value).tolist()
            if kind == "bytes":
                out[key] = [v.hex() for v in values]
            elif kind == "float":
                out[key] = [struct.unpack("<I", struct.pack("<f", v))[0] for v in values]
            else:
                out[key] = values
    return out


def test_exports_load_with_pyarrow_and_json(output, tmp_path):
    boxed = sum(
        bool(regions)
        for f in (output / "parquet").glob("*.parquet")
        for regions in pq.read_table(f, columns=["regions"]).column(0).to_pylist()
    )
    assert 0 < boxed <= 9 and export_grit(str(output), str(tmp_path / "grit.parquet")) == boxed
    table = pq.read_table(tmp_path / "grit.parquet")
    assert table.schema.equals(GRIT_SCHEMA)
    # A row as GRIT-20M publishes it (its Parquet schema, written out here from the dataset card):
    # the export concatenates with it.
    grit_20m = pa.schema(
        [
            ("key", pa.string()), ("clip_similarity_vitb32", pa.float64()), ("clip_similarity_vitl14", pa.float64()),
            ("id", pa.int64()), ("url", pa.string()), ("caption", pa.string()), ("width", pa.int64()),
            ("height", pa.int64()), ("noun_chunks", pa.list_(pa.list_(pa.float64()))),
            ("ref_exps", pa.list_(pa.list_(pa.float64()))),
        ]
    )  # fmt: skip
    published = pa.table(
        {
            "key": ["000373938"], "clip_similarity_vitb32": [0.3359], "clip_similarity_vitl14": [0.2963],
            "id": [155999996], "url": ["https://example.invalid/a.jpg"], "caption": ["A couple of horses"],
            "width": [500], "height": [375], "noun_chunks": [[[0.0, 16.0, 0.1, 0.2, 0.9, 0.95, 0.71]]],
            "ref_exps": [[[0.0, 16.0, 0.1, 0.2, 0.9, 0.95, 0.71]]],
        },
        schema=grit_20m,
    )  # fmt: skip
    both = pa.concat_tables([published, table])
    assert both.num_rows == boxed + 1 and both.column("clip_similarity_vitb32").null_count == boxed
    assert len(set(table.column("id").to_pylist())) == boxed
    row = table.to_pylist()[0]
    assert all(len(chunk) == 7 for chunk in row["noun_chunks"]) and row["ref_exps"] == row["noun_chunks"]
    assert export_coco(str(output), str(tmp_path / "coco.json"), limit=4) == 4
    coco = json.loads((tmp_path / "coco.json").read_text())
    assert len(coco["images"]) == 4 and {a["image_id"] for a in coco["annotations"]} <= {1, 2, 3, 4}
    for a in coco["annotations"]:
        image = coco["images"][a["image_id"] - 1]
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01
    assert {c["id"] for c in coco["categories"]} == {a["category_id"] for a in coco["annotations"]}


class ReportParser(HTMLParser):
    """The report's tables (header row + body rows) and texts, as a browser's DOM would hold them."""

    def __init__(self):
        super().__init__()
        self.tables, self.texts, self.legend_items, self.images = [], [], 0, 0
        self._cell = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "li":
            self.legend_items += 1
        elif tag == "img" and dict(attrs).get("src", "").startswith("data:image/jpeg;base64,"):
            self.images += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        self.texts.append(data)


def parse_report(document: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(document)
    return parser


def find_table(parsed: ReportParser, first_header: str) -> list[list[str]]:
    return next(t for t in parsed.tables if t and t[0] and t[0][0] == first_header)


def test_report_has_plots_tables_and_a_gallery(output):
    document = build_report(str(output), n_images=4)
    parsed = parse_report(document)
    assert document.count("<figure>") == 7 and document.count("<svg") >= 6  # no rejects here: one "no data"
    texts = " ".join(parsed.texts)
    for axis in ("regions in the image", "score", "log2 aspect", "images", "regions"):
        assert axis in texts
    assert parsed.images == 4 and "RANDOM WEIGHTS" in document
    rows = [row for f in (output / "parquet").glob("*.parquet") for row in pq.read_table(f).to_pylist()]
    shards = find_table(parsed, "shard")
    assert len(shards) - 1 == 3 and all(r[-1] == "True" for r in shards[1:])
    assert sum(int(r[3]) for r in shards[1:]) == len(rows)  # written, per shard
    by_parser = find_table(parsed, "parser")
    assert sum(int(r[2]) for r in by_parser[1:]) == sum(len(r["regions"]) for r in rows)  # boxes
    assert sum(int(r[1]) for r in by_parser[1:]) == sum(len(r["phrases"]) for r in rows)  # queries
    grid = find_table(parsed, "centre y \\ x")
    assert sum(int(v) for r in grid[1:] for v in r[1:]) == sum(len(r["regions"]) for r in rows)
    assert parsed.legend_items > 0


def test_report_lists_rejects_and_shows_images_from_the_inputs_without_image_bytes(
    tmp_path, photo_samples, tiny_checkpoint
):
    samples = [*photo_samples, RawSample("broken", b"not an image", "a broken image")]
    write_webdataset(str(tmp_path / "in.tar"), samples)
    out = tmp_path / "out"
    run(
        [
            *("--input", str(tmp_path / "in.tar"), "--output", str(out), "--checkpoint", tiny_checkpoint),
            *("--image_size", "64", "--score_threshold", "0", "--runner", "FnApiRunner", "--progress", "false"),
        ]
    )
    parsed = parse_report(build_report(str(out), n_images=10))
    rejects = find_table(parsed, "key")
    assert rejects[0] == ["key", "stage", "reason", "detail"]
    assert rejects[1][:3] == ["broken", "decode", "not_an_image"] and "text" in rejects[1][3]
    assert parsed.images == len(photo_samples)  # read back from in.tar: the output has no image bytes
    assert "(image read from its input shard)" in " ".join(parsed.texts)


def test_evaluation_against_injected_regions():
    gt = {
        "images": [{"id": 7, "file_name": "000000000007.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 50, 40], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [100, 50, 80, 40], "iscrowd": 0},
        ],
    }

    def labeled(boxes_and_phrases):
        regions = tuple(Region(p, 0, 1, "cloc", 0, b, 0.9, 0.5) for b, p in boxes_and_phrases)
        return LabeledImage(ImageRecord("000000000007", "s", 0, "c", b""), regions)

    exact = labeled([((0.05, 0.1, 0.3, 0.5), "two dogs"), ((0.5, 0.5, 0.9, 0.9), "a red truck")])
    report = evaluate(gt, [exact])
    assert report["recall"] == 1.0 and report["named_recall"] == 0.5  # "truck" does not name "car"
    assert report["per_category"]["dog"] == {"gt_boxes": 1, "recall": 1.0, "named_recall": 1.0}
    # The phrase's head names the category, with COCO's aliases: "a puppy on a car" is a dog, not a car.
    gt["categories"].append({"id": 3, "name": "person"})
    gt["annotations"].append({"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 40, 100], "iscrowd": 0})
    heads = labeled([((0.05, 0.1, 0.3, 0.5), "a puppy on a car"), ((0.5, 0.5, 0.9, 0.9), "a car"), ((0, 0, 0.2, 1), "a young man")])  # fmt: skip
    per_category = evaluate(gt, [heads])["per_category"]
    assert [per_category[name]["named_recall"] for name in ("dog", "car", "person")] == [1.0, 1.0, 1.0]
    assert (
        evaluate(gt, [labeled([((0.05, 0.1, 0.3, 0.5), "a car near a dog")])])["per_category"]["dog"]["named_recall"]
        == 0
    )
    shifted = labeled([((0.5, 0.0, 0.75, 0.4), "a dog")])
    assert evaluate(gt, [shifted])["recall"] == 0.0
    assert evaluate(gt, [])["images_matched"] == 0


def test_iter_labeled_reads_typed_records(output):
    items = list(iter_labeled(str(output), limit=3))
    assert len(items) == 3 and all(isinstance(i, LabeledImage) for i in items)


CHROMIUM = "/usr/bin/chromium"


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={user_data}",
    ]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(output, tmp_path):
    """The report as a browser shows it (Debian's Chromium, tests/install_chromium.sh): its DOM holds
    the same tables, and the screenshot shows the charts' bars and the gallery's boxes."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (tests/install_chromium.sh; make test runs it and says why it cannot)")
    import numpy as np
    from PIL import Image

    from vesl.report import PALETTE

    report = tmp_path / "report.html"
    report.write_text(build_report(str(output), n_images=4), encoding="utf-8")
    dom = chromium("--dump-dom", report.as_uri(), user_data=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered, source = parse_report(dom.stdout), parse_report(report.read_text(encoding="utf-8"))
    assert rendered.tables == source.tables and rendered.images == source.images == 4
    shot = tmp_path / "report.png"
    done = chromium(
        "--window-size=1400,5000", "--hide-scrollbars", f"--screenshot={shot}", report.as_uri(),
        user_data=tmp_path / "profile-shot",
    )  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)

    def near(hex_color: str, tolerance: int = 40) -> int:
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).sum(axis=2) < tolerance).sum())

    assert near("#4363d8", 10) > 2000  # the charts' bars
    assert sum(near(color) for color in PALETTE[:3]) > 500  # boxes and their numbers in the gallery
