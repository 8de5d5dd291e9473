"""TFRecord output: one ``tf.train.Example`` per written image (TF Object Detection API keys,
``vesl.schema``), framed with CRCs; ``.tfrecord.gz`` when ``tfrecord_compression`` is gzip."""

from __future__ import annotations

from collections.abc import Iterator

from vesl.config import WriteConfig
from vesl.io.sinks.base import OutputSink
from vesl.io.tfexample import decode_example, encode_example
from vesl.io.tfrecord import frame_record, read_tfrecord_file
from vesl.records import LabeledImage
from vesl.schema import TFKeys, to_tf_features


class TFRecordSink(OutputSink):
    name = "tfrecord"

    @classmethod
    def suffix(cls, config: WriteConfig) -> str:
        return ".tfrecord.gz" if config.tfrecord_compression == "gzip" else ".tfrecord"

    @property
    def compression(self) -> str | None:
        return "gzip" if self.config.tfrecord_compression == "gzip" else None

    def encode(self, labeled: LabeledImage) -> bytes:
        return encode_example(to_tf_features(labeled, self.provenance, self.config.write_image_bytes))

    def open(self, fh) -> None:
        self._fh = fh

    def write(self, example: bytes) -> None:
        self._fh.write(frame_record(example))

    def close(self) -> None:
        self._fh.flush()

    @classmethod
    def read_keys(cls, path: str) -> Iterator[tuple[str, int]]:
        for record in read_tfrecord_file(path):
            features = decode_example(record)
            yield features[TFKeys.KEY][1][0].decode("utf-8"), int(features[TFKeys.SOURCE_INDEX][1][0])
