"""The output layouts, owned here and nowhere else: the Parquet (Arrow) schema, the TFRecord
(tf.train.Example) feature keys, the box convention and the schema version.

Every output field is declared once, in the field table below (``FIELDS``, with ``PHRASE_FIELDS``,
``REGION_FIELDS`` and ``PROVENANCE_FIELDS`` for the nested ones): its Parquet name and Arrow type, its
TFRecord key(s) and kind, and the record attribute it is taken from and put back into. The Arrow
schema, the row codecs of both layouts, ``TFKeys``, the tf.data feature spec
(``vesl.training.tfdata``) and the dataset card's features are all derived from that table, so a new
field is one new table entry. Writers, readers and training readers convert with the functions below;
none restates a column name or key.

Box convention (both layouts): ``(xmin, ymin, xmax, ymax)`` normalized by the width and height of
the ORIGINAL image as displayed, i.e. after its EXIF orientation is applied; origin at the top-left
corner, x to the right, y down, values in [0, 1]; pixel edges, so ``xmin * width`` is the left edge
in pixels. This is GRIT's convention. Conversions to other conventions (detector input, training
crops) happen only at the edges (``vesl.vision.geometry``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

import pyarrow as pa

from vesl import __version__
from vesl.records import ImageRecord, LabeledImage, Phrase, Region

SCHEMA_VERSION = "1.2.0"  # 1.1: generated_caption, caption_source, provenance.captioner; 1.2: TF OD API class keys, image_format lower case
BOX_CONVENTION = "xyxy, normalized to the original image as displayed (EXIF orientation applied), origin top-left"
METADATA_SCHEMA_VERSION = b"vesl.schema_version"
METADATA_CONFIG = b"vesl.config"
METADATA_BOX_CONVENTION = b"vesl.box_convention"
# The TF key of each Provenance field is this + its name, e.g. vesl/provenance/schema_version.
PROVENANCE_PREFIX = "vesl/provenance/"

TFFeatures = dict[str, tuple[str, list[Any]]]  # {key: (kind, values)}, as vesl.io.tfexample encodes and decodes


@dataclass(frozen=True)
class Provenance:
    """What produced a row; the same for every row of a run."""

    vesl_version: str
    schema_version: str
    preset: str
    detector: str  # checkpoint id/path and input size, e.g. "google/owlv2-large-patch14-finetuned@448"
    weights: str  # "pretrained" | "random weights"
    config_digest: str  # VeslConfig.digest(); the full config is in the file metadata / summary.json
    captioner: str = ""  # checkpoint and generation settings of the captioning stage; "" when off

    @classmethod
    def for_run(
        cls, preset: str, checkpoint: str, image_size: int, weights: str, config_digest: str, captioner: str = ""
    ) -> Provenance:
        return cls(__version__, SCHEMA_VERSION, preset, f"{checkpoint}@{image_size}", weights, config_digest, captioner)


@functools.lru_cache(maxsize=8)
def _provenance_items(provenance: Provenance) -> tuple[tuple[str, str], ...]:
    return tuple(asdict(provenance).items())


def provenance_dict(provenance: Provenance) -> dict[str, str]:
    """``asdict(provenance)``, worked out once a run (it is the same for every row) and copied per row."""
    return dict(_provenance_items(provenance))


# -- The field table: its vocabulary ------------------------------------------------------------
class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED: Any = _Sentinel("REQUIRED")  # a field's default: reading fails when the column (TF key) is absent
_AS_PARQUET: Any = _Sentinel("AS_PARQUET")  # tf_default: the same as the Parquet default


class RowSource(NamedTuple):
    """What the image-level fields are taken from: their ``attr`` paths start here ("record.key")."""

    record: ImageRecord
    regions: tuple[Region, ...]
    provenance: Provenance


@dataclass(frozen=True)
class TFKey:
    """One tf.train.Example key of a field. A field may have several: the box's four corners (the OD
    API's layout), the key and its duplicate ``image/source_id``, the query index and the OD label."""

    key: str
    kind: str  # "bytes" | "int64" | "float"
    const: str | None = None  # its name in TFKeys (TFKeys.BBOX_XMIN)
    # Its place among the Example's keys (and FEATURE_TYPES'): today's order, kept so dicts compare
    # as before (the serialized bytes sort the keys anyway). Ties keep table order; None: after all.
    at: int | None = None
    write: Callable[[Any], Any] | None = None  # the field's stored value -> this key's value; None: the value
    read: bool = True  # False: derived on write (source_id, class/label), not read back


