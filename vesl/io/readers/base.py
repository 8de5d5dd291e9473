"""What every format reader shares: the item type, record validation, shard-level rejects, the
grouping of ``KEY.ext`` files into one record (webdataset members and ``files`` folders alike), and
which storage errors are worth a retry."""

from __future__ import annotations

import json
import math
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from vesl.config import ReadConfig
from vesl.records import ImageRecord, Reason, Reject, Stage

# Column (feature) names a table-like input (Parquet rows, TFRecord Examples) may hold its parts in,
# tried in this order when ``--image_column`` / ``--caption_column`` do not say.
IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "image_bytes", "img")
CAPTION_COLUMNS = ("caption", "txt", "text")
KEY_COLUMNS = ("key", "id")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jxl", "avif", "image")
SHARD_INDEX = -1  # Reject.index of a reject that concerns a whole shard
# Caps on what is read into memory, checked before the bytes are read (sizes from tar headers,
# listings, TFRecord length fields): an image is capped by ReadConfig.max_image_bytes, a caption by
# max_caption_chars (at most 4 UTF-8 bytes a character, plus a BOM), metadata (KEY.json) by this.
MAX_METADATA_BYTES = 1024 * 1024
RETRY_ATTEMPTS = 4
RETRY_BASE_DELAY_S = 0.5

Item = ImageRecord | Reject
# A format reader: (path, config) -> the shard's records and rejects, in a stable order.
Reader = Callable[[str, ReadConfig], Iterator[Item]]


@dataclass(frozen=True)
class InputFormat:
    """One input layout VESL reads, declared once (in its reader's module) and registered in
    ``vesl.io.readers.FORMATS``: input discovery, the readers, the output layout's shard ids and the
    duplicate-key pass all ask this declaration.

    ``read_keys``: a cheaper pass giving the same records and rejects in the same order, for a pass
    that needs only which records there are (image bytes may be left empty); None: ``read`` is used.
    ``img2dataset``: the regular expression of img2dataset's data file (or folder) name for this
    format, group 1 the shard number; None when img2dataset does not write it. ``folder``: a shard is
    a folder (found by content, never by name). ``searched``: the endings a folder search picks up,
    when not all of ``endings`` (a ``.json`` file is too often something else to be taken for a
    manifest unasked)."""

    name: str
    read: Reader
    endings: tuple[str, ...] = ()
    read_keys: Reader | None = None
    img2dataset: str | None = None
    folder: bool = False
    searched: tuple[str, ...] | None = None

    def ending_of(self, name: str) -> str | None:
        """The longest of this format's endings that ``name`` ends with (case-insensitive), or None."""
        lower = name.lower()
        return max((e for e in self.endings if lower.endswith(e)), key=len, default=None)

    @property
    def searched_endings(self) -> tuple[str, ...]:
        return self.endings if self.searched is None else self.searched


# Storage errors worth retrying (the connection, not the data): the whole shard is read again and the
# records already passed on are skipped, so a flaky network costs time, never records.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
try:  # gcsfs reports HTTP 5xx/429 as its own error type
    from gcsfs.retry import HttpError as _GcsHttpError

    TRANSIENT_ERRORS += (_GcsHttpError,)
except ImportError:  # pragma: no cover
    pass


def member_limit(ext: str, cfg: ReadConfig) -> int:
    """The most bytes a ``KEY.<ext>`` part may have before it is rejected unread."""
    if ext in IMAGE_EXTENSIONS:
        return cfg.max_image_bytes
    if ext == "txt":
        return caption_byte_limit(cfg)
    return MAX_METADATA_BYTES


def caption_byte_limit(cfg: ReadConfig) -> int:
    return 4 * cfg.max_caption_chars + 3


def record_byte_limit(cfg: ReadConfig) -> int:
    """A whole record (a TFRecord Example): image, caption and metadata."""
    return cfg.max_image_bytes + caption_byte_limit(cfg) + MAX_METADATA_BYTES


