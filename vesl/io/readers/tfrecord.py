"""TFRecord shards of ``tf.train.Example`` records, as img2dataset's tfrecord output writes them:
bytes features ``key``, ``jpg`` (or ``png``/``webp``: the encode format), ``txt``/``caption`` and
``url``, plus its metadata columns. Read through VESL's own TFRecord codec (framing with CRC checks,
protobuf decoding; no TensorFlow), one record in memory at a time; ``.tfrecord.gz`` is gunzipped.
A record whose data fails its CRC in a sound frame is ``unreadable_record`` and the rest is read; a
file whose framing breaks part-way yields the records before the damage and one ``truncated_shard``."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.base import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    KEY_COLUMNS,
    InputFormat,
    Item,
    damaged_shard,
    make_record,
    record_byte_limit,
)
from vesl.io.tfexample import decode_example
from vesl.io.tfrecord import CorruptRecord, SkippedRecord, iter_tfrecords
from vesl.records import Reason, Reject, Stage


def _first_bytes(features: dict, names) -> bytes | None:
    for name in names:
        kind, values = features.get(name, (None, None))
        if kind == "bytes" and values:
            return values[0]
    return None


def _text(features: dict, name: str) -> str | None:
    kind, values = features.get(name, (None, None))
    if kind == "bytes" and values:
        return values[0].decode("utf-8", "replace")
    if kind == "int64" and values:
        return str(values[0])
    return None


def read_tfrecord(path: str, cfg: ReadConfig) -> Iterator[Item]:
    index = 0
    try:
        with fsspec.open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
            records = iter_tfrecords(stream, source=path, max_length=record_byte_limit(cfg), corrupt_records=True)
            for data in records:
                if isinstance(data, CorruptRecord):
                    detail = f"record {index} ({data.length} bytes at byte {data.offset}) fails its data CRC"
                    yield Reject("", path, index, Stage.READ, Reason.UNREADABLE_RECORD, detail)
                    index += 1
                    continue
                if isinstance(data, SkippedRecord):
                    detail = (
                        f"record {index} of {data.length} bytes (at byte {data.offset}) > {record_byte_limit(cfg)}"
                        f" (max_image_bytes {cfg.max_image_bytes} + caption and metadata); not read"
                    )
                    yield Reject("", path, index, Stage.READ, Reason.IMAGE_TOO_LARGE, detail)
                    index += 1
                    continue
                try:
                    features = decode_example(data)
                except Exception as exc:  # protobuf's DecodeError: a sound frame around other bytes
                    detail = f"record {index} is not a tf.train.Example ({type(exc).__name__}: {exc})"
                    yield Reject("", path, index, Stage.READ, Reason.UNREADABLE_RECORD, detail)
                    index += 1
                    continue
                key = next((k for k in (_text(features, name) for name in KEY_COLUMNS) if k), None)
                image_names = (cfg.image_column,) if cfg.image_column else IMAGE_COLUMNS
                image = _first_bytes(features, image_names)
                caption_names = (cfg.caption_column,) if cfg.caption_column else CAPTION_COLUMNS
                caption = _first_bytes(features, caption_names)
                detail = (
                    f"no image feature (looked for {', '.join(image_names)}); features: {', '.join(sorted(features))}"
                )
                yield make_record(key, path, index, caption, image, _text(features, "url"), cfg, detail)
                index += 1
    except Exception as exc:  # TFRecordError (framing, CRC), gzip errors, OSError
        yield damaged_shard(path, exc, index, f"TFRecord shard unreadable after {index} records")


FORMAT = InputFormat(
    "tfrecord",
    read_tfrecord,
    endings=(".tfrecord", ".tfrecord.gz", ".tfrecords"),
    img2dataset=r"^(\d+)\.tfrecord$",
)