@dataclass(frozen=True)
class FieldSpec:
    """One output field, declared once; every layout is derived from these. Image-level fields are one
    value per image (TF: a one-value list); the ``items`` of a ``many`` field are one value per
    phrase / region (TF: one list per key)."""

    name: str  # Parquet column / struct field name
    arrow: pa.DataType | None = None  # None: the struct of ``items`` (a list of them when ``many``)
    tf: TFKey | tuple[TFKey, ...] = ()
    # Where the value is taken from and put back: an attribute path on the owner (a RowSource for
    # image-level fields, the Phrase / Region / Provenance for items); default: ``name``.
    attr: str | None = None
    get: Callable[[Any], Any] | None = None  # instead of attr: computed from the owner on write, not read back
    items: tuple[FieldSpec, ...] = ()  # a nested field's fields, put back as ``item_type(**attributes)``
    item_type: type | None = None
    many: bool = False  # a list of item_type (phrases, regions), not one
    nullable: bool = True  # Arrow nullability
    optional: bool = False  # may be None: TF (which has no null) writes "" / 0; reads "" back as None (0 stays 0)
    default: Any = REQUIRED  # read when the Parquet column is absent (older files, a column left out)
    tf_default: Any = _AS_PARQUET  # read when the TF key is absent or empty; items: REQUIRED there = no items
    store: Callable[[Any], Any] | None = None  # attribute -> stored value (both layouts)
    load: Callable[[Any], Any] | None = None  # stored value -> attribute
    image_bytes: bool = False  # (image level) the encoded image: only with include_image; datasets.Image in the card
    per_run: bool = False  # the same on every row of a run (provenance): not in the tf.data feature spec

    # Set from the above, once (they run per row): the attribute (the objects, for a nested field),
    # the stored value (for a nested field its Parquet struct(s)), the items read back and
    # item_type from their values (nested fields), and the attribute back from a Parquet struct.
    value: Callable[[Any], Any] = field(init=False, repr=False, compare=False)
    stored: Callable[[Any], Any] = field(init=False, repr=False, compare=False)
    read_items: tuple[FieldSpec, ...] = field(init=False, repr=False, compare=False)
    make_item: Callable[[Sequence[Any]], Any] | None = field(init=False, repr=False, compare=False)
    read_parquet: Callable[[Mapping[str, Any]], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.tf, TFKey):
            object.__setattr__(self, "tf", (self.tf,))
        object.__setattr__(self, "value", self.get or attrgetter(self.target))
        object.__setattr__(self, "stored", _stored_getter(self))
        read_items, make_item = _item_maker(self)
        object.__setattr__(self, "read_items", read_items)
        object.__setattr__(self, "make_item", make_item)
        object.__setattr__(self, "read_parquet", _parquet_reader(self))

    @property
    def target(self) -> str:
        """The attribute (path) the value is put back into."""
        return self.attr or self.name

    @property
    def derived(self) -> bool:
        return self.get is not None

    @property
    def arrow_type(self) -> pa.DataType:
        if not self.items:
            return self.arrow
        struct = pa.struct(arrow_fields(self.items))
        return pa.list_(struct) if self.many else struct

    @property
    def tf_missing(self) -> Any:
        return self.default if self.tf_default is _AS_PARQUET else self.tf_default

    def loaded(self, stored: Any) -> Any:
        return self.load(stored) if self.load else stored


