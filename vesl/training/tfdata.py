"""Reading VESL's TFRecords: with TensorFlow (``tf.data``) or without it (numpy, JAX-friendly).

    ds = vesl_tf_dataset("gs://bucket/vesl-out/tfrecord/*.tfrecord")      # needs TensorFlow
    for example in iter_numpy_examples("out/sample/tfrecord/*.tfrecord"):  # needs nothing but VESL
        example["image/object/bbox/xmin"]  # np.ndarray

Feature keys and types come from ``vesl.schema.TFKeys`` (never restated here).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vesl.io.tfexample import decode_example
from vesl.io.tfrecord import read_tfrecord_file
from vesl.schema import TFKeys

# Per key: ("bytes" | "float" | "int64", scalar?) -- scalars are one value per image, lists one per region/phrase.
FEATURE_TYPES: dict[str, tuple[str, bool]] = {
    TFKeys.KEY: ("bytes", True),
    TFKeys.SOURCE_ID: ("bytes", True),
    TFKeys.WIDTH: ("int64", True),
    TFKeys.HEIGHT: ("int64", True),
    TFKeys.CAPTION: ("bytes", True),
    TFKeys.GENERATED_CAPTION: ("bytes", True),
    TFKeys.URL: ("bytes", True),
    TFKeys.FORMAT: ("bytes", True),
    TFKeys.BBOX_XMIN: ("float", False),
    TFKeys.BBOX_YMIN: ("float", False),
    TFKeys.BBOX_XMAX: ("float", False),
    TFKeys.BBOX_YMAX: ("float", False),
    TFKeys.OBJECT_TEXT: ("bytes", False),
    TFKeys.OBJECT_LABEL: ("int64", False),
    TFKeys.OBJECT_SCORE: ("float", False),
    TFKeys.OBJECT_OBJECTNESS: ("float", False),
    TFKeys.OBJECT_CHAR_START: ("int64", False),
    TFKeys.OBJECT_CHAR_END: ("int64", False),
    TFKeys.OBJECT_QUERY_INDEX: ("int64", False),
    TFKeys.OBJECT_PARSER: ("bytes", False),
    TFKeys.OBJECT_CAPTION_SOURCE: ("bytes", False),
    TFKeys.PHRASE_TEXT: ("bytes", False),
    TFKeys.PHRASE_CHAR_START: ("int64", False),
    TFKeys.PHRASE_CHAR_END: ("int64", False),
    TFKeys.PHRASE_PARSER: ("bytes", False),
    TFKeys.PHRASE_CAPTION_SOURCE: ("bytes", False),
    TFKeys.SOURCE_SHARD: ("bytes", True),
    TFKeys.SOURCE_INDEX: ("int64", True),
}


def tf_feature_spec(include_image: bool = False):
    """The ``tf.io.parse_single_example`` spec of VESL's Examples."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "float": tf.float32, "int64": tf.int64}
    spec = {
        key: tf.io.FixedLenFeature([], dtypes[kind], default_value="" if kind == "bytes" else 0)
        if scalar
        else tf.io.VarLenFeature(dtypes[kind])
        for key, (kind, scalar) in FEATURE_TYPES.items()
    }
    if include_image:
        spec[TFKeys.ENCODED] = tf.io.FixedLenFeature([], tf.string, default_value="")
    return spec


def parse_example(serialized, include_image: bool = False):
    """One serialized Example -> dict of tensors (variable-length features as dense tensors)."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, tf_feature_spec(include_image))
    return {k: tf.sparse.to_dense(v) if isinstance(v, tf.sparse.SparseTensor) else v for k, v in parsed.items()}


def vesl_tf_dataset(pattern: str, include_image: bool = False, compression: str | None = None):
    import tensorflow as tf

    files = tf.io.gfile.glob(pattern)
    if compression is None:
        compression = "GZIP" if any(f.endswith(".gz") for f in files) else ""
    return tf.data.TFRecordDataset(files, compression_type=compression).map(
        lambda x: parse_example(x, include_image), num_parallel_calls=tf.data.AUTOTUNE
    )


def iter_numpy_examples(pattern: str, verify_crc: bool = True) -> Iterator[dict[str, np.ndarray | bytes | int | float]]:
    """Examples as numpy arrays (lists) and Python scalars, CRC-checked, without TensorFlow."""
    from vesl.io.paths import expand_patterns

    files = expand_patterns([pattern], keep=lambda path: ".tfrecord" in path)
    dtypes = {"bytes": object, "float": np.float32, "int64": np.int64}
    for f in files:
        for raw in read_tfrecord_file(f, verify_crc):
            features = decode_example(raw)
            example: dict = {}
            for key, (kind, values) in features.items():
                declared = FEATURE_TYPES.get(
                    key, (kind, key == TFKeys.ENCODED or key.startswith(TFKeys.PROVENANCE_PREFIX))
                )
                if declared[1]:
                    example[key] = values[0] if values else (b"" if kind == "bytes" else 0)
                else:
                    example[key] = np.asarray(values, dtype=dtypes[kind])
            yield example
