"""The output layouts: write -> read -> equal for Parquet rows and tf.train.Example, TFRecord framing."""

from __future__ import annotations

import io
import struct

import pyarrow as pa
import pytest

from vesl.io.tfexample import decode_example, encode_example
from vesl.io.tfrecord import TFRecordError, iter_tfrecords, masked_crc32c
from vesl.records import ImageRecord, LabeledImage, Phrase, Region
from vesl.schema import (
    METADATA_SCHEMA_VERSION,
    SCHEMA_VERSION,
    Provenance,
    TFKeys,
    from_parquet_row,
    from_tf_features,
    parquet_schema,
    to_parquet_row,
    to_tf_features,
)

PROVENANCE = Provenance("0.1.0", SCHEMA_VERSION, "cloc", "tiny@64", "random weights", "abc123")


def labeled_image(n_regions: int = 2) -> LabeledImage:
    phrases = (Phrase("a red car", 0, 9, "cloc"), Phrase("the Road", 13, 21, "spacy"))
    record = ImageRecord(
        "k1", "gs://b/s.tar", 7, "a red car on the Road", b"\x89PNGbytes", "https://u", phrases, 640, 480, "PNG"
    )
    regions = tuple(
        Region(
            phrases[i % 2].text,
            phrases[i % 2].char_start,
            phrases[i % 2].char_end,
            phrases[i % 2].parser,
            i % 2,
            (0.125, 0.25, 0.5, 0.75),
            0.5,
            0.25,
        )
        for i in range(n_regions)
    )
    return LabeledImage(record, regions)


@pytest.mark.parametrize("n_regions", [0, 2])
@pytest.mark.parametrize("include_image", [False, True])
def test_parquet_row_round_trip(n_regions, include_image):
    item = labeled_image(n_regions)
    table = pa.Table.from_pylist([to_parquet_row(item, PROVENANCE, include_image)], schema=parquet_schema("{}"))
    back, provenance = from_parquet_row(table.to_pylist()[0])
    assert provenance == PROVENANCE
    expected_record = (
        item.record if include_image else item.record.__class__(**{**item.record.__dict__, "image_bytes": b""})
    )
    assert back.record == expected_record
    assert back.regions == item.regions  # float32-exact values chosen
    assert table.schema.metadata[METADATA_SCHEMA_VERSION] == SCHEMA_VERSION.encode()


@pytest.mark.parametrize("include_image", [False, True])
def test_tf_example_round_trip(include_image):
    item = labeled_image()
    features = to_tf_features(item, PROVENANCE, include_image)
    decoded = decode_example(encode_example(features))
    back, provenance = from_tf_features(decoded)
    assert provenance == PROVENANCE and back.regions == item.regions
    assert back.record.phrases == item.record.phrases and back.record.caption == item.record.caption
    assert (TFKeys.ENCODED in decoded) is include_image
    assert decoded[TFKeys.BBOX_XMIN] == ("float", [0.125, 0.125])
    assert decoded[TFKeys.WIDTH] == ("int64", [640])


def test_tf_od_api_keys_and_what_tf_cannot_hold():
    item = labeled_image()
    features = to_tf_features(item, PROVENANCE, False)
    assert features[TFKeys.SOURCE_ID] == features[TFKeys.KEY] == ("bytes", [b"k1"])
    assert features[TFKeys.OBJECT_LABEL] == ("int64", [1, 2])  # query_index + 1: 0 is the OD API's background
    assert features[TFKeys.FORMAT] == ("bytes", [b"png"])
    # None has no TF form: "" / 0 are written, and "" reads back as None
    bare = item.record.__class__(**{**item.record.__dict__, "url": None, "width": None, "image_format": None})
    features = to_tf_features(LabeledImage(bare, item.regions), PROVENANCE, False)
    assert features[TFKeys.URL] == features[TFKeys.FORMAT] == features[TFKeys.GENERATED_CAPTION] == ("bytes", [b""])
    assert features[TFKeys.WIDTH] == ("int64", [0])
    back, _ = from_tf_features(features)
    assert (back.record.url, back.record.image_format, back.record.generated_caption) == (None, None, None)
    # the label is derived, never read back; Examples before 1.1 have no caption_source: "alt"
    older = {k: v for k, v in features.items() if k not in (TFKeys.OBJECT_LABEL, TFKeys.OBJECT_CAPTION_SOURCE)}
    assert from_tf_features(older)[0].regions == item.regions


def test_tf_example_bytes_are_tensorflows_wire_format():
    # Example{features{feature{key:"a" value{bytes_list{value:"x"}}}}} as TensorFlow serializes it.
    assert encode_example({"a": ("bytes", [b"x"])}).hex() == "0a0c0a0a0a016112050a030a0178"


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def test_tfrecord_framing_and_crc():
    stream = frame(b"hello") + frame(b"")
    assert list(iter_tfrecords(io.BytesIO(stream))) == [b"hello", b""]
    damaged = bytearray(stream)
    damaged[13] ^= 1
    with pytest.raises(TFRecordError, match="bad data CRC"):
        list(iter_tfrecords(io.BytesIO(bytes(damaged))))
    with pytest.raises(TFRecordError, match="truncated"):
        list(iter_tfrecords(io.BytesIO(stream[:-3])))