def _stored_getter(spec: FieldSpec) -> Callable[[Any], Any]:
    """owner -> the stored value: ``store(value)``; for a nested field its struct(s) as Parquet rows hold them."""
    value, store = spec.value, spec.store
    if spec.items:
        columns = [(item.name, item.stored) for item in spec.items]

        def struct(item: Any) -> dict[str, Any]:
            return {name: stored(item) for name, stored in columns}

        def structs(owner: Any) -> Any:
            return [struct(item) for item in value(owner)] if spec.many else struct(value(owner))

        return structs
    if store is None:
        return value
    return lambda owner: store(value(owner))


def _item_maker(spec: FieldSpec) -> tuple[tuple[FieldSpec, ...], Callable[[Sequence[Any]], Any] | None]:
    """A nested field's items that are read back (all but derived ones), and item_type from their values
    in that order: positionally when they are its first parameters (3x faster per region than **kwargs)."""
    if not spec.items:
        return (), None
    make, items = spec.item_type, [item for item in spec.items if not item.derived]
    params = [f.name for f in dataclasses.fields(make) if f.init] if dataclasses.is_dataclass(make) else []
    if {item.target for item in items} == set(params[: len(items)]):
        items.sort(key=lambda item: params.index(item.target))
        return tuple(items), lambda values: make(*values)
    names = [item.target for item in items]
    return tuple(items), lambda values: make(**dict(zip(names, values)))


def _parquet_reader(spec: FieldSpec) -> Callable[[Mapping[str, Any]], Any]:
    """A Parquet struct (dict) -> the attribute: the column (or the default when absent), loaded; for a
    nested field the item_type object(s)."""
    name, default, load = spec.name, spec.default, spec.load

    def column_or_default(values: Mapping[str, Any]) -> Any:
        return values.get(name, default)

    column = itemgetter(name) if default is REQUIRED else column_or_default
    if spec.items:
        make, readers = spec.make_item, [item.read_parquet for item in spec.read_items]

        def struct(values: Mapping[str, Any]) -> Any:
            return make([read(values) for read in readers])

        load = (lambda structs: tuple(map(struct, structs))) if spec.many else struct
    if load is None:
        return column
    return lambda values: load(column(values))


def stored_format(pillow_format: str | None) -> str | None:
    """The encoded format as both outputs store it: lower case ("jpeg", "png"), as the TF Object
    Detection API's ``image/format``; records carry Pillow's name ("JPEG") inside the pipeline."""
    return pillow_format.lower() if pillow_format else None


def _pillow_format(stored: str | None) -> str | None:
    return (stored or "").upper() or None


def _od_label(query_index: int) -> int:
    """The TF Object Detection API's class/label: 1 + the phrase's index among the image's queries
    (per-image labels; 0 is the OD API's background)."""
    return query_index + 1


def _bytes_or_empty(stored: bytes | None) -> bytes:
    return stored or b""


