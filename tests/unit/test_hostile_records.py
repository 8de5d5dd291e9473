"""Hostile values in otherwise readable shards: every record is read or rejected on its own, with a
reason; nothing crashes the run, and one bad row never costs its neighbours (issue 12)."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import PHOTOS
from vesl.config import ReadConfig
from vesl.io.readers import make_record, read_shard
from vesl.io.shard_writers import RawSample, write_webdataset
from vesl.io.tfexample import encode_example
from vesl.records import ImageRecord, Reason, Reject
from vesl.schema import to_parquet_row, to_tf_features

CFG = ReadConfig()
IMAGE = (PHOTOS / "rocket.jpg").read_bytes()


def outcome(item) -> str:
    return "record" if isinstance(item, ImageRecord) else item.reason


def writes_cleanly(record: ImageRecord) -> None:
    """What the later stages do with a record's text: encode keys, build rows and Examples."""
    from vesl.records import LabeledImage, Region
    from vesl.schema import Provenance

    record.key.encode("utf-8")
    labeled = LabeledImage(record, (Region("x", 0, 1, "cloc", 0, (0.1, 0.1, 0.5, 0.5), 0.5, 0.5),))
    provenance = Provenance.for_run("cloc", "ckpt", 64, "random weights", "d", "")
    to_parquet_row(labeled, provenance, False)
    encode_example(to_tf_features(labeled, provenance, False))


@pytest.mark.parametrize(
    ("key", "caption", "url", "expected"),
    [
        ("k", "a cat", 12345, "record"),  # a number where a URL belongs: dropped, documented
        ("k", "a cat", float("nan"), "record"),
        ("k", "a cat", "http://x/\udcff", "record"),  # a URL with a lone surrogate: dropped
        (17, "a cat", None, "record"),  # integer keys become their decimal text
        (17.0, "a cat", None, "record"),  # ... also when pandas stored them as floats
        (float("nan"), "a cat", None, Reason.MISSING_KEY),
        (1.5, "a cat", None, Reason.BAD_KEY),
        (True, "a cat", None, Reason.BAD_KEY),
        ("bad\udcffkey", "a cat", None, Reason.BAD_KEY),
        (b"\xff\xfe", "a cat", None, Reason.BAD_KEY),
        ("k", "a cat \ud800 on a mat", None, Reason.CAPTION_NOT_UTF8),
        ("k", 42, None, Reason.CAPTION_NOT_TEXT),
        ("k", ["a cat", "a dog"], None, Reason.CAPTION_NOT_TEXT),
        ("k", {"text": "a cat"}, None, Reason.CAPTION_NOT_TEXT),
        ("k", float("nan"), None, Reason.MISSING_CAPTION),  # pandas' missing value
    ],
)
def test_make_record_types(key, caption, url, expected):
    item = make_record(key, "s", 0, caption, IMAGE, url, CFG)
    assert outcome(item) == expected
    if isinstance(item, ImageRecord):
        assert isinstance(item.key, str) and (item.url is None or isinstance(item.url, str))
        writes_cleanly(item)
    else:
        assert item.detail and (item.url is None or isinstance(item.url, str))
        json.dumps(item.to_json_dict(), ensure_ascii=False).encode("utf-8")  # the rejects file can hold it


def test_integral_float_keys_read_as_integers():
    assert make_record(17.0, "s", 0, "a cat", IMAGE, None, CFG).key == "17"
    assert not math.isnan(0.0)  # (NaN is told apart from 0.0)


def test_image_that_is_not_bytes_is_rejected():
    item = make_record("k", "s", 0, "a cat", "not bytes", None, CFG)
    assert item.reason == Reason.MISSING_IMAGE and "str" in item.detail


