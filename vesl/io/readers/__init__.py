"""Input shards -> ``ImageRecord`` or ``Reject`` (and, for img2dataset output, a ``SourceCheck``),
streamed one record at a time. One module per input format, each a ``Reader``:

| format (``InputFormat``) | module | layout |
|---|---|---|
| webdataset | ``webdataset`` | ``.tar``/``.tar.gz``: ``KEY.jpg`` + ``KEY.txt`` + ``KEY.json`` members |
| parquet | ``parquet`` | img2dataset parquet, Hugging Face ``datasets`` Parquet, any image-bytes table |
| tfrecord | ``tfrecord`` | ``tf.train.Example`` records (img2dataset's tfrecord output) |
| files | ``files`` | a folder of ``KEY.jpg`` + ``KEY.txt`` + ``KEY.json`` (img2dataset's default) |
| manifest | ``manifest`` | JSON lines naming image files |

Which files are shards, and which format each one is, is decided once, when the inputs are listed
(``vesl.io.inputs``); img2dataset's sidecars travel with their shard (``img2dataset``). Paths are
anything fsspec opens (local, gs://, s3://, ...). A shard that cannot be opened or is not its format
yields one shard-level reject (``index`` -1).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from vesl.config import ReadConfig
from vesl.io.readers import base
from vesl.io.readers.base import SHARD_INDEX, Item, Reader, is_transient, make_record, shard_reject
from vesl.io.readers.files import read_files
from vesl.io.readers.img2dataset import with_img2dataset_accounting
from vesl.io.readers.manifest import read_manifest
from vesl.io.readers.parquet import read_parquet
from vesl.io.readers.tfrecord import read_tfrecord
from vesl.io.readers.webdataset import read_webdataset
from vesl.records import InputFormat, InputShard, SourceCheck

__all__ = ["READERS", "SHARD_INDEX", "Item", "format_from_name", "is_transient", "make_record", "read_shard"]

READERS: dict[str, Reader] = {
    InputFormat.WEBDATASET: read_webdataset,
    InputFormat.PARQUET: read_parquet,
    InputFormat.TFRECORD: read_tfrecord,
    InputFormat.FILES: read_files,
    InputFormat.MANIFEST: read_manifest,
}

# File name endings of each format; a folder of ``files`` has no ending and is recognised by content.
SUFFIXES: dict[str, tuple[str, ...]] = {
    InputFormat.WEBDATASET: (".tar", ".tar.gz", ".tgz"),
    InputFormat.PARQUET: (".parquet",),
    InputFormat.TFRECORD: (".tfrecord", ".tfrecord.gz", ".tfrecords"),
    InputFormat.MANIFEST: (".jsonl", ".json"),
}


def format_from_name(path: str) -> str | None:
    name = path.lower().rstrip("/")
    return next((fmt for fmt, suffixes in SUFFIXES.items() if name.endswith(suffixes)), None)


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
    pass that needs only which records there are (webdataset skips image bytes; other formats read all)."""
    attempts = base.RETRY_ATTEMPTS if attempts is None else attempts
    base_delay_s = base.RETRY_BASE_DELAY_S if base_delay_s is None else base_delay_s
    spec = as_input_shard(shard)
    if spec is None:
        yield shard_reject(str(shard), None, "unknown shard format (expected .tar, .parquet, .tfrecord or .jsonl)")
        return
    emitted = 0
    for attempt in range(attempts):
        try:
            for position, item in enumerate(_read_once(spec, cfg, keys_only)):
                if position >= emitted:
                    emitted += 1
                    yield item
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts - 1:
                yield shard_reject(
                    spec.path, exc, f"storage error persisted after {attempts} attempts, {emitted} records read"
                )
                return
            time.sleep(base_delay_s * 2**attempt)


def _read_once(shard: InputShard, cfg: ReadConfig, keys_only: bool = False) -> Iterator[Item | SourceCheck]:
    if keys_only and shard.format == InputFormat.WEBDATASET:
        data = read_webdataset(shard.path, cfg, keys_only=True)
    else:
        data = READERS[shard.format](shard.path, cfg)
    if shard.metadata is None and shard.stats is None:
        return data
    return with_img2dataset_accounting(shard, data)