# -- The field table ----------------------------------------------------------------------------
# In Parquet column order; ``at`` gives the TF key order. FieldSpec(name, Arrow type, TF key(s), ...):
# phrase and region fields are lists in TF (one value per phrase / region), structs in Parquet.
PHRASE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("text", pa.string(), TFKey("image/phrase/text", "bytes", "PHRASE_TEXT", at=21)),
    FieldSpec("char_start", pa.int32(), TFKey("image/phrase/char_start", "int64", "PHRASE_CHAR_START", at=22)),
    FieldSpec("char_end", pa.int32(), TFKey("image/phrase/char_end", "int64", "PHRASE_CHAR_END", at=23)),
    FieldSpec("parser", pa.string(), TFKey("image/phrase/parser", "bytes", "PHRASE_PARSER", at=24)),
    # "alt" | "generated": which caption the span indexes; absent before schema 1.1
    FieldSpec(
        "caption_source",
        pa.string(),
        TFKey("image/phrase/caption_source", "bytes", "PHRASE_CAPTION_SOURCE", at=25),
        default="alt",
    ),
)
REGION_FIELDS: tuple[FieldSpec, ...] = (
    # The TF Object Detection API's names: class/text is the region's phrase.
    FieldSpec("phrase", pa.string(), TFKey("image/object/class/text", "bytes", "OBJECT_TEXT", at=12)),
    FieldSpec("char_start", pa.int32(), TFKey("image/object/char_start", "int64", "OBJECT_CHAR_START", at=16)),
    FieldSpec("char_end", pa.int32(), TFKey("image/object/char_end", "int64", "OBJECT_CHAR_END", at=17)),
    # xmin, ymin, xmax, ymax (BOX_CONVENTION): one Parquet column, the OD API's four TF keys
    FieldSpec(
        "box",
        pa.list_(pa.float32(), 4),
        (
            TFKey("image/object/bbox/xmin", "float", "BBOX_XMIN", at=8, write=itemgetter(0)),
            TFKey("image/object/bbox/ymin", "float", "BBOX_YMIN", at=9, write=itemgetter(1)),
            TFKey("image/object/bbox/xmax", "float", "BBOX_XMAX", at=10, write=itemgetter(2)),
            TFKey("image/object/bbox/ymax", "float", "BBOX_YMAX", at=11, write=itemgetter(3)),
        ),
        store=list,
        load=tuple,
    ),
    FieldSpec("score", pa.float32(), TFKey("image/object/score", "float", "OBJECT_SCORE", at=14)),
    FieldSpec("objectness", pa.float32(), TFKey("image/object/objectness", "float", "OBJECT_OBJECTNESS", at=15)),
    FieldSpec(
        "query_index",
        pa.int32(),
        (
            # the OD API's class/label = query_index + 1 (0 is its background); derived, not read back
            TFKey("image/object/class/label", "int64", "OBJECT_LABEL", at=13, write=_od_label, read=False),
            TFKey("image/object/query_index", "int64", "OBJECT_QUERY_INDEX", at=18),
        ),
    ),
    FieldSpec("parser", pa.string(), TFKey("image/object/parser", "bytes", "OBJECT_PARSER", at=19)),
    FieldSpec(
        "caption_source",
        pa.string(),
        TFKey("image/object/caption_source", "bytes", "OBJECT_CAPTION_SOURCE", at=20),
        default="alt",  # absent before schema 1.1
    ),
)
# One per Provenance field, strings: TF key vesl/provenance/<name>, "" when absent.
PROVENANCE_FIELDS: tuple[FieldSpec, ...] = tuple(
    FieldSpec(
        f.name,
        pa.string(),
        TFKey(PROVENANCE_PREFIX + f.name, "bytes", at=28),
        default=REQUIRED if f.default is dataclasses.MISSING else f.default,  # captioner: absent before 1.1
        tf_default="",
    )
    for f in dataclasses.fields(Provenance)
)
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        "key",
        pa.string(),
        (
            TFKey("image/key", "bytes", "KEY", at=0),
            TFKey("image/source_id", "bytes", "SOURCE_ID", at=1, read=False),  # = key (the OD API's id field)
        ),
        attr="record.key",
        nullable=False,
    ),
    FieldSpec(
        "source_shard",
        pa.string(),
        TFKey("vesl/source_shard", "bytes", "SOURCE_SHARD", at=26),
        attr="record.shard",
        tf_default="",
    ),
    FieldSpec(  # position of the record in its shard (0-based)
        "source_index",
        pa.int64(),
        TFKey("vesl/source_index", "int64", "SOURCE_INDEX", at=27),
        attr="record.index",
        tf_default=-1,
    ),
    FieldSpec(
        "url",
        pa.string(),
        TFKey("image/url", "bytes", "URL", at=6),
        attr="record.url",
        optional=True,
        default=None,
    ),
    FieldSpec(  # alt-text
        "caption",
        pa.string(),
        TFKey("image/caption", "bytes", "CAPTION", at=4),
        attr="record.caption",
        tf_default="",
    ),
    FieldSpec(  # from the captioning stage, when it ran; TF: "" when it did not
        "generated_caption",
        pa.string(),
        TFKey("image/generated_caption", "bytes", "GENERATED_CAPTION", at=5),
        attr="record.generated_caption",
        optional=True,
        default=None,
    ),
    FieldSpec(  # pixels, as displayed (after EXIF transpose); TF: 0 when unknown
        "width",
        pa.int32(),
        TFKey("image/width", "int64", "WIDTH", at=2),
        attr="record.width",
        optional=True,
        tf_default=None,
    ),
    FieldSpec(
        "height",
        pa.int32(),
        TFKey("image/height", "int64", "HEIGHT", at=3),
        attr="record.height",
        optional=True,
        tf_default=None,
    ),
    FieldSpec("phrases", attr="record.phrases", items=PHRASE_FIELDS, item_type=Phrase, many=True),
    FieldSpec("regions", attr="regions", items=REGION_FIELDS, item_type=Region, many=True),
    FieldSpec(  # lower case ("jpeg"), as the OD API's image/format; Pillow's upper-case name in the records
        "image_format",
        pa.string(),
        TFKey("image/format", "bytes", "FORMAT", at=7),
        attr="record.image_format",
        optional=True,
        default=None,
        store=stored_format,
        load=_pillow_format,
    ),
    FieldSpec(  # the original encoded bytes, when the run writes them (Parquet: null otherwise; TF: no key)
        "image",
        pa.binary(),
        TFKey("image/encoded", "bytes", "ENCODED", at=29),
        attr="record.image_bytes",
        default=None,
        load=_bytes_or_empty,
        image_bytes=True,
    ),
    FieldSpec("provenance", attr="provenance", items=PROVENANCE_FIELDS, item_type=Provenance, per_run=True),
)


