"""Reading VESL's TFRecords: with TensorFlow (``tf.data``) or without it (numpy, JAX-friendly).

    ds = vesl_tf_dataset("gs://bucket/vesl-out/tfrecord/*.tfrecord")      # needs TensorFlow
    for example in iter_numpy_examples("out/sample/tfrecord/*.tfrecord"):  # needs nothing but VESL
        example["image/object/bbox/xmin"]  # np.ndarray

Feature keys, kinds and shapes come from the field table of ``vesl.schema`` (``tf_feature_types``),
never restated here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from vesl.io.tfexample import decode_example
from vesl.io.tfrecord import read_tfrecord_file
from vesl.schema import FieldSpec, TFKeys, tf_feature_types

# Per key: ("bytes" | "float" | "int64", scalar?) -- scalars are one value per image, lists one per
# region/phrase. Leaves out the image bytes (tf_feature_spec adds them on request) and the provenance.
FEATURE_TYPES: dict[str, tuple[str, bool]] = tf_feature_types()


def tf_feature_spec(include_image: bool = False, *, fields: Sequence[FieldSpec] | None = None):
    """The ``tf.io.parse_single_example`` spec of VESL's Examples: scalars as fixed-length features
    ("" / 0 when absent), lists as variable-length ones. Made from ``tf_feature_types(fields)``."""
    import tensorflow as tf

    dtypes = {"bytes": tf.string, "float": tf.float32, "int64": tf.int64}
    return {
        key: tf.io.FixedLenFeature([], dtypes[kind], default_value="" if kind == "bytes" else 0)
        if scalar
        else tf.io.VarLenFeature(dtypes[kind])
        for key, (kind, scalar) in tf_feature_types(fields, include_image=include_image).items()
    }


def parse_example(serialized, include_image: bool = False):
    """One serialized Example -> dict of tensors (variable-length features as dense tensors)."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, tf_feature_spec(include_image))
    return {k: tf.sparse.to_dense(v) if isinstance(v, tf.sparse.SparseTensor) else v for k, v in parsed.items()}


def vesl_tf_dataset(source: str, include_image: bool = False, compression: str | None = None):
    """A ``tf.data`` dataset of parsed Examples from a glob or file (listed with ``tf.io.gfile``), or from a
    VESL output folder or any folder (its committed TFRecord files, listed with fsspec:
    ``vesl.io.outputs.source_files``)."""
    import tensorflow as tf

    if any(c in source for c in "*?[") or (tf.io.gfile.exists(source) and not tf.io.gfile.isdir(source)):
        files = tf.io.gfile.glob(source)
    else:
        from vesl.io.outputs import source_files

        files = source_files(source, "tfrecord")
    if compression is None:
        compression = "GZIP" if any(f.endswith(".gz") for f in files) else ""
    return tf.data.TFRecordDataset(files, compression_type=compression).map(
        lambda x: parse_example(x, include_image), num_parallel_calls=tf.data.AUTOTUNE
    )


def iter_numpy_examples(
    source: str | Sequence[str], verify_crc: bool = True, *, fields: Sequence[FieldSpec] | None = None
) -> Iterator[dict[str, np.ndarray | bytes | int | float]]:
    """Examples as numpy arrays (lists) and Python scalars, CRC-checked, without TensorFlow, from a VESL
    output folder (its committed shards), any folder, globs or files (``vesl.io.outputs.source_files``). Whether a
    key is a scalar comes from the field table (every key, the image and provenance included); a key
    it does not know is a list, unless it is a provenance key (a newer version's)."""
    from vesl.io.outputs import source_files

    files = source_files(source, "tfrecord")
    declared = tf_feature_types(fields, include_image=True, include_per_run=True)
    dtypes = {"bytes": object, "float": np.float32, "int64": np.int64}
    for f in files:
        for raw in read_tfrecord_file(f, verify_crc):
            example: dict = {}
            for key, (kind, values) in decode_example(raw).items():
                scalar = declared[key][1] if key in declared else key.startswith(TFKeys.PROVENANCE_PREFIX)
                if scalar:
                    example[key] = values[0] if values else (b"" if kind == "bytes" else 0)
                else:
                    example[key] = np.asarray(values, dtype=dtypes[kind])
            yield example
