"""Exports for other tools, on a small output folder written through the schema module."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.unit.test_outputs import write_shard
from vesl.export import export_grit, iter_labeled
from vesl.records import ImageRecord, LabeledImage, Phrase, Region
from vesl.schema import Provenance, parquet_schema, to_parquet_row

PROVENANCE = Provenance("0.1.0", "1.2.0", "grit", "tiny", "random weights", "abc", "")


def write_output(root, items) -> str:
    """An output folder of one committed shard holding ``items`` (its stats file written last)."""
    write_shard(root, "/in/s.tar", items, [], row_group=1000)
    return str(root)


def test_exports_read_the_committed_shards_only_or_any_parquet_files(tmp_path):
    """An output folder exports its committed shards (not a shard a run left without its stats file);
    a folder or glob of Parquet files exports every file, as before."""
    phrase = Phrase("a cat", 0, 5, "spacy")
    region = Region("a cat", 0, 5, "spacy", 0, (0.1, 0.2, 0.5, 0.6), 0.75, 0.5)
    items = [LabeledImage(ImageRecord(f"k{i}", "s", i, "a cat", b"", None, (phrase,), 100, 50), (region,)) for i in range(3)]  # fmt: skip
    out = write_output(tmp_path / "out", items)
    rows = [to_parquet_row(LabeledImage(ImageRecord("died", "s", 0, "a cat", b"", None, (phrase,), 100, 50), (region,)), PROVENANCE, False)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), tmp_path / "out" / "parquet" / "died.parquet")
    assert export_grit(out, str(tmp_path / "grit.parquet")) == 3
    assert "died" not in pq.read_table(tmp_path / "grit.parquet").column("key").to_pylist()
    assert [i.record.key for i in iter_labeled(out, limit=2)] == ["k0", "k1"]
    assert sorted(i.record.key for i in iter_labeled(out + "/parquet")) == ["died", "k0", "k1", "k2"]
    assert len(list(iter_labeled(out + "/parquet/*.parquet"))) == 4


def test_grit_export_leaves_out_images_without_boxes_as_grit_does(tmp_path):
    phrase = Phrase("a cat", 0, 5, "spacy")
    region = Region("a cat", 0, 5, "spacy", 0, (0.1, 0.2, 0.5, 0.6), 0.75, 0.5)
    boxed = LabeledImage(ImageRecord("boxed", "s", 0, "a cat", b"", None, (phrase,), 100, 50), (region,))
    empty = LabeledImage(ImageRecord("empty", "s", 1, "a cat", b"", None, (phrase,), 100, 50), ())
    out = write_output(tmp_path / "out", [boxed, empty])
    assert export_grit(out, str(tmp_path / "grit.parquet")) == 1
    (row,) = pq.read_table(tmp_path / "grit.parquet").to_pylist()
    assert row["key"] == "boxed" and row["clip_similarity_vitb32"] is None and isinstance(row["id"], int)
    assert [round(v, 6) for v in row["noun_chunks"][0]] == [0.0, 5.0, 0.1, 0.2, 0.5, 0.6, 0.75]


def test_coco_results_load_and_evaluate_in_pycocotools(tmp_path, photo_samples):
    """pycocotools (the real consumer): COCO.loadRes takes the results file VESL writes against a
    COCO ground-truth file whose image ids are COCO's own (not 1..N), and COCOeval runs on it; a
    region on the ground-truth box with its category's name scores AP 1 for that category."""
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vesl.export import export_coco_results
    from vesl.vision.decode import decode_image

    sizes = {p.key: decode_image(p.image, 10**8).image.size for p in photo_samples}
    gt = {
        "images": [
            {"id": 397133, "file_name": "chelsea.jpg", "width": sizes["chelsea"][0], "height": sizes["chelsea"][1]},
            {
                "id": 37777,
                "file_name": "motorcycle_right.jpg",
                "width": sizes["motorcycle_right"][0],
                "height": sizes["motorcycle_right"][1],
            },
        ],
        "categories": [
            {"id": 17, "name": "cat", "supercategory": "animal"},
            {"id": 4, "name": "motorcycle", "supercategory": "vehicle"},
        ],
        "annotations": [],
    }
    boxes = {"chelsea": (0.25, 0.125, 0.75, 0.875), "motorcycle_right": (0.125, 0.25, 0.875, 0.75)}
    for n, (key, category) in enumerate((("chelsea", 17), ("motorcycle_right", 4)), start=1):
        w, h = sizes[key]
        x0, y0, x1, y1 = boxes[key]
        bbox = [x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h]
        image_id = 397133 if key == "chelsea" else 37777
        gt["annotations"].append(
            {
                "id": n,
                "image_id": image_id,
                "category_id": category,
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                "iscrowd": 0,
            }
        )
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    items = []
    for key, phrase in (
        ("chelsea", "a grey tabby cat"),
        ("motorcycle_right", "two motorcycles"),
        ("rocket", "a rocket"),
    ):
        w, h = sizes[key]
        regions = [Region(phrase, 0, len(phrase), "spacy", 0, boxes.get(key, (0.1, 0.1, 0.2, 0.2)), 0.875, 0.5)]
        regions.append(Region("a wall", 0, 6, "spacy", 1, (0.0, 0.0, 0.5, 0.5), 0.5, 0.5))  # names no category
        items.append(LabeledImage(ImageRecord(key, "s", 0, phrase, b"", None, (Phrase(phrase, 0, len(phrase), "spacy"),), w, h), tuple(regions)))  # fmt: skip
    out = write_output(tmp_path / "out", items)
    counts = export_coco_results(out, str(tmp_path / "results.json"), str(tmp_path / "gt.json"))
    assert counts == {"images_matched": 2, "images_unmatched": 1, "regions": 2, "regions_without_category": 2}
    coco = COCO(str(tmp_path / "gt.json"))
    detections = coco.loadRes(str(tmp_path / "results.json"))
    assert sorted(detections.getImgIds()) == [37777, 397133]
    evaluation = COCOeval(coco, detections, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP at IoU 0.5: both boxes found, with their categories