# -- Derived: Arrow types and TFKeys -------------------------------------------------------------
def arrow_fields(fields: Sequence[FieldSpec] | None = None) -> list[pa.Field]:
    """The Arrow fields of a table (the Parquet columns, or a struct's fields), in table order."""
    return [pa.field(f.name, f.arrow_type, nullable=f.nullable) for f in (FIELDS if fields is None else fields)]


def _walk(fields: Sequence[FieldSpec]) -> Iterator[FieldSpec]:
    for spec in fields:
        yield spec
        yield from _walk(spec.items)


PHRASE_TYPE = pa.struct(arrow_fields(PHRASE_FIELDS))
REGION_TYPE = pa.struct(arrow_fields(REGION_FIELDS))
PROVENANCE_TYPE = pa.struct(arrow_fields(PROVENANCE_FIELDS))
PARQUET_FIELDS = arrow_fields(FIELDS)


class TFKeys:
    """The Example keys by name (``TFKeys.BBOX_XMIN == "image/object/bbox/xmin"``), for readers and
    tests: set below from the table's ``TFKey.const``, never restated."""

    PROVENANCE_PREFIX = PROVENANCE_PREFIX  # + each Provenance field, e.g. vesl/provenance/schema_version


def _name_keys(namespace: type, fields: Sequence[FieldSpec]) -> None:
    for spec in _walk(fields):
        for key in spec.tf:
            if key.const:
                setattr(namespace, key.const, key.key)


_name_keys(TFKeys, FIELDS)


# -- Derived: Hugging Face features ---------------------------------------------------------------
def hf_feature(arrow_type: pa.DataType, image: bool = False) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature (its JSON form, ``Features.to_dict``) for an Arrow type
    of VESL's schema; ``image``: binary image bytes, which ``datasets`` decodes as ``datasets.Image``."""
    if image:
        return {"_type": "Image"}
    if pa.types.is_struct(arrow_type):
        return {f.name: hf_feature(f.type) for f in arrow_type}
    if pa.types.is_fixed_size_list(arrow_type):
        return {"_type": "List", "feature": hf_feature(arrow_type.value_type), "length": arrow_type.list_size}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return {"_type": "List", "feature": hf_feature(arrow_type.value_type)}
    dtype = {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(arrow_type), str(arrow_type))
    return {"_type": "Value", "dtype": dtype}


def _hf_yaml(feature: dict[str, Any]) -> dict[str, Any]:
    """A feature's YAML form, as ``datasets`` writes it (``Features._to_yaml_list``)."""

    def simplify(value: dict[str, Any]) -> Any:
        if list(value) == ["dtype"]:
            return value["dtype"]
        if list(value) == ["struct"]:
            return value["struct"]
        return value

    kind = feature.get("_type")
    if kind == "List":
        out = {"list": simplify(_hf_yaml(feature["feature"]))}
        return {**out, "length": feature["length"]} if "length" in feature else out
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "Image":
        return {"dtype": "image"}
    return {"struct": [{"name": name, **_hf_yaml(sub)} for name, sub in feature.items()]}


