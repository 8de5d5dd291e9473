"""Input shards -> ``ImageRecord`` or ``Reject`` (and, for img2dataset output, a ``SourceCheck``),
streamed one record at a time. One module per input format; each declares its ``InputFormat``
(name, file endings, reader, keys-only reader, img2dataset's name for its data) once, and
``FORMATS`` below registers it: input discovery (``vesl.io.inputs``), the readers, the output
layout's shard ids (``vesl.io.layout``) and the duplicate-key pass all read that declaration.

| format | module | layout |
|---|---|---|
| webdataset | ``webdataset`` | ``.tar``/``.tar.gz``/``.tgz``: ``KEY.jpg`` + ``KEY.txt`` + ``KEY.json`` members |
| tfrecord | ``tfrecord`` | ``tf.train.Example`` records (img2dataset's tfrecord output) |
| files | ``files`` | a folder of ``KEY.jpg`` + ``KEY.txt`` + ``KEY.json`` (img2dataset's default) |
| parquet | ``parquet`` | img2dataset parquet, Hugging Face ``datasets`` Parquet, any image-bytes table |
| manifest | ``manifest`` | JSON lines naming image files |

To add a format: write its module (a ``read(path, cfg)`` generator and a ``FORMAT``) and add it to
``FORMATS``; nothing else changes (docs/architecture.md). Which files are shards, and which format
each one is, is decided once, when the inputs are listed (``vesl.io.inputs``); img2dataset's sidecars
travel with their shard (``img2dataset``). Paths are anything fsspec opens (local, gs://, s3://, ...).
A shard that cannot be opened or is not its format yields one shard-level reject (``index`` -1).
"""

from __future__ import annotations

from collections.abc import Iterator

from vesl.config import ReadConfig
from vesl.io.readers import files, manifest, parquet, tfrecord, webdataset
from vesl.io.readers.base import SHARD_INDEX, GaveUp, InputFormat, Item, Retry, is_transient, make_record, shard_reject
from vesl.io.readers.img2dataset import with_img2dataset_accounting
from vesl.records import InputShard, SourceCheck

__all__ = [
    "FORMATS",
    "SHARD_INDEX",
    "InputFormat",
    "Item",
    "as_input_shard",
    "format_from_name",
    "input_endings",
    "is_transient",
    "make_record",
    "read_shard",
]

# The registry. Order matters for img2dataset folders only: a shard number's data is the first of these
# formats present (img2dataset writes NNNNN.parquet beside every shard, as its metadata).
FORMATS: dict[str, InputFormat] = {
    spec.name: spec for spec in (webdataset.FORMAT, tfrecord.FORMAT, files.FORMAT, parquet.FORMAT, manifest.FORMAT)
}


def input_endings() -> tuple[str, ...]:
    """Every registered file ending, longest first (``.tar.gz`` before ``.tar``)."""
    return tuple(sorted({e for spec in FORMATS.values() for e in spec.endings}, key=len, reverse=True))


def describe_endings() -> str:
    """For messages: ``.tar, .tar.gz, ... or an img2dataset output folder``."""
    searched = [e for spec in FORMATS.values() for e in spec.searched_endings]
    return ", ".join(searched) + " or an img2dataset output folder"


def format_from_name(path: str, searched: bool = False) -> str | None:
    """The format a file's name says (its longest registered ending); ``searched``: only the endings a
    folder search picks up."""
    name = path.rstrip("/")
    found = [(spec.ending_of(name), spec) for spec in FORMATS.values()]
    found = [(e, spec) for e, spec in found if e and (not searched or e in spec.searched_endings)]
    return max(found, key=lambda t: len(t[0]))[1].name if found else None


def as_input_shard(shard: InputShard | str) -> InputShard | None:
    if isinstance(shard, InputShard):
        return shard
    fmt = format_from_name(shard)
    return InputShard(shard, fmt) if fmt else None


def read_shard(
    shard: InputShard | str,
    cfg: ReadConfig,
    attempts: int | None = None,
    base_delay_s: float | None = None,
    keys_only: bool = False,
) -> Iterator[Item | SourceCheck]:
    """Records and rejects of one shard, in order (then its ``SourceCheck`` when it has img2dataset
    sidecars). A bare path is read as the format its name says. Transient storage errors restart the
    read with exponential backoff, skipping what was already yielded; after ``attempts`` the rest of
    the shard is rejected in one ``unreadable_shard`` reject saying so. ``keys_only``: the same items for a
    pass that needs only which records there are (the format's ``read_keys`` where it has one)."""
    spec = as_input_shard(shard)
    if spec is None or spec.format not in FORMATS:
        yield shard_reject(str(shard), None, f"unknown shard format (expected {describe_endings()})")
        return
    items = Retry.default(attempts, base_delay_s).stream(lambda: _read_once(spec, cfg, keys_only))
    for emitted, item in enumerate(items):
        if isinstance(item, GaveUp):
            yield shard_reject(spec.path, item.error, f"{item.detail()}, {emitted} records read")
            return
        yield item


def _read_once(shard: InputShard, cfg: ReadConfig, keys_only: bool = False) -> Iterator[Item | SourceCheck]:
    fmt = FORMATS[shard.format]
    read = fmt.read_keys if keys_only and fmt.read_keys else fmt.read
    data = read(shard.path, cfg)
    if shard.metadata is None and shard.stats is None:
        return data
    return with_img2dataset_accounting(shard, data)
