"""Output sinks: each format behind one interface; every sink's file is read back (by VESL for
resume and dedup, and by the real consumer: pyarrow, VESL's TFRecord codec, the webdataset package)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vesl.config import WriteConfig
from vesl.io.layout import OutputLayout, owned_names
from vesl.io.sinks import SINKS, enabled_sinks, sink_suffixes
from vesl.io.sinks.webdataset import member_key, original_key
from vesl.records import ImageRecord, LabeledImage, Phrase, Region
from vesl.schema import SCHEMA_VERSION, Provenance, to_parquet_row

PROVENANCE = Provenance("0.1.0", SCHEMA_VERSION, "cloc", "tiny@64", "random weights", "abc123")
KEYS = ["plain", "with.dots.in.it", "a/b/c", "50%off", "%2E", "..", "/lead", "ünïcode key", "x" * 300]


def labeled(key: str, index: int, image: bytes = b"\x89PNG fake bytes") -> LabeledImage:
    phrases = (Phrase("a red car", 0, 9, "cloc"), Phrase("the road", 17, 25, "spacy"))
    record = ImageRecord(
        key, "gs://b/in.tar", index, "a red car on the road", image, "https://u", phrases, 64, 48, "PNG"
    )
    region = Region("a red car", 0, 9, "cloc", 0, (0.125, 0.25, 0.5, 0.75), 0.5, 0.25)
    return LabeledImage(record, (region,) if index % 2 else ())


@given(st.text(min_size=1, max_size=60))
def test_member_keys_hold_no_dot_or_slash_and_map_back(key):
    member = member_key(key)
    assert "." not in member and "/" not in member
    assert original_key(member) == key


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_member_keys_never_collide(a, b):
    assert (member_key(a) == member_key(b)) == (a == b)


def write_file(sink, items: list[LabeledImage], path: Path) -> Path:
    """What the writer stage does with a sink: encode on the workers, then open / write / close a file."""
    with open(path, "wb") as fh:
        sink.open(fh)
        for item in items:
            sink.write(sink.encode(item))
        sink.close()
    return path


@pytest.mark.parametrize("name", list(SINKS))
def test_every_sink_reads_back_the_keys_it_wrote(tmp_path, name):
    config = WriteConfig(write_image_bytes=True)
    sink = SINKS[name](config, PROVENANCE, "{}")
    items = [labeled(key, i) for i, key in enumerate(KEYS)]
    path = write_file(sink, items, tmp_path / f"s{sink.suffix(config)}")
    assert list(SINKS[name].read_keys(str(path))) == [(key, i) for i, key in enumerate(KEYS)]
    empty = write_file(SINKS[name](config, PROVENANCE, "{}"), [], tmp_path / f"empty{sink.suffix(config)}")
    assert list(SINKS[name].read_keys(str(empty))) == []  # a shard that wrote nothing still has a valid file


def test_the_layout_names_come_from_the_sinks():
    config = WriteConfig(tfrecord_compression="gzip", webdataset=True)
    layout = OutputLayout("gs://b/out", "run-1", sink_suffixes(config))
    assert layout.path("webdataset", "s-1") == "gs://b/out/webdataset/s-1.tar"
    assert layout.path("tfrecord", "s-1") == "gs://b/out/tfrecord/s-1.tfrecord.gz"
    assert layout.path("rejects", "s-1") == "gs://b/out/rejects/s-1.jsonl"
    assert {"parquet", "tfrecord", "webdataset", "stats", "rejects"} <= set(owned_names())
    assert [s.name for s in enabled_sinks(config, PROVENANCE, "{}")] == ["parquet", "tfrecord", "webdataset"]
    assert [s.name for s in enabled_sinks(WriteConfig(parquet=False), PROVENANCE, "{}")] == ["tfrecord"]


def test_the_webdataset_package_reads_a_webdataset_sink_file(tmp_path):
    """The real reader, as a training job uses it: ``wds.WebDataset(url).decode()``."""
    import webdataset as wds

    from tests.images import grayscale_png

    config = WriteConfig(webdataset=True, write_image_bytes=True)
    items = [labeled(key, i, grayscale_png()) for i, key in enumerate(KEYS)]
    path = write_file(SINKS["webdataset"](config, PROVENANCE, "{}"), items, tmp_path / "s.tar")
    samples = list(wds.WebDataset(str(path), shardshuffle=False).decode("pil"))
    assert [original_key(s["__key__"]) for s in samples] == KEYS
    for sample, item in zip(samples, items):
        row = to_parquet_row(item, PROVENANCE, include_image=False)
        row.pop("image")
        assert sample["json"] == json.loads(json.dumps(row))  # the stored schema, floats as JSON numbers
        assert sample["txt"] == item.record.caption
        assert sample["png"].size == (40, 30)  # decoded by webdataset's PIL handler
    raw = list(wds.WebDataset(str(path), shardshuffle=False))
    assert raw[0]["png"] == items[0].record.image_bytes


def test_a_webdataset_file_without_image_bytes_has_text_and_json_only(tmp_path):
    import tarfile

    sink = SINKS["webdataset"](WriteConfig(webdataset=True), PROVENANCE, "{}")
    path = write_file(sink, [labeled("k.1", 0)], tmp_path / "s.tar")
    with tarfile.open(path) as tar:
        assert [(m.name, m.mtime) for m in tar.getmembers()] == [("k%2E1.txt", 0), ("k%2E1.json", 0)]
    assert io.BytesIO(path.read_bytes()).getbuffer().nbytes % 10240 == 0  # a whole tar record, end marker