def hf_card_features(fields: Sequence[FieldSpec] | Sequence[pa.Field] | None = None) -> list[dict[str, Any]]:
    """The features in a dataset card's YAML form (``dataset_info.features``), from the field table (or
    Arrow fields, whose ``image`` column is the image). From the card, ``datasets`` casts the Parquet
    columns to these features, which turns the binary image column into ``datasets.Image``."""

    def feature(f: FieldSpec | pa.Field) -> dict[str, Any]:
        if isinstance(f, pa.Field):
            return hf_feature(f.type, image=f.name == "image")
        return hf_feature(f.arrow_type, image=f.image_bytes)

    return [{"name": f.name, **_hf_yaml(feature(f))} for f in (FIELDS if fields is None else fields)]


# -- Derived: Parquet ---------------------------------------------------------------------------
def parquet_schema(config_json: str | None = None, *, fields: Sequence[FieldSpec] | None = None) -> pa.Schema:
    """The Arrow schema of the region Parquet files, with the version (and config) as metadata."""
    metadata = {
        METADATA_SCHEMA_VERSION: SCHEMA_VERSION.encode(),
        METADATA_BOX_CONVENTION: BOX_CONVENTION.encode(),
    }
    if config_json is not None:
        metadata[METADATA_CONFIG] = config_json.encode()
    return pa.schema(arrow_fields(fields), metadata=metadata)


def from_parquet_row(
    row: Mapping[str, Any], *, fields: Sequence[FieldSpec] | None = None
) -> tuple[LabeledImage, Provenance]:
    """The record types back from a Parquet row (derived fields are not read back)."""
    fields = FIELDS if fields is None else fields
    return _assemble({spec.target: spec.read_parquet(row) for spec in fields if not spec.derived})


def _assemble(values: dict[str, Any]) -> tuple[LabeledImage, Provenance]:
    """The record types from the image-level fields' attribute paths ("record.key", "regions", "provenance")."""
    record = {path.removeprefix("record."): v for path, v in values.items() if path.startswith("record.")}
    return LabeledImage(ImageRecord(**record), values.get("regions", ())), values["provenance"]


# -- Derived: TFRecord (tf.train.Example, TF Object Detection API style keys) ----------------------
def _order(entry: tuple[TFKey, Any]) -> float:
    return math.inf if entry[0].at is None else entry[0].at


def tf_feature_types(
    fields: Sequence[FieldSpec] | None = None, *, include_image: bool = False, include_per_run: bool = False
) -> dict[str, tuple[str, bool]]:
    """{key: (kind, scalar)} in the Examples' key order: scalars are one value per image, lists one per
    region / phrase. The tf.data feature spec and the numpy reader (``vesl.training.tfdata``) are made
    from it; the image bytes (optional) and per-run fields (provenance) only when asked for."""
    entries: list[tuple[TFKey, bool]] = []
    for spec in FIELDS if fields is None else fields:
        if (include_image or not spec.image_bytes) and (include_per_run or not spec.per_run):
            entries.extend(_key_kinds(spec, scalar=True))
    entries.sort(key=_order)
    return {key.key: (key.kind, scalar) for key, scalar in entries}


def _key_kinds(spec: FieldSpec, scalar: bool) -> Iterator[tuple[TFKey, bool]]:
    for item in spec.items:
        yield from _key_kinds(item, scalar and not spec.many)
    for key in spec.tf:
        yield key, scalar


def to_parquet_row(
    labeled: LabeledImage, provenance: Provenance, include_image: bool, *, fields: Sequence[FieldSpec] | None = None
) -> dict[str, Any]:
    """One Parquet row (a dict for ``pa.Table.from_pylist``) of an image, in the table's column order."""
    return _writers(FIELDS if fields is None else fields).parquet(labeled, provenance, include_image)


