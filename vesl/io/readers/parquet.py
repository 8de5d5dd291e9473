"""Parquet shards: img2dataset's parquet output (``key``, ``caption``, ``url``, ``status``,
``error_message`` and the image bytes in ``jpg``/``png``/``webp``), Hugging Face ``datasets`` Parquet
(an ``Image`` feature: a ``{bytes, path}`` struct, found through the file's ``huggingface`` schema
metadata or by its type; captions in ``text``), and any table with an image-bytes column and a
caption column. Read one row group at a time, in row batches. Rows without image bytes are rejected with
img2dataset's status and error when it recorded them."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.arrow import as_text, iter_row_batches, row_group_bytes, text_as_bytes
from vesl.io.readers.base import (
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    KEY_COLUMNS,
    MAX_METADATA_BYTES,
    InputFormat,
    Item,
    damaged_shard,
    make_record,
    normalize_key,
    row_group_byte_limit,
)
from vesl.io.readers.img2dataset import failed_download
from vesl.records import Reason, Reject, Stage


def _is_image_struct(field) -> bool:
    import pyarrow as pa

    return pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0


def _hf_image_columns(schema) -> list[str]:
    """Columns that Hugging Face datasets' metadata declares as ``Image`` features."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return []
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return []
    if not isinstance(features, dict):
        return []
    return [name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"]


def pick_columns(schema, cfg: ReadConfig) -> tuple[str | None, str | None, str | None]:
    """(image, caption, key) column names of a parquet schema; None where there is none."""
    names = schema.names
    image = cfg.image_column
    if image is None:
        structs = [f.name for f in schema if _is_image_struct(f)]
        hf = [name for name in _hf_image_columns(schema) if name in names]
        image = (
            next(iter(hf), None) or next((c for c in IMAGE_COLUMNS if c in names), None) or next(iter(structs), None)
        )
    caption = cfg.caption_column or next((c for c in CAPTION_COLUMNS if c in names), None)
    key = next((c for c in KEY_COLUMNS if c in names), None)
    return (image if image in names else None), (caption if caption in names else None), key


def _image_bytes(value) -> tuple[bytes | None, str]:
    """Bytes of an image cell (plain binary, or a datasets ``{bytes, path}`` struct), and why not."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None:
            return None, f"Image struct has no bytes (path {path!r} is not embedded in the file)"
        return data, ""
    return value, ""


def oversized_row_group(pf, row_group, wanted, key_column, limit, path, stem, index) -> Iterator[Reject]:
    """One reject per row of a row group too big to read: keys come from the key column alone when
    that is small, else from the rows' positions."""
    rows = pf.metadata.row_group(row_group).num_rows
    size = row_group_bytes(pf, row_group, wanted)
    keys: list = [None] * rows
    if key_column and row_group_bytes(pf, row_group, [key_column]) <= MAX_METADATA_BYTES * 16:
        keys = []
        for batch in pf.iter_batches(batch_size=1024, row_groups=[row_group], columns=[key_column]):
            keys += text_as_bytes(batch)[key_column]
    detail = (
        f"parquet row group {row_group} holds {size} bytes uncompressed in the columns read, over the "
        f"{limit} that are read at once (4 x the record limit set by --max_image_bytes); rewrite it with "
        "smaller row groups or raise --max_image_bytes"
    )
    for offset, key in enumerate(keys):
        text = normalize_key(key)[0] if key is not None else ""
        position = index + offset
        yield Reject(text or f"{stem}:{position}", path, position, Stage.READ, Reason.ROW_GROUP_TOO_LARGE, detail)


def read_parquet(path: str, cfg: ReadConfig, batch_rows: int = 256) -> Iterator[Item]:
    import pyarrow.parquet as pq

    index = 0
    try:
        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            image_column, caption_column, key_column = pick_columns(schema, cfg)
            wanted = [
                c
                for c in (key_column, caption_column, "url", "status", "error_message", image_column)
                if c and c in schema.names
            ]
            stem = posixpath.basename(path).rsplit(".", 1)[0]
            no_image = "no image column (looked for " + ", ".join(IMAGE_COLUMNS) + " and Image structs)"
            limit = row_group_byte_limit(cfg)
            for row_group, batch in iter_row_batches(pf, wanted, batch_rows, limit):
                if batch is None:
                    for reject in oversized_row_group(pf, row_group, wanted, key_column, limit, path, stem, index):
                        yield reject
                        index += 1
                    continue
                columns = text_as_bytes(batch)
                empty = [None] * batch.num_rows
                keys = columns[key_column] if key_column else empty
                captions = columns[caption_column] if caption_column else empty
                images = columns[image_column] if image_column else empty
                urls = columns.get("url", empty)
                statuses, errors = (map(as_text, columns.get(c, empty)) for c in ("status", "error_message"))
                for key, caption, cell, url, status, error in zip(keys, captions, images, urls, statuses, errors):
                    if key_column is None:
                        key = f"{stem}:{index}"  # no key column: position in the shard is the key
                    image, why = _image_bytes(cell)
                    failed = failed_download(as_text(key), path, index, status, error, url) if image is None else None
                    if failed is not None:
                        yield failed
                    else:
                        detail = no_image if image_column is None else why or f"status={status!r} error={error!r}"
                        yield make_record(key, path, index, caption, image, url, cfg, missing_image_detail=detail)
                    index += 1
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on damaged files
        yield damaged_shard(path, exc, index, f"parquet shard unreadable after {index} rows")


FORMAT = InputFormat(
    "parquet",
    read_parquet,
    endings=(".parquet",),
    img2dataset=r"^(\d+)\.parquet$",  # also beside every other img2dataset shard, as its metadata
)
