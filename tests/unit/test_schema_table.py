"""The field table of vesl.schema: the default table gives today's layouts, and a field added to a copy
of it shows up, with its value and type, in every layout derived from it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vesl.io.tfexample import decode_example, encode_example
from vesl.io.tfrecord import frame_record
from vesl.records import ImageRecord, LabeledImage, Phrase, Region
from vesl.schema import (
    FIELDS,
    PARQUET_FIELDS,
    PHRASE_TYPE,
    REGION_TYPE,
    SCHEMA_VERSION,
    FieldSpec,
    Provenance,
    TFKey,
    from_parquet_row,
    from_tf_features,
    hf_card_features,
    parquet_schema,
    tf_feature_types,
    to_parquet_row,
    to_tf_features,
)
from vesl.training.tfdata import FEATURE_TYPES, iter_numpy_examples

PROVENANCE = Provenance("0.1.0", SCHEMA_VERSION, "cloc", "tiny@64", "random weights", "abc123")

# The layouts of schema 1.2.0 as they were written out by hand before the table: the golden.
GOLDEN_COLUMNS = [
    "key",
    "source_shard",
    "source_index",
    "url",
    "caption",
    "generated_caption",
    "width",
    "height",
    "phrases",
    "regions",
    "image_format",
    "image",
    "provenance",
]
GOLDEN_PHRASE = ["text", "char_start", "char_end", "parser", "caption_source"]
GOLDEN_REGION = [
    "phrase",
    "char_start",
    "char_end",
    "box",
    "score",
    "objectness",
    "query_index",
    "parser",
    "caption_source",
]
GOLDEN_FEATURE_TYPES = {
    "image/key": ("bytes", True),
    "image/source_id": ("bytes", True),
    "image/width": ("int64", True),
    "image/height": ("int64", True),
    "image/caption": ("bytes", True),
    "image/generated_caption": ("bytes", True),
    "image/url": ("bytes", True),
    "image/format": ("bytes", True),
    "image/object/bbox/xmin": ("float", False),
    "image/object/bbox/ymin": ("float", False),
    "image/object/bbox/xmax": ("float", False),
    "image/object/bbox/ymax": ("float", False),
    "image/object/class/text": ("bytes", False),
    "image/object/class/label": ("int64", False),
    "image/object/score": ("float", False),
    "image/object/objectness": ("float", False),
    "image/object/char_start": ("int64", False),
    "image/object/char_end": ("int64", False),
    "image/object/query_index": ("int64", False),
    "image/object/parser": ("bytes", False),
    "image/object/caption_source": ("bytes", False),
    "image/phrase/text": ("bytes", False),
    "image/phrase/char_start": ("int64", False),
    "image/phrase/char_end": ("int64", False),
    "image/phrase/parser": ("bytes", False),
    "image/phrase/caption_source": ("bytes", False),
    "vesl/source_shard": ("bytes", True),
    "vesl/source_index": ("int64", True),
}


def test_default_table_gives_todays_layouts():
    assert [f.name for f in PARQUET_FIELDS] == GOLDEN_COLUMNS
    assert [f.name for f in PARQUET_FIELDS if not f.nullable] == ["key"]
    assert [f.name for f in PHRASE_TYPE] == GOLDEN_PHRASE and [f.name for f in REGION_TYPE] == GOLDEN_REGION
    assert REGION_TYPE.field("box").type == pa.list_(pa.float32(), 4)
    assert list(FEATURE_TYPES) == list(GOLDEN_FEATURE_TYPES) and FEATURE_TYPES == GOLDEN_FEATURE_TYPES
    everything = tf_feature_types(include_image=True, include_per_run=True)
    assert list(everything) == [
        *GOLDEN_FEATURE_TYPES,
        *(f"vesl/provenance/{f.name}" for f in dataclasses.fields(Provenance)),
        "image/encoded",
    ]


@pytest.mark.parametrize(
    "spec", [s for s in FIELDS if not s.items] + [i for s in FIELDS for i in s.items], ids=lambda spec: spec.name
)
def test_every_tf_kind_fits_its_arrow_type(spec):
    arrow = spec.arrow_type.value_type if pa.types.is_fixed_size_list(spec.arrow_type) else spec.arrow_type
    kind = "float" if pa.types.is_floating(arrow) else "int64" if pa.types.is_integer(arrow) else "bytes"
    assert {key.kind for key in spec.tf} == {kind}


# -- A table with two more fields: one per region (its box's area) and one per image ------------------
def _area(region: Region) -> float:
    x0, y0, x1, y1 = region.box
    return (x1 - x0) * (y1 - y0)


AREA = FieldSpec("area", pa.float32(), TFKey("image/object/area", "float"), get=_area)  # box area, normalized
REGION_COUNT = FieldSpec(
    "region_count", pa.int32(), TFKey("image/region_count", "int64"), get=lambda row: len(row.regions)
)


def extended_table() -> tuple[FieldSpec, ...]:
    """The default table with AREA appended to the regions' fields and REGION_COUNT to the image's."""
    grown = [dataclasses.replace(s, items=(*s.items, AREA)) if s.name == "regions" else s for s in FIELDS]
    return (*grown, REGION_COUNT)


TABLE = extended_table()


def labeled_image() -> LabeledImage:
    phrases = (Phrase("a red car", 0, 9, "cloc"), Phrase("the Road", 13, 21, "spacy"))
    record = ImageRecord("k1", "s.tar", 7, "a red car on the Road", b"\x89PNG", "https://u", phrases, 640, 480, "PNG")
    regions = (
        Region("a red car", 0, 9, "cloc", 0, (0.125, 0.25, 0.5, 0.75), 0.5, 0.25),  # area 0.1875
        Region("the Road", 13, 21, "spacy", 1, (0.0, 0.5, 1.0, 1.0), 0.75, 0.5),  # area 0.5
    )
    return LabeledImage(record, regions)


def test_added_fields_are_in_the_arrow_schema_and_the_card():
    schema = parquet_schema("{}", fields=TABLE)
    assert schema.names == [*GOLDEN_COLUMNS, "region_count"] and schema.field("region_count").type == pa.int32()
    region = schema.field("regions").type.value_type
    assert [f.name for f in region] == [*GOLDEN_REGION, "area"] and region.field("area").type == pa.float32()
    card = {feature["name"]: feature for feature in hf_card_features(TABLE)}
    assert card["region_count"] == {"name": "region_count", "dtype": "int32"}
    assert {"name": "area", "dtype": "float32"} in card["regions"]["list"]
    assert card["image"] == {"name": "image", "dtype": "image"}
    assert hf_card_features() == hf_card_features(FIELDS) == hf_card_features(PARQUET_FIELDS)


def test_added_fields_are_written_to_parquet_and_read_back(tmp_path):
    item = labeled_image()
    row = to_parquet_row(item, PROVENANCE, True, fields=TABLE)
    pq.write_table(pa.Table.from_pylist([row], schema=parquet_schema("{}", fields=TABLE)), tmp_path / "t.parquet")
    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.field("region_count").type == pa.int32()
    (back,) = table.to_pylist()
    assert back["region_count"] == 2 and [r["area"] for r in back["regions"]] == [0.1875, 0.5]
    # derived fields are not read back: the records come back as they went in
    assert from_parquet_row(back, fields=TABLE) == (item, PROVENANCE)


def test_added_fields_are_tf_features_and_read_back():
    item = labeled_image()
    decoded = decode_example(encode_example(to_tf_features(item, PROVENANCE, True, fields=TABLE)))
    assert decoded["image/object/area"] == ("float", [0.1875, 0.5])
    assert decoded["image/region_count"] == ("int64", [2])
    assert from_tf_features(decoded, fields=TABLE) == (item, PROVENANCE)
    # without the new fields in the table an Example carrying them still reads
    assert from_tf_features(decoded) == (item, PROVENANCE)


def test_added_fields_are_in_the_tf_data_spec_and_the_numpy_reader(tmp_path):
    types = tf_feature_types(TABLE)  # what tfdata.tf_feature_spec(fields=TABLE) is built from
    assert list(types) == [*GOLDEN_FEATURE_TYPES, "image/object/area", "image/region_count"]
    assert types["image/object/area"] == ("float", False) and types["image/region_count"] == ("int64", True)
    assert "image/encoded" in tf_feature_types(TABLE, include_image=True)
    path = tmp_path / "t.tfrecord"
    path.write_bytes(frame_record(encode_example(to_tf_features(labeled_image(), PROVENANCE, False, fields=TABLE))))
    (example,) = iter_numpy_examples(str(path), fields=TABLE)
    assert example["image/region_count"] == 2 and type(example["image/region_count"]) is int  # a scalar, not a list
    area = example["image/object/area"]
    assert area.dtype == np.float32 and area.tolist() == [0.1875, 0.5]
    assert example["image/key"] == b"k1" and example["vesl/provenance/preset"] == b"cloc"
    # the default table does not know the new image-level key: a list, as for any unknown key
    (plain,) = iter_numpy_examples(str(path))
    assert plain["image/region_count"].tolist() == [2]