def to_tf_features(
    labeled: LabeledImage, provenance: Provenance, include_image: bool, *, fields: Sequence[FieldSpec] | None = None
) -> TFFeatures:
    """The Example's features of an image (``vesl.io.tfexample.encode_example``), keys in ``TFKey.at`` order."""
    return _writers(FIELDS if fields is None else fields).tf(labeled, provenance, include_image)


# -- Derived: the write functions, as code ---------------------------------------------------------
# Writing runs once per output row on the workers, so the two write functions are generated from the
# table as the plain Python one would write by hand (a dict literal, list comprehensions over the
# phrases and regions) and compiled once per table: walking the table per row cost 2-4x the time.
class _Code:
    """The expressions of a generated function, and the objects they refer to by name."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"_RowSource": RowSource, "_text": _text_bytes, "_none_as": _none_as}

    def ref(self, obj: Any) -> str:
        name = f"_f{len(self.names)}"
        self.names[name] = obj
        return name

    def value(self, spec: FieldSpec, owner: str) -> str:
        """A field's stored value (``store`` applied); ``owner``: the expression it is taken from."""
        value = f"{self.ref(spec.get)}({owner})" if spec.get else f"{owner}.{spec.target}"
        return f"{self.ref(spec.store)}({value})" if spec.store else value

    def parquet(self, spec: FieldSpec, owner: str) -> str:
        """A field's Parquet value: for a nested field its struct (a dict), or the list of them."""
        if not spec.items:
            value = self.value(spec, owner)
            return f"({value}) if include_image else None" if spec.image_bytes else value
        if spec.per_run:  # the same on every row of a run: worked out once, copied per row
            return f"dict({self.ref(_per_run_struct(spec))}({owner}.{spec.target}))"
        item = "_item" if spec.many else f"{owner}.{spec.target}"
        struct = "{" + ", ".join(f"{sub.name!r}: {self.parquet(sub, item)}" for sub in spec.items) + "}"
        return f"[{struct} for _item in {owner}.{spec.target}]" if spec.many else struct

    def tf(self, spec: FieldSpec, owner: str, items: str | None = None) -> Iterator[tuple[TFKey, str, bool]]:
        """(key, the expression of its value list, image bytes?) of a field's keys; ``items``: the
        expression of the phrases / regions whose values the keys list (one each)."""
        if spec.items:
            for sub in spec.items:
                if spec.many:
                    yield from self.tf(sub, "_item", f"{owner}.{spec.target}")
                else:
                    yield from self.tf(sub, f"{owner}.{spec.target}", items)
            return
        for key in spec.tf:
            value = self.value(spec, owner)
            value = f"{self.ref(key.write)}({value})" if key.write else value
            if spec.optional:  # TF has no null
                value = f"_none_as({value}, {b'' if key.kind == 'bytes' else 0!r})"
            if key.kind == "bytes":
                value = f"_text({value})"
            yield key, (f"[{value} for _item in {items}]" if items else f"[{value}]"), spec.image_bytes


def _text_bytes(value: Any) -> Any:
    return value.encode("utf-8") if isinstance(value, str) else value


def _none_as(value: Any, empty: Any) -> Any:
    return empty if value is None else value


def _per_run_struct(spec: FieldSpec) -> Callable[[Any], dict[str, Any]]:
    @functools.lru_cache(maxsize=8)
    def items(owner: Any) -> tuple[tuple[str, Any], ...]:
        return tuple((sub.name, sub.stored(owner)) for sub in spec.items)

    return lambda owner: items(owner)


class _Writers(NamedTuple):
    parquet: Callable[[LabeledImage, Provenance, bool], dict[str, Any]]
    tf: Callable[[LabeledImage, Provenance, bool], TFFeatures]


_COMPILED: dict[int, tuple[Sequence[FieldSpec], _Writers]] = {}


def _writers(fields: Sequence[FieldSpec]) -> _Writers:
    """The table's write functions, compiled at its first use (looked up by identity: hashing the whole
    table would cost more than writing a row)."""
    entry = _COMPILED.get(id(fields))
    if entry is None or entry[0] is not fields:
        entry = _COMPILED[id(fields)] = (fields, _compile_writers(fields))
    return entry[1]