def row_group_byte_limit(cfg: ReadConfig) -> int:
    """The most uncompressed bytes VESL reads of one Parquet row group (the columns it uses): pyarrow
    holds a whole column chunk, about twice its size at peak, so this bounds a reader's memory."""
    return 4 * record_byte_limit(cfg)


def iter_capped_lines(f, limit: int, chunk: int = 1 << 20) -> Iterator[bytes | int]:
    """The lines of binary file ``f`` (newline kept), each at most ``limit`` bytes; a longer line
    comes as its length (an int) and is never held whole. Memory: ``limit + chunk`` bytes. (Plain
    iteration reads a line whole, and a 1 GiB file without a newline is one line; fsspec's remote
    files have no ``readline(size)``.)"""
    buffer, skipped = b"", 0  # skipped > 0: inside a line over the limit, that many bytes seen
    while True:
        block = f.read(chunk)
        if not block:
            if skipped:
                yield skipped + len(buffer)
            elif buffer:
                yield buffer if len(buffer) <= limit else len(buffer)
            return
        buffer += block
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            size = end + 1 - start
            if skipped:
                yield skipped + size
                skipped = 0
            elif size > limit:
                yield size
            else:
                yield buffer[start : end + 1]
            start = end + 1
        buffer = buffer[start:]
        if skipped or len(buffer) > limit:
            skipped, buffer = skipped + len(buffer), b""


# The most bytes JSON may spend on one character of text: json.dumps (ensure_ascii, its default) writes
# a character outside the Basic Multilingual Plane as a surrogate pair of \u escapes.
JSON_CHAR_BYTES = 12


def manifest_line_limit(cfg: ReadConfig) -> int:
    """A manifest line holds a caption and a little metadata (key, image path, url). The caption is
    counted as JSON may escape it, so a caption at ``max_caption_chars`` fits its line as it fits
    every other input (at 4 bytes a character it was refused as ``bad_manifest_line``)."""
    return JSON_CHAR_BYTES * cfg.max_caption_chars + MAX_METADATA_BYTES


T = TypeVar("T")


@dataclass(frozen=True)
class GaveUp:
    """What a ``Retry`` ends with when storage kept failing: the last error and the attempts made."""

    error: BaseException
    attempts: int

    def detail(self) -> str:
        return f"storage error persisted after {self.attempts} attempts"


@dataclass(frozen=True)
class Retry:
    """Transient storage errors (``is_transient``) retried with exponential backoff, for a whole shard
    (``stream``) and for one record's file (``call``) alike; any other error propagates at once.
    Defaults come from ``RETRY_ATTEMPTS`` / ``RETRY_BASE_DELAY_S`` when the Retry is made."""

    attempts: int
    base_delay_s: float

    @classmethod
    def default(cls, attempts: int | None = None, base_delay_s: float | None = None) -> Retry:
        return cls(
            RETRY_ATTEMPTS if attempts is None else attempts,
            RETRY_BASE_DELAY_S if base_delay_s is None else base_delay_s,
        )

    def _attempts(self) -> Iterator[int]:
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.base_delay_s * 2 ** (attempt - 1))
            yield attempt

    def call(self, fetch: Callable[[], T]) -> T | GaveUp:
        """``fetch()``, retried; a ``GaveUp`` once the attempts are spent."""
        for attempt in self._attempts():
            try:
                return fetch()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.attempts - 1:
                    return GaveUp(exc, self.attempts)
        raise AssertionError("unreachable")

    def stream(self, items: Callable[[], Iterator[T]]) -> Iterator[T | GaveUp]:
        """The items of ``items()``, which is started again after a transient error, passing on only
        what was not passed on yet (a flaky network costs time, never records); a ``GaveUp`` last
        when the attempts are spent."""
        emitted = 0
        for attempt in self._attempts():
            try:
                for position, item in enumerate(items()):
                    if position >= emitted:
                        emitted += 1
                        yield item
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt == self.attempts - 1:
                    yield GaveUp(exc, self.attempts)


