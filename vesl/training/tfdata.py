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
from vesl.training.patches import PatchClassTargets

# Per key: ("bytes" | "float" | "int64", scalar?) -- scalars are one value per image, lists one per
# region/phrase. Leaves out the image bytes (tf_feature_spec adds them on request) and the provenance.
FEATURE_TYPES: dict[str, tuple[str, bool]] = tf_feature_types()
BOX_KEYS = (TFKeys.BBOX_XMIN, TFKeys.BBOX_YMIN, TFKeys.BBOX_XMAX, TFKeys.BBOX_YMAX)


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


def vesl_tf_dataset(
    source: str,
    include_image: bool = False,
    compression: str | None = None,
    patch_classes: PatchClassTargets | None = None,
):
    """A ``tf.data`` dataset of parsed Examples from a glob or file (listed with ``tf.io.gfile``), or from a
    VESL output folder or any folder (its committed TFRecord files, listed with fsspec:
    ``vesl.io.outputs.source_files``). ``patch_classes`` adds ``PATCH_CLASSES_KEY``: patch-seg's
    per-patch class targets of each image (``vesl.training.patches.PatchClassTargets``; pick its crop
    to match the image preprocessing you apply)."""
    import tensorflow as tf

    if any(c in source for c in "*?[") or (tf.io.gfile.exists(source) and not tf.io.gfile.isdir(source)):
        files = tf.io.gfile.glob(source)
    else:
        from vesl.io.outputs import source_files

        files = source_files(source, "tfrecord")
    if compression is None:
        compression = "GZIP" if any(f.endswith(".gz") for f in files) else ""
    dataset = tf.data.TFRecordDataset(files, compression_type=compression).map(
        lambda x: parse_example(x, include_image), num_parallel_calls=tf.data.AUTOTUNE
    )
    if patch_classes is not None:
        dataset = dataset.map(lambda e: with_patch_classes(e, patch_classes), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset


PATCH_CLASSES_KEY = "patch/classes"


def example_patch_classes(example: dict, targets: PatchClassTargets) -> np.ndarray:
    """An Example's (numpy reader's or tf.data's, as numpy) patch class targets."""
    boxes = np.stack([np.asarray(example[k], np.float64) for k in BOX_KEYS], axis=-1).reshape(-1, 4)
    phrases = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in example[TFKeys.OBJECT_TEXT]]
    return targets(boxes, phrases, int(example[TFKeys.WIDTH]), int(example[TFKeys.HEIGHT]))


def with_patch_classes(example: dict, targets: PatchClassTargets) -> dict:
    """Adds ``PATCH_CLASSES_KEY`` to a parsed Example (computed in numpy through ``tf.numpy_function``:
    the phrase matching is Python)."""
    import tensorflow as tf

    keys = [*BOX_KEYS, TFKeys.OBJECT_TEXT, TFKeys.WIDTH, TFKeys.HEIGHT]

    def compute(*values):
        return example_patch_classes(dict(zip(keys, values)), targets)

    union = targets.reduction == "union"
    out = tf.numpy_function(compute, [example[k] for k in keys], tf.bool if union else tf.int64, stateful=False)
    g = targets.grid.grid
    out.set_shape((g, g, targets.num_classes) if union else (g, g))
    return {**example, PATCH_CLASSES_KEY: out}


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
