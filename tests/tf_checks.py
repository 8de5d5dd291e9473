"""Run by the tests under the TensorFlow venv (tests/tf_venv.sh), never in VESL's own venv:

    python tests/tf_checks.py PATTERN [--include_image]
    python tests/tf_checks.py PATTERN --patch-vocabulary FILE SIZE/PATCH CROP REDUCTION

Reads VESL's TFRecords with TensorFlow: through VESL's tf.data reader (vesl.training.tfdata) and
with a bare tf.data.TFRecordDataset + tf.io.parse_single_example, and prints, per Example, every
feature as JSON (bytes as hex, floats as their float32 bit patterns) so the caller can compare them
bit for bit with what VESL's own numpy reader gives. With ``--patch-vocabulary`` it prints instead,
per key, the patch class targets ``vesl_tf_dataset(..., patch_classes=...)`` adds (as the non-zero
entries of the union targets, or the majority grid).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from vesl.patchseg.targets import PatchGrid
from vesl.patchseg.vocabulary import Vocabulary
from vesl.training.patches import PatchClassTargets
from vesl.training.tfdata import FEATURE_TYPES, PATCH_CLASSES_KEY, vesl_tf_dataset


def patch_classes(pattern: str, vocabulary: str, grid: str, crop: str, reduction: str) -> None:
    size, patch = map(int, grid.split("/"))
    names = Vocabulary.parse(Path(vocabulary).read_text(encoding="utf-8"))  # this venv has no fsspec
    targets = PatchClassTargets(names, PatchGrid(size, patch), reduction, crop)
    out = {}
    for example in vesl_tf_dataset(pattern, patch_classes=targets).as_numpy_iterator():
        value = example[PATCH_CLASSES_KEY]
        out[example["image/key"].decode()] = np.argwhere(value).tolist() if reduction == "union" else value.tolist()
    print(json.dumps({"tensorflow": tf.__version__, "patch_classes": out}))


def plain(value) -> object:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "S":
        return [v.hex() for v in array.reshape(-1).tolist()] if array.ndim else array.item().hex()
    if array.dtype == np.float32:
        bits = [struct.unpack("<I", struct.pack("<f", v))[0] for v in array.reshape(-1).tolist()]
        return bits if array.ndim else bits[0]
    return array.tolist()


def main() -> None:
    pattern = sys.argv[1]
    if "--patch-vocabulary" in sys.argv:
        at = sys.argv.index("--patch-vocabulary")
        return patch_classes(pattern, *sys.argv[at + 1 : at + 5])
    include_image = "--include_image" in sys.argv
    through_vesl = [
        {k: plain(v) for k, v in example.items()}
        for example in vesl_tf_dataset(pattern, include_image=include_image).as_numpy_iterator()
    ]
    files = tf.io.gfile.glob(pattern)
    compression = "GZIP" if any(f.endswith(".gz") for f in files) else ""
    spec = {
        key: tf.io.VarLenFeature({"bytes": tf.string, "float": tf.float32, "int64": tf.int64}[kind])
        for key, (kind, _) in FEATURE_TYPES.items()
    }
    bare = []
    for serialized in tf.data.TFRecordDataset(files, compression_type=compression):
        parsed = {k: tf.sparse.to_dense(v).numpy() for k, v in tf.io.parse_single_example(serialized, spec).items()}
        default = {"bytes": b"", "float": np.float32(0), "int64": 0}
        bare.append(
            {
                k: plain((v[0] if len(v) else default[FEATURE_TYPES[k][0]]) if FEATURE_TYPES[k][1] else v)
                for k, v in parsed.items()
            }
        )
    # The keys the TF Object Detection API's TfExampleDecoder reads (object_detection/data_decoders/
    # tf_example_decoder.py), parsed with its own types.
    od_spec = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        "image/source_id": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=1),
        "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=1),
        "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
        "image/object/class/text": tf.io.VarLenFeature(tf.string),
    }
    od_api = []
    for serialized in tf.data.TFRecordDataset(files, compression_type=compression):
        parsed = tf.io.parse_single_example(serialized, od_spec)
        od_api.append(
            {
                "source_id": parsed["image/source_id"].numpy().decode(),
                "format": parsed["image/format"].numpy().decode(),
                "labels": tf.sparse.to_dense(parsed["image/object/class/label"]).numpy().tolist(),
                "texts": [t.decode() for t in tf.sparse.to_dense(parsed["image/object/class/text"]).numpy().tolist()],
                "xmin": len(tf.sparse.to_dense(parsed["image/object/bbox/xmin"]).numpy()),
            }
        )
    print(json.dumps({"tensorflow": tf.__version__, "vesl_reader": through_vesl, "bare": bare, "od_api": od_api}))


if __name__ == "__main__":
    main()
