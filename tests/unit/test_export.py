"""Exports for other tools, on a small output folder written through the schema module."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from vesl.export import export_grit
from vesl.records import ImageRecord, LabeledImage, Phrase, Region
from vesl.schema import Provenance, parquet_schema, to_parquet_row

PROVENANCE = Provenance("0.1.0", "1.2.0", "grit", "tiny", "random weights", "abc", "")


def write_output(root, items) -> str:
    (root / "parquet").mkdir(parents=True)
    rows = [to_parquet_row(item, PROVENANCE, False) for item in items]
    pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), root / "parquet" / "s.parquet")
    return str(root)


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