def fetch_part(fetch: Callable[[], T], key: str, shard: str, index: int, name: str) -> T | Reject:
    """One file of a record (a ``files`` member, a manifest's image), read with retries: its value, or
    the record's reject when storage kept failing (``image_unreachable``) or the file is not there
    (``image_not_found``), so a bad file costs its record only."""
    try:
        value = Retry.default().call(fetch)
    except Exception as exc:
        return Reject(key, shard, index, Stage.READ, Reason.IMAGE_NOT_FOUND, f"{name}: {type(exc).__name__}: {exc}")
    if isinstance(value, GaveUp):
        detail = f"{name}: {value.detail()} ({type(value.error).__name__}: {value.error})"
        return Reject(key, shard, index, Stage.READ, Reason.IMAGE_UNREACHABLE, detail)
    return value


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return False
    code = getattr(exc, "code", None)
    if code is not None and type(exc).__name__ == "HttpError":
        return code == 429 or 500 <= int(code) < 600
    return isinstance(exc, TRANSIENT_ERRORS)


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _surrogate_at(text: str) -> int | None:
    """Position of the first lone surrogate (text that cannot be written as UTF-8), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def normalize_key(key) -> tuple[str, str]:
    """(key as text, "") or ("", why it is not a key). Integers (and integral floats, as pandas stores
    an integer column with gaps) become their decimal text; bytes must be UTF-8."""
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError as exc:
            return "", f"key is not valid UTF-8 at byte {exc.start}"
    if isinstance(key, bool) or not isinstance(key, str | int | float):
        return "", f"key is a {type(key).__name__}, not text or an integer"
    if isinstance(key, float):
        if not key.is_integer():
            return "", f"key is a non-integral number ({key!r})"
        key = int(key)
    key = str(key)
    if (at := _surrogate_at(key)) is not None:
        return "", f"key holds a lone surrogate at character {at} (not valid UTF-8)"
    return key, ""


def normalize_url(url) -> str | None:
    """A URL is kept only as text that is valid UTF-8 (numbers, NaN and the like are dropped)."""
    if isinstance(url, bytes):
        url = url.decode("utf-8", "replace")
    return url if isinstance(url, str) and url and _surrogate_at(url) is None else None


def make_record(
    key,
    shard: str,
    index: int,
    caption,
    image,
    url,
    cfg: ReadConfig,
    missing_image_detail: str = "",
) -> Item:
    """Validate one raw record, whatever the types its source gave (documented coercions: integer keys
    become text, a URL that is not text is dropped; everything else that is off is a reject with a
    reason). The stored caption is stripped of surrounding whitespace; phrase spans index it. Rejects
    carry the record's URL when the input names one."""
    url = normalize_url(url)
    missing_key = key is None or _is_nan(key) or key == ""
    key, bad_key = ("", "") if missing_key else normalize_key(key)

    def reject(reason: str, detail: str) -> Reject:
        return Reject(key, shard, index, Stage.READ, reason, detail, url)

    if missing_key:
        return reject(Reason.MISSING_KEY, "record has no key")
    if bad_key:
        return reject(Reason.BAD_KEY, bad_key)
    if image is None:
        return reject(Reason.MISSING_IMAGE, missing_image_detail or "no image bytes")
    if isinstance(image, bytearray | memoryview):
        image = bytes(image)
    if not isinstance(image, bytes):
        return reject(Reason.MISSING_IMAGE, f"the image is a {type(image).__name__}, not bytes")
    if len(image) > cfg.max_image_bytes:
        return reject(Reason.IMAGE_TOO_LARGE, f"{len(image)} bytes > max_image_bytes {cfg.max_image_bytes}")
    if caption is None or _is_nan(caption):
        return reject(Reason.MISSING_CAPTION, "record has no caption")
    if isinstance(caption, bytes):
        try:
            caption = caption.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return reject(
                Reason.CAPTION_NOT_UTF8, f"invalid UTF-8 at byte {exc.start}: {caption[exc.start : exc.start + 4]!r}"
            )
    if not isinstance(caption, str):
        return reject(Reason.CAPTION_NOT_TEXT, f"caption is a {type(caption).__name__}, not text")
    if (at := _surrogate_at(caption)) is not None:
        return reject(Reason.CAPTION_NOT_UTF8, f"caption holds a lone surrogate at character {at}")
    caption = caption.strip()
    if not caption:
        return reject(Reason.EMPTY_CAPTION, "caption is empty or whitespace")
    if len(caption) > cfg.max_caption_chars:
        return reject(Reason.CAPTION_TOO_LONG, f"{len(caption)} characters > max_caption_chars {cfg.max_caption_chars}")
    return ImageRecord(key=key, shard=shard, index=index, caption=caption, image_bytes=image, url=url)


