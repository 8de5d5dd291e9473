"""tf.train.Example encode/decode with protobuf alone (no TensorFlow).

The message classes are built at import time from a descriptor identical to TensorFlow's
``tensorflow/core/example/{example,feature}.proto`` (package ``tensorflow``, same field numbers and
packing), so the bytes are what TensorFlow writes and ``tf.io.parse_single_example`` reads them.

Features are given and returned as ``{name: (kind, values)}`` with kind ``bytes``, ``float`` or
``int64``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FeatureValue = tuple[str, Sequence[Any]]
_F = descriptor_pb2.FieldDescriptorProto


def _build_classes():
    fd = descriptor_pb2.FileDescriptorProto(name="vesl/tensorflow_example.proto", package="tensorflow", syntax="proto3")

    def message(name: str, fields: list[tuple[str, int, int, int, str | None, bool]]):
        msg = fd.message_type.add(name=name) if isinstance(name, str) else name
        for fname, number, ftype, label, type_name, packed in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if packed:
                field.options.packed = True
        return msg

    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    message("BytesList", [("value", 1, _F.TYPE_BYTES, rep, None, False)])
    message("FloatList", [("value", 1, _F.TYPE_FLOAT, rep, None, True)])
    message("Int64List", [("value", 1, _F.TYPE_INT64, rep, None, True)])
    feature = message(
        "Feature",
        [
            ("bytes_list", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", False),
            ("float_list", 2, _F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", False),
            ("int64_list", 3, _F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", False),
        ],
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = fd.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    features.field.add(
        name="feature", number=1, type=_F.TYPE_MESSAGE, label=rep, type_name=".tensorflow.Features.FeatureEntry"
    )
    message("Example", [("features", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.Features", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
        for name in ("Example", "Feature")
    }


_CLASSES = _build_classes()
Example = _CLASSES["Example"]
_KIND_FIELD = {"bytes": "bytes_list", "float": "float_list", "int64": "int64_list"}
_FIELD_KIND = {v: k for k, v in _KIND_FIELD.items()}


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    example = Example()
    feature_map = example.features.feature
    for name, (kind, values) in features.items():
        if kind not in _KIND_FIELD:
            raise ValueError(f"feature {name!r}: unknown kind {kind!r}")
        getattr(feature_map[name], _KIND_FIELD[kind]).value.extend(values)
    return example.SerializeToString(deterministic=True)


def decode_example(data: bytes) -> dict[str, FeatureValue]:
    example = Example()
    example.ParseFromString(data)
    out: dict[str, FeatureValue] = {}
    for name, feature in example.features.feature.items():
        field = feature.WhichOneof("kind")
        if field is None:
            out[name] = ("bytes", [])
        else:
            out[name] = (_FIELD_KIND[field], list(getattr(feature, field).value))
    return out