def _compile_writers(fields: Sequence[FieldSpec]) -> _Writers:
    """The table's two write functions as code; image-level fields are taken from ``src`` (a RowSource)."""
    code = _Code()
    head = ["    src = _RowSource(labeled.record, labeled.regions, provenance)"]
    columns = ", ".join(f"{spec.name!r}: {code.parquet(spec, 'src')}" for spec in fields)
    keys = sorted((entry for spec in fields for entry in code.tf(spec, "src")), key=lambda e: _order(e[:2]))
    lines = ["def parquet(labeled, provenance, include_image):", *head, f"    return {{{columns}}}"]
    lines += ["def tf(labeled, provenance, include_image):", *head, "    features = {}"]
    for key, values, image in keys:
        guard = "if include_image: " if image else ""  # no key at all without the image (as the OD API)
        lines.append(f"    {guard}features[{key.key!r}] = ({key.kind!r}, {values})")
    lines.append("    return features")
    namespace = dict(code.names)
    exec(compile("\n".join(lines), "<vesl.schema write functions>", "exec"), namespace)
    return _Writers(namespace["parquet"], namespace["tf"])


def from_tf_features(
    features: Mapping[str, tuple[str, Sequence[Any]]], *, fields: Sequence[FieldSpec] | None = None
) -> tuple[LabeledImage, Provenance]:
    """The record types back from an Example's features. Keys an Example lacks read as the fields'
    ``tf_default`` (Examples from older versions; derived keys are not read back)."""
    fields = FIELDS if fields is None else fields
    return _assemble({spec.target: _tf_attribute(spec, features) for spec in fields if not spec.derived})


def _tf_attribute(spec: FieldSpec, features: Mapping[str, Any]) -> Any:
    """A field's attribute from the features; for a nested field its item_type object(s)."""
    if spec.items and spec.many:
        return _tf_items(spec, features)
    if spec.items:
        return spec.make_item([_tf_attribute(item, features) for item in spec.read_items])
    column = _tf_column(spec, features)
    if column is not None:
        return _tf_back(spec, column[:1])[0]
    if spec.tf_missing is REQUIRED:
        raise KeyError(spec.tf[0].key if spec.tf else spec.name)
    return spec.loaded(spec.tf_missing)


def _tf_items(spec: FieldSpec, features: Mapping[str, Any]) -> tuple[Any, ...]:
    """The phrases / regions: one per position of the item keys' lists (as zip: the shortest wins);
    an absent key with a default fills it, one without leaves no items."""
    columns = [_tf_column(item, features) for item in spec.read_items]
    n = max((len(column) for column in columns if column is not None), default=0)
    columns = [_tf_filled(item, column, n) for item, column in zip(spec.read_items, columns)]
    return tuple(map(spec.make_item, zip(*columns)))


def _tf_filled(item: FieldSpec, column: list[Any] | None, n: int) -> list[Any]:
    """An item field's attributes; when its key is absent, n defaults (none when it has no default)."""
    if column is not None:
        return _tf_back(item, column)
    return [] if item.tf_missing is REQUIRED else [item.loaded(item.tf_missing)] * n


def _tf_column(spec: FieldSpec, features: Mapping[str, Any]) -> list[Any] | None:
    """A field's stored values (text decoded; several keys zipped into tuples); None when a key is absent or empty."""
    lists = [features[key.key][1] if key.key in features else [] for key in spec.tf if key.read]
    if not lists or not all(lists):
        return None
    if pa.types.is_string(spec.arrow_type):
        lists = [[value.decode("utf-8") for value in values] for values in lists]
    return list(lists[0]) if len(lists) == 1 else list(zip(*lists))


def _tf_back(spec: FieldSpec, stored: list[Any]) -> list[Any]:
    """Stored values -> attributes: "" is None for an optional field (TF has no null), then ``load``."""
    if spec.optional:
        stored = [None if value == "" else value for value in stored]
    return list(map(spec.load, stored)) if spec.load else stored