def test_parquet_rows_of_the_wrong_type_are_rejected_one_by_one(tmp_path):
    """Columns whose values break the usual types: the other rows are read."""
    bad_utf8 = pa.array([b"a cat", b"a \xff dog", b"a bird"], pa.binary()).view(pa.string())
    tables = {
        "int_caption.parquet": pa.table({"key": ["a", "b"], "caption": [1, 2], "jpg": [IMAGE, IMAGE]}),
        "list_caption.parquet": pa.table({"key": ["a", "b"], "caption": [["x"], ["y", "z"]], "jpg": [IMAGE, IMAGE]}),
        "bad_utf8.parquet": pa.table({"key": ["a", "b", "c"], "caption": bad_utf8, "jpg": [IMAGE] * 3}),
        "float_key.parquet": pa.table(
            {"key": [1.0, float("nan"), 2.5], "caption": ["x", "y", "z"], "url": [1.0, None, 3.0], "jpg": [IMAGE] * 3}
        ),
    }
    outcomes = {}
    for name, table in tables.items():
        path = str(tmp_path / name)
        pq.write_table(table, path)
        items = list(read_shard(path, CFG))
        outcomes[name] = [outcome(i) for i in items]
        assert all(i.index >= 0 for i in items), name  # never one reject for the whole shard
    assert outcomes == {
        "int_caption.parquet": [Reason.CAPTION_NOT_TEXT] * 2,
        "list_caption.parquet": [Reason.CAPTION_NOT_TEXT] * 2,
        "bad_utf8.parquet": ["record", Reason.CAPTION_NOT_UTF8, "record"],
        "float_key.parquet": ["record", Reason.MISSING_KEY, Reason.BAD_KEY],
    }


def test_tar_member_names_that_are_not_utf8(tmp_path):
    import tarfile

    path = write_webdataset(str(tmp_path / "ok.tar"), [RawSample("good", IMAGE, "a rocket")])
    with tarfile.open(path, "a", encoding="utf-8", errors="surrogateescape") as tar:
        import io

        for name, data in (("b\udcffd.jpg", IMAGE), ("b\udcffd.txt", b"a rocket")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    items = list(read_shard(path, CFG))
    assert [outcome(i) for i in items] == ["record", Reason.BAD_KEY]
    assert isinstance(items[1], Reject)


def test_rejects_with_unwritable_text_still_serialize():
    reject = Reject("k\udcff", "s\udcfe", 3, "read", Reason.MISSING_CAPTION, "no k\udcff.txt", "http://x/\udcff")
    line = json.dumps(reject.to_json_dict(), ensure_ascii=False).encode("utf-8")
    assert b"k\\\\udcff" in line and json.loads(line)["url"] == "http://x/\\udcff"


def test_manifest_values_of_the_wrong_type(tmp_path):
    (tmp_path / "a.jpg").write_bytes(IMAGE)
    lines = [
        {"key": "ok", "image": "a.jpg", "caption": "a rocket", "url": 7},
        {"key": 5, "image": "a.jpg", "caption": "a rocket"},
        {"key": ["x"], "image": "a.jpg", "caption": "a rocket"},
        {"key": "num", "image": "a.jpg", "caption": 3.5},
        {"key": "sur", "image": "a.jpg", "caption": "a \ud800 rocket"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    items = list(read_shard(str(path), CFG))
    assert [outcome(i) for i in items] == [
        "record",
        "record",
        Reason.BAD_KEY,
        Reason.CAPTION_NOT_TEXT,
        Reason.CAPTION_NOT_UTF8,
    ]
    assert items[0].url is None and items[1].key == "5"
    writes_cleanly(items[0])


def test_two_images_for_one_key_is_never_a_silent_choice(tmp_path):
    import tarfile as tf

    path = tmp_path / "two.tar"
    with tf.open(path, "w") as tar:
        import io

        for name, data in (("k.jpg", b"corrupt"), ("k.png", IMAGE), ("k.txt", b"a rocket")):
            info = tf.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (item,) = read_shard(str(path), CFG)
    assert item.reason == Reason.AMBIGUOUS_IMAGE and "jpg, png" in item.detail
    (chosen,) = read_shard(str(path), ReadConfig(image_column="png"))  # the user says which
    assert isinstance(chosen, ImageRecord) and chosen.image_bytes == IMAGE