def shard_reject(path: str, exc: BaseException | None, context: str = "") -> Reject:
    """One reject for a whole shard (``index`` -1), saying what went wrong."""
    error = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    detail = f"{context} ({error})" if context and error else context or error
    return Reject("", path, SHARD_INDEX, Stage.READ, Reason.UNREADABLE_SHARD, detail)


def damaged_shard(path: str, exc: BaseException, index: int, what: str, key: str = "", started: bool = False) -> Reject:
    """The reject for a shard that broke while being read: re-raises a transient error (the shard is
    read again); a shard broken before its first record is unreadable as a whole (``index`` -1),
    one that breaks later is truncated at record ``index`` (the records before it were read)."""
    if is_transient(exc):
        raise exc
    if index == 0 and not started:
        return shard_reject(path, exc)
    detail = f"{what} ({type(exc).__name__}: {exc}); {index} earlier records were read"
    return Reject(key, path, index, Stage.READ, Reason.TRUNCATED_SHARD, detail)


def split_name(name: str) -> tuple[str, str]:
    """``dir/KEY.ext.ext2`` -> (``dir/KEY``, ``ext.ext2``): webdataset's rule, the key ends at the first dot."""
    directory, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(directory, stem) if directory else stem, ext.lower()


def url_from_json(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None  # metadata is optional; a bad one does not cost the image
    url = meta.get("url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) else None


def group_to_item(
    key: str, files: dict[str, bytes], path: str, index: int, cfg: ReadConfig, oversized: dict[str, int] | None = None
) -> Item:
    """One record from its ``KEY.<ext>`` parts: an image, ``txt`` (caption), ``json`` (metadata).
    ``oversized``: parts over their cap (ext -> size), left unread."""
    oversized = oversized or {}
    images = [ext for ext in IMAGE_EXTENSIONS if ext in files or ext in oversized]
    if cfg.image_column:  # the user named the member to use (webdataset/files: its extension)
        images = [ext for ext in images if ext == cfg.image_column.lower()]
    elif len(images) > 1 and not normalize_key(key)[1]:
        detail = f"{key} has {len(images)} images ({', '.join(images)}); --image_column names the one to use"
        return Reject(key, path, index, Stage.READ, Reason.AMBIGUOUS_IMAGE, detail, url_from_json(files.get("json")))
    image = files.get(images[0]) if images else None
    url = url_from_json(files.get("json"))
    detail = f"members found: {', '.join(sorted({*files, *oversized})) or 'none'}"
    if not normalize_key(key)[1]:  # a bad key is said first (by make_record)
        big_image = next((ext for ext in images if ext in oversized), None)
        if image is None and big_image:
            size = oversized[big_image]
            text = f"{key}.{big_image}: {size} bytes > max_image_bytes {cfg.max_image_bytes} (not read)"
            return Reject(key, path, index, Stage.READ, Reason.IMAGE_TOO_LARGE, text, url)
        if "txt" in oversized:
            size = oversized["txt"]
            text = f"{key}.txt: {size} bytes > {caption_byte_limit(cfg)} (max_caption_chars {cfg.max_caption_chars}; not read)"
            return Reject(key, path, index, Stage.READ, Reason.CAPTION_TOO_LONG, text, url)
    caption = files.get("txt")
    if caption is None and image is not None and not normalize_key(key)[1]:
        return Reject(key, path, index, Stage.READ, Reason.MISSING_CAPTION, f"no {key}.txt; {detail}", url)
    return make_record(key, path, index, caption, image, url, cfg, missing_image_detail=f"no image member; {detail}")
