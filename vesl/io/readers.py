"""Input shards -> ``ImageRecord`` or ``Reject``, streamed one record at a time.

Formats, chosen by file name:
- ``*.tar`` (``.tar.gz``, ``.tgz``): webdataset, as img2dataset writes it: members ``KEY.jpg|png|webp|...``,
  ``KEY.txt`` (caption) and ``KEY.json`` (metadata, optional, gives ``url``), adjacent in the tar;
- ``*.parquet``: img2dataset's parquet output: ``key``, ``caption``, ``url`` and an image-bytes
  column (``jpg``/``png``/``webp``/``image``/``image_bytes``, or ``ReadConfig.image_column``), read
  one row group batch at a time; rows without image bytes are rejected with img2dataset's
  ``status``/``error_message``;
- ``*.jsonl`` (``.json``): a manifest for a user's own folder: one ``{"key", "image", "caption"}``
  object a line; ``image`` is a path relative to the manifest (or absolute, or a URL fsspec opens).
Paths are anything fsspec opens (local, gs://, s3://, ...). A shard that cannot be opened or is not
the format its name says yields one shard-level reject (``index`` -1); a tar that ends early yields
the records before the damage and one ``truncated_shard`` reject for the record it cut.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.records import ImageRecord, Reason, Reject, Stage

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jxl", "avif", "image")
PARQUET_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "image_bytes")
SHARD_INDEX = -1  # Reject.index of a reject that concerns a whole shard

Item = ImageRecord | Reject


def shard_format(path: str) -> str | None:
    name = path.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz")):
        return "webdataset"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json")):
        return "manifest"
    return None


# Storage errors worth retrying (the connection, not the data): the whole shard is read again and the
# records already passed on are skipped, so a flaky network costs time, never records.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
try:  # gcsfs reports HTTP 5xx/429 as its own error type
    from gcsfs.retry import HttpError as _GcsHttpError

    TRANSIENT_ERRORS += (_GcsHttpError,)
except ImportError:  # pragma: no cover
    pass
RETRY_ATTEMPTS = 4
RETRY_BASE_DELAY_S = 0.5


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return False
    code = getattr(exc, "code", None)
    if code is not None and type(exc).__name__ == "HttpError":
        return code == 429 or 500 <= int(code) < 600
    return isinstance(exc, TRANSIENT_ERRORS)


def read_shard(
    path: str, cfg: ReadConfig, attempts: int = RETRY_ATTEMPTS, base_delay_s: float = RETRY_BASE_DELAY_S
) -> Iterator[Item]:
    """Records and rejects of one shard, in order. Transient storage errors restart the read with
    exponential backoff, skipping what was already yielded; after ``attempts`` the rest of the shard
    is rejected in one ``unreadable_shard`` reject saying so."""
    import time

    emitted = 0
    for attempt in range(attempts):
        try:
            for position, item in enumerate(_read_shard_once(path, cfg)):
                if position >= emitted:
                    emitted += 1
                    yield item
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts - 1:
                yield _shard_reject(
                    path, exc, f"storage error persisted after {attempts} attempts, {emitted} records read"
                )
                return
            time.sleep(base_delay_s * 2**attempt)


def _read_shard_once(path: str, cfg: ReadConfig) -> Iterator[Item]:
    fmt = shard_format(path)
    if fmt is None:
        yield _shard_reject(path, None, "unknown shard format (expected .tar, .parquet or .jsonl)")
        return
    reader = {"webdataset": read_webdataset, "parquet": read_parquet, "manifest": read_manifest}[fmt]
    yield from reader(path, cfg)


def make_record(
    key: str | None,
    shard: str,
    index: int,
    caption: str | bytes | None,
    image: bytes | None,
    url: str | None,
    cfg: ReadConfig,
    missing_image_detail: str = "",
) -> Item:
    """Validate one raw record. The stored caption is stripped of surrounding whitespace; phrase
    spans index the stored caption."""
    key = "" if key is None else str(key)
    if not key:
        return Reject(key, shard, index, Stage.READ, Reason.MISSING_KEY, "record has no key")
    if image is None:
        return Reject(key, shard, index, Stage.READ, Reason.MISSING_IMAGE, missing_image_detail or "no image bytes")
    if caption is None:
        return Reject(key, shard, index, Stage.READ, Reason.MISSING_CAPTION, "record has no caption")
    if isinstance(caption, bytes):
        try:
            caption = caption.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return Reject(
                key,
                shard,
                index,
                Stage.READ,
                Reason.CAPTION_NOT_UTF8,
                f"invalid UTF-8 at byte {exc.start}: {caption[exc.start : exc.start + 4]!r}",
            )
    caption = caption.strip()
    if not caption:
        return Reject(key, shard, index, Stage.READ, Reason.EMPTY_CAPTION, "caption is empty or whitespace")
    if len(caption) > cfg.max_caption_chars:
        return Reject(
            key,
            shard,
            index,
            Stage.READ,
            Reason.CAPTION_TOO_LONG,
            f"{len(caption)} characters > max_caption_chars {cfg.max_caption_chars}",
        )
    return ImageRecord(key=key, shard=shard, index=index, caption=caption, image_bytes=image, url=url)


def _shard_reject(path: str, exc: BaseException | None, context: str = "") -> Reject:
    """One reject for a whole shard (``index`` -1), saying what went wrong."""
    error = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    detail = f"{context} ({error})" if context and error else context or error
    return Reject("", path, SHARD_INDEX, Stage.READ, Reason.UNREADABLE_SHARD, detail)


# -- webdataset tar ------------------------------------------------------------------------------
def _split_member(name: str) -> tuple[str, str]:
    directory, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(directory, stem) if directory else stem, ext.lower()


def _url_from_json(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None  # metadata is optional; a bad one does not cost the image
    url = meta.get("url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) else None


def _group_to_item(key: str, files: dict[str, bytes], path: str, index: int, cfg: ReadConfig) -> Item:
    image = next((files[ext] for ext in IMAGE_EXTENSIONS if ext in files), None)
    detail = f"members found: {', '.join(sorted(files)) or 'none'}"
    caption = files.get("txt")
    if caption is None and image is not None:
        return Reject(key, path, index, Stage.READ, Reason.MISSING_CAPTION, f"no {key}.txt; {detail}")
    return make_record(
        key,
        path,
        index,
        caption,
        image,
        _url_from_json(files.get("json")),
        cfg,
        missing_image_detail=f"no image member; {detail}",
    )


def read_webdataset(path: str, cfg: ReadConfig) -> Iterator[Item]:
    index = 0
    key: str | None = None
    files: dict[str, bytes] = {}
    try:
        with fsspec.open(path, "rb", compression="infer") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = _split_member(member.name)
                if key is not None and member_key != key:
                    yield _group_to_item(key, files, path, index, cfg)
                    index += 1
                    files = {}
                key = member_key
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name} has {len(data)} of {member.size} bytes")
                files[ext] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if is_transient(exc):
            raise
        if key is None and index == 0:
            yield _shard_reject(path, exc)
        else:
            yield Reject(
                key or "",
                path,
                index,
                Stage.READ,
                Reason.TRUNCATED_SHARD,
                f"shard ends inside record {key!r} ({type(exc).__name__}: {exc}); {index} earlier records were read",
            )
        return
    if key is not None:
        yield _group_to_item(key, files, path, index, cfg)


# -- img2dataset parquet --------------------------------------------------------------------------
def read_parquet(path: str, cfg: ReadConfig, batch_rows: int = 256) -> Iterator[Item]:
    import pyarrow.parquet as pq

    index = 0
    try:
        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            image_column = cfg.image_column or next((c for c in PARQUET_IMAGE_COLUMNS if c in names), None)
            wanted = [
                c
                for c in ("key", cfg.caption_column, "url", "status", "error_message", image_column)
                if c and c in names
            ]
            stem = posixpath.basename(path).rsplit(".", 1)[0]
            for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted):
                columns = batch.to_pydict()
                for row in range(batch.num_rows):
                    values = {name: column[row] for name, column in columns.items()}
                    get = values.get
                    key = get("key")
                    if key is None and "key" not in columns:
                        key = f"{stem}:{index}"  # no key column: position in the shard is the key
                    detail = (
                        "no image column (looked for " + ", ".join(PARQUET_IMAGE_COLUMNS) + ")"
                        if image_column is None
                        else f"status={get('status')!r} error={get('error_message')!r}"
                    )
                    yield make_record(
                        key,
                        path,
                        index,
                        get(cfg.caption_column),
                        get(image_column) if image_column else None,
                        get("url"),
                        cfg,
                        missing_image_detail=detail,
                    )
                    index += 1
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on damaged files
        if is_transient(exc):
            raise
        if index == 0:
            yield _shard_reject(path, exc)
        else:
            yield Reject(
                "",
                path,
                index,
                Stage.READ,
                Reason.TRUNCATED_SHARD,
                f"parquet shard unreadable after {index} rows ({type(exc).__name__}: {exc})",
            )


# -- JSONL manifest ------------------------------------------------------------------------------
def _resolve_image_path(manifest: str, image: str) -> str:
    if "://" in image or image.startswith("/"):
        return image
    return posixpath.join(posixpath.dirname(manifest), image)


def read_manifest(path: str, cfg: ReadConfig) -> Iterator[Item]:
    try:
        f = fsspec.open(path, "rb").open()
    except Exception as exc:
        if is_transient(exc):
            raise
        yield _shard_reject(path, exc)
        return
    with f:
        for index, raw_line in enumerate(f):
            if not raw_line.strip():
                continue
            try:
                entry = json.loads(raw_line)
                if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                    raise ValueError('expected an object with an "image" path')
            except ValueError as exc:
                yield Reject("", path, index, Stage.READ, Reason.BAD_MANIFEST_LINE, f"line {index + 1}: {exc}")
                continue
            image_path = _resolve_image_path(path, entry["image"])
            key = entry.get("key") or posixpath.basename(entry["image"]).rsplit(".", 1)[0]
            caption = entry.get("caption")
            if caption is None and isinstance(entry.get("captions"), list) and entry["captions"]:
                caption = entry["captions"][0]
            try:
                with fsspec.open(image_path, "rb") as image_file:
                    image = image_file.read()
            except Exception as exc:
                if is_transient(exc):
                    raise  # the shard is read again
                detail = f"{image_path}: {type(exc).__name__}: {exc}"
                yield Reject(str(key), path, index, Stage.READ, Reason.IMAGE_NOT_FOUND, detail)
                continue
            yield make_record(
                str(key), path, index, caption if isinstance(caption, str) else None, image, entry.get("url"), cfg
            )
