"""The output layouts, owned here and nowhere else: the Parquet (Arrow) schema, the TFRecord
(tf.train.Example) feature keys, the box convention and the schema version.

Writers, readers and training readers convert with the functions below; none restates a column
name or key.

Box convention (both layouts): ``(xmin, ymin, xmax, ymax)`` normalized by the width and height of
the ORIGINAL image as displayed, i.e. after its EXIF orientation is applied; origin at the top-left
corner, x to the right, y down, values in [0, 1]; pixel edges, so ``xmin * width`` is the left edge
in pixels. This is GRIT's convention. Conversions to other conventions (detector input, training
crops) happen only at the edges (``vesl.vision.geometry``).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from vesl import __version__
from vesl.records import ImageRecord, LabeledImage, Phrase, Region

SCHEMA_VERSION = "1.2.0"  # 1.1: generated_caption, caption_source, provenance.captioner; 1.2: TF OD API class keys, image_format lower case
BOX_CONVENTION = "xyxy, normalized to the original image as displayed (EXIF orientation applied), origin top-left"
METADATA_SCHEMA_VERSION = b"vesl.schema_version"
METADATA_CONFIG = b"vesl.config"
METADATA_BOX_CONVENTION = b"vesl.box_convention"


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


# -- Parquet ------------------------------------------------------------------------------------
PHRASE_TYPE = pa.struct(
    [
        pa.field("text", pa.string()),
        pa.field("char_start", pa.int32()),
        pa.field("char_end", pa.int32()),
        pa.field("parser", pa.string()),
        pa.field("caption_source", pa.string()),  # "alt" | "generated"
    ]
)
REGION_TYPE = pa.struct(
    [
        pa.field("phrase", pa.string()),
        pa.field("char_start", pa.int32()),
        pa.field("char_end", pa.int32()),
        pa.field("box", pa.list_(pa.float32(), 4)),  # xmin, ymin, xmax, ymax (BOX_CONVENTION)
        pa.field("score", pa.float32()),
        pa.field("objectness", pa.float32()),
        pa.field("query_index", pa.int32()),
        pa.field("parser", pa.string()),
        pa.field("caption_source", pa.string()),
    ]
)
PROVENANCE_TYPE = pa.struct([pa.field(name, pa.string()) for name in Provenance.__dataclass_fields__])
PARQUET_FIELDS = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("source_shard", pa.string()),
    pa.field("source_index", pa.int64()),
    pa.field("url", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("generated_caption", pa.string()),  # from the captioning stage, when it ran
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("phrases", pa.list_(PHRASE_TYPE)),
    pa.field("regions", pa.list_(REGION_TYPE)),
    pa.field("image_format", pa.string()),
    pa.field("image", pa.binary()),  # the original encoded bytes, when the run writes them
    pa.field("provenance", PROVENANCE_TYPE),
]


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


def hf_card_features(fields: list[pa.Field] | None = None) -> list[dict[str, Any]]:
    """The same features in a dataset card's YAML form (``dataset_info.features``), as ``datasets``
    writes it (``Features._to_yaml_list``). From the card, ``datasets`` casts the Parquet columns to
    these features, which turns the binary ``image`` column into ``datasets.Image``."""

    def simplify(value: dict[str, Any]) -> Any:
        if list(value) == ["dtype"]:
            return value["dtype"]
        if list(value) == ["struct"]:
            return value["struct"]
        return value

    def to_yaml(feature: dict[str, Any]) -> dict[str, Any]:
        kind = feature.get("_type")
        if kind == "List":
            out = {"list": simplify(to_yaml(feature["feature"]))}
            return {**out, "length": feature["length"]} if "length" in feature else out
        if kind == "Value":
            return {"dtype": feature["dtype"]}
        if kind == "Image":
            return {"dtype": "image"}
        return {"struct": [{"name": name, **to_yaml(sub)} for name, sub in feature.items()]}

    fields = PARQUET_FIELDS if fields is None else fields
    return [{"name": f.name, **to_yaml(hf_feature(f.type, image=f.name == "image"))} for f in fields]


def parquet_schema(config_json: str | None = None) -> pa.Schema:
    """The Arrow schema of the region Parquet files, with the version (and config) as metadata."""
    metadata = {
        METADATA_SCHEMA_VERSION: SCHEMA_VERSION.encode(),
        METADATA_BOX_CONVENTION: BOX_CONVENTION.encode(),
    }
    if config_json is not None:
        metadata[METADATA_CONFIG] = config_json.encode()
    return pa.schema(PARQUET_FIELDS, metadata=metadata)


def to_parquet_row(labeled: LabeledImage, provenance: Provenance, include_image: bool) -> dict[str, Any]:
    record = labeled.record
    return {
        "key": record.key,
        "source_shard": record.shard,
        "source_index": record.index,
        "url": record.url,
        "caption": record.caption,
        "generated_caption": record.generated_caption,
        "width": record.width,
        "height": record.height,
        "phrases": [
            {
                "text": p.text,
                "char_start": p.char_start,
                "char_end": p.char_end,
                "parser": p.parser,
                "caption_source": p.caption_source,
            }
            for p in record.phrases
        ],
        "regions": [
            {
                "phrase": r.phrase,
                "char_start": r.char_start,
                "char_end": r.char_end,
                "box": list(r.box),
                "score": r.score,
                "objectness": r.objectness,
                "query_index": r.query_index,
                "parser": r.parser,
                "caption_source": r.caption_source,
            }
            for r in labeled.regions
        ],
        "image_format": stored_format(record.image_format),
        "image": record.image_bytes if include_image else None,
        "provenance": provenance_dict(provenance),
    }


def from_parquet_row(row: dict[str, Any]) -> tuple[LabeledImage, Provenance]:
    record = ImageRecord(
        key=row["key"],
        shard=row["source_shard"],
        index=row["source_index"],
        caption=row["caption"],
        image_bytes=row.get("image") or b"",
        url=row.get("url"),
        phrases=tuple(Phrase(**p) for p in row["phrases"]),
        generated_caption=row.get("generated_caption"),
        width=row["width"],
        height=row["height"],
        image_format=(row.get("image_format") or "").upper() or None,
    )
    regions = tuple(
        Region(
            phrase=r["phrase"],
            char_start=r["char_start"],
            char_end=r["char_end"],
            parser=r["parser"],
            query_index=r["query_index"],
            box=tuple(r["box"]),  # type: ignore[arg-type]
            score=r["score"],
            objectness=r["objectness"],
            caption_source=r.get("caption_source", "alt"),
        )
        for r in row["regions"]
    )
    return LabeledImage(record, regions), Provenance(**row["provenance"])


# -- TFRecord (tf.train.Example, TF Object Detection API style keys) ------------------------------
class TFKeys:
    KEY = "image/key"
    SOURCE_ID = "image/source_id"  # = key (the OD API's id field)
    WIDTH = "image/width"
    HEIGHT = "image/height"
    CAPTION = "image/caption"
    GENERATED_CAPTION = "image/generated_caption"  # "" when the captioning stage did not run
    URL = "image/url"
    ENCODED = "image/encoded"  # only when image bytes are written
    FORMAT = "image/format"
    BBOX_XMIN = "image/object/bbox/xmin"
    BBOX_YMIN = "image/object/bbox/ymin"
    BBOX_XMAX = "image/object/bbox/xmax"
    BBOX_YMAX = "image/object/bbox/ymax"
    # The TF Object Detection API's names: class/text is the region's phrase; class/label is
    # 1 + the phrase's index among the image's queries (per-image labels, 0 is the OD API's background).
    OBJECT_TEXT = "image/object/class/text"
    OBJECT_LABEL = "image/object/class/label"
    OBJECT_SCORE = "image/object/score"
    OBJECT_OBJECTNESS = "image/object/objectness"
    OBJECT_CHAR_START = "image/object/char_start"
    OBJECT_CHAR_END = "image/object/char_end"
    OBJECT_QUERY_INDEX = "image/object/query_index"
    OBJECT_PARSER = "image/object/parser"
    OBJECT_CAPTION_SOURCE = "image/object/caption_source"
    PHRASE_TEXT = "image/phrase/text"
    PHRASE_CHAR_START = "image/phrase/char_start"
    PHRASE_CHAR_END = "image/phrase/char_end"
    PHRASE_PARSER = "image/phrase/parser"
    PHRASE_CAPTION_SOURCE = "image/phrase/caption_source"
    SOURCE_SHARD = "vesl/source_shard"
    SOURCE_INDEX = "vesl/source_index"
    PROVENANCE_PREFIX = "vesl/provenance/"  # + each Provenance field, e.g. vesl/provenance/schema_version


def stored_format(pillow_format: str | None) -> str | None:
    """The encoded format as both outputs store it: lower case ("jpeg", "png"), as the TF Object
    Detection API's ``image/format``; records carry Pillow's name ("JPEG") inside the pipeline."""
    return pillow_format.lower() if pillow_format else None


def _b(values) -> tuple[str, list[bytes]]:
    return "bytes", [v.encode("utf-8") if isinstance(v, str) else v for v in values]


def to_tf_features(
    labeled: LabeledImage, provenance: Provenance, include_image: bool
) -> dict[str, tuple[str, list[Any]]]:
    record, regions, k = labeled.record, labeled.regions, TFKeys
    features: dict[str, tuple[str, list[Any]]] = {
        k.KEY: _b([record.key]),
        k.SOURCE_ID: _b([record.key]),
        k.WIDTH: ("int64", [record.width or 0]),
        k.HEIGHT: ("int64", [record.height or 0]),
        k.CAPTION: _b([record.caption]),
        k.GENERATED_CAPTION: _b([record.generated_caption or ""]),
        k.URL: _b([record.url or ""]),
        k.FORMAT: _b([stored_format(record.image_format) or ""]),
        k.BBOX_XMIN: ("float", [r.box[0] for r in regions]),
        k.BBOX_YMIN: ("float", [r.box[1] for r in regions]),
        k.BBOX_XMAX: ("float", [r.box[2] for r in regions]),
        k.BBOX_YMAX: ("float", [r.box[3] for r in regions]),
        k.OBJECT_TEXT: _b([r.phrase for r in regions]),
        k.OBJECT_LABEL: ("int64", [r.query_index + 1 for r in regions]),
        k.OBJECT_SCORE: ("float", [r.score for r in regions]),
        k.OBJECT_OBJECTNESS: ("float", [r.objectness for r in regions]),
        k.OBJECT_CHAR_START: ("int64", [r.char_start for r in regions]),
        k.OBJECT_CHAR_END: ("int64", [r.char_end for r in regions]),
        k.OBJECT_QUERY_INDEX: ("int64", [r.query_index for r in regions]),
        k.OBJECT_PARSER: _b([r.parser for r in regions]),
        k.OBJECT_CAPTION_SOURCE: _b([r.caption_source for r in regions]),
        k.PHRASE_TEXT: _b([p.text for p in record.phrases]),
        k.PHRASE_CHAR_START: ("int64", [p.char_start for p in record.phrases]),
        k.PHRASE_CHAR_END: ("int64", [p.char_end for p in record.phrases]),
        k.PHRASE_PARSER: _b([p.parser for p in record.phrases]),
        k.PHRASE_CAPTION_SOURCE: _b([p.caption_source for p in record.phrases]),
        k.SOURCE_SHARD: _b([record.shard]),
        k.SOURCE_INDEX: ("int64", [record.index]),
    }
    for name, value in provenance_dict(provenance).items():
        features[k.PROVENANCE_PREFIX + name] = _b([value])
    if include_image:
        features[k.ENCODED] = _b([record.image_bytes])
    return features


def from_tf_features(features: dict[str, tuple[str, list[Any]]]) -> tuple[LabeledImage, Provenance]:
    k = TFKeys

    def values(key: str) -> list[Any]:
        return features[key][1] if key in features else []

    def text(key: str) -> list[str]:
        return [v.decode("utf-8") for v in values(key)]

    def one(key: str, default: Any = None) -> Any:
        v = values(key)
        return v[0] if v else default

    phrases = tuple(
        Phrase(t, s, e, p, c)
        for t, s, e, p, c in zip(
            text(k.PHRASE_TEXT),
            values(k.PHRASE_CHAR_START),
            values(k.PHRASE_CHAR_END),
            text(k.PHRASE_PARSER),
            text(k.PHRASE_CAPTION_SOURCE) or ["alt"] * len(values(k.PHRASE_TEXT)),
        )
    )
    fmt = one(k.FORMAT, b"").decode()
    record = ImageRecord(
        key=one(k.KEY).decode(),
        shard=one(k.SOURCE_SHARD, b"").decode(),
        index=one(k.SOURCE_INDEX, -1),
        caption=one(k.CAPTION, b"").decode(),
        generated_caption=one(k.GENERATED_CAPTION, b"").decode() or None,
        image_bytes=one(k.ENCODED, b""),
        url=one(k.URL, b"").decode() or None,
        phrases=phrases,
        width=one(k.WIDTH),
        height=one(k.HEIGHT),
        image_format=fmt.upper() or None,
    )
    sources = text(k.OBJECT_CAPTION_SOURCE) or ["alt"] * len(values(k.OBJECT_TEXT))
    regions = tuple(
        Region(phrase, cs, ce, parser, q, (x0, y0, x1, y1), score, obj, src)
        for phrase, cs, ce, parser, q, x0, y0, x1, y1, score, obj, src in zip(
            text(k.OBJECT_TEXT),
            values(k.OBJECT_CHAR_START),
            values(k.OBJECT_CHAR_END),
            text(k.OBJECT_PARSER),
            values(k.OBJECT_QUERY_INDEX),
            values(k.BBOX_XMIN),
            values(k.BBOX_YMIN),
            values(k.BBOX_XMAX),
            values(k.BBOX_YMAX),
            values(k.OBJECT_SCORE),
            values(k.OBJECT_OBJECTNESS),
            sources,
        )
    )
    provenance = Provenance(
        **{name: one(k.PROVENANCE_PREFIX + name, b"").decode() for name in Provenance.__dataclass_fields__}
    )
    return LabeledImage(record, regions), provenance
