"""Types that cross stage boundaries.

Every element that travels between two Beam stages is one of these frozen dataclasses; the output
layouts in ``vesl.schema`` are derived from them. Boxes follow the one stored convention
(``vesl.schema.BOX_CONVENTION``): normalized ``(xmin, ymin, xmax, ymax)`` on the original image as
displayed, i.e. after EXIF orientation is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]


class Stage:
    """Where a record can be rejected (``Reject.stage``)."""

    READ = "read"
    DEDUP = "dedup"
    PHRASES = "phrases"
    CAPTION = "caption"
    DECODE = "decode"
    DETECT = "detect"
    FILTER = "filter"


class Reason:
    """Why a record was rejected (``Reject.reason``). Stable strings: summaries and dashboards key on them."""

    # read
    UNREADABLE_SHARD = "unreadable_shard"
    TRUNCATED_SHARD = "truncated_shard"
    MISSING_IMAGE = "missing_image"
    AMBIGUOUS_IMAGE = "ambiguous_image"  # KEY.jpg and KEY.png (say which with --image_column)
    IMAGE_NOT_FOUND = "image_not_found"
    IMAGE_UNREACHABLE = "image_unreachable"  # storage kept failing (timeouts, 5xx) after the retries
    IMAGE_TOO_LARGE = "image_too_large"  # over --max_image_bytes: never read into memory
    MISSING_CAPTION = "missing_caption"
    EMPTY_CAPTION = "empty_caption"
    CAPTION_NOT_UTF8 = "caption_not_utf8"
    CAPTION_TOO_LONG = "caption_too_long"
    MISSING_KEY = "missing_key"
    BAD_KEY = "bad_key"  # a key that is not text or an integer, or not valid UTF-8
    CAPTION_NOT_TEXT = "caption_not_text"  # a caption that is a number, a list, ...
    BAD_MANIFEST_LINE = "bad_manifest_line"
    UNREADABLE_RECORD = "unreadable_record"  # a TFRecord whose framing is sound but is no tf.train.Example
    ROW_GROUP_TOO_LARGE = "row_group_too_large"  # a Parquet row group too big to read in bounded memory
    # read, from img2dataset's per-shard metadata: URLs it tried that never reached the shard
    FAILED_TO_DOWNLOAD = "failed_to_download"  # img2dataset's status strings, kept as they are
    FAILED_TO_RESIZE = "failed_to_resize"
    MISSING_FROM_SHARD = "missing_from_shard"  # metadata says downloaded, the shard has no such record
    # dedup
    DUPLICATE_KEY = "duplicate_key"
    # phrases
    PARSER_ERROR = "parser_error"
    # decode
    EMPTY_IMAGE = "empty_image"
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT_IMAGE = "corrupt_image"
    TOO_MANY_PIXELS = "too_many_pixels"
    # caption
    CAPTIONER_ERROR = "captioner_error"
    # detect
    INFERENCE_ERROR = "inference_error"
    # filter
    NO_CONFIDENT_BOX = "no_confident_box"
    NO_REGIONS = "no_regions"


@dataclass(frozen=True)
class InputShard:
    """One unit of input: a data file (a folder for ``files``) and, for img2dataset output, its
    sidecars: ``metadata`` (NNNNN.parquet: every URL tried, with status and error) and ``stats``
    (NNNNN_stats.json: img2dataset's counts). ``path`` names the shard everywhere (outputs, rejects)."""

    path: str
    format: str  # the name of a registered input format (``vesl.io.readers.FORMATS``)
    metadata: str | None = None
    stats: str | None = None
    # What the files were when listed (``vesl.io.inputs.input_identity``: size and a content checksum or
    # modification time, of the data and its sidecars): a committed shard whose input's identity changed
    # since is redone on resume. None: not known (a bare path). Not part of a shard's equality: it is the
    # same shard (the same path) whatever its files hold now.
    identity: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class KeptShard:
    """A shard committed by an earlier run that this run keeps as it is: its counts go into the summary
    and its keys into the duplicate-key pass. ``input_gone``: kept though its input no longer exists
    (summary.json's ``input_shards_gone``)."""

    shard_id: str
    counts: dict
    input_gone: bool = False


@dataclass(frozen=True)
class SourceCheck:
    """What a shard held against what its producer says it wrote (img2dataset's metadata and stats).
    ``tried``: URLs accounted for (records in the shard + failed downloads + missing ones);
    ``downloaded``: records in the shard; ``problems``: each disagreement, in words."""

    shard: str
    tried: int
    downloaded: int
    failed: int
    expected: dict[str, int] | None  # img2dataset's _stats.json counts, None when there is none
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Phrase:
    """A detector query taken from the caption.

    ``text`` is the string given to the detector; ``<caption>[char_start:char_end]`` is the span it came
    from, in the record's ``caption`` (alt-text, ``caption_source="alt"``) or ``generated_caption``
    (``"generated"``). For the cloc parser ``text`` is CLOC's space-joined lower-cased tokens, so the two
    can differ in case and spacing.
    """

    text: str
    char_start: int
    char_end: int
    parser: str  # the source: "cloc" (CLOC's grammar) | "spacy" (noun chunk) | "ngram" (OWL-ST)
    caption_source: str = "alt"  # "alt" | "generated": which caption the span indexes


@dataclass(frozen=True)
class ImageRecord:
    """One image-caption pair as read from a shard; later stages fill phrases and size."""

    key: str
    shard: str
    index: int  # position of the record in its shard (0-based), for error messages and ordering
    caption: str
    image_bytes: bytes
    url: str | None = None
    phrases: tuple[Phrase, ...] = ()
    width: int | None = None  # as displayed (after EXIF transpose); set by decode
    height: int | None = None
    image_format: str | None = None  # PIL format name, e.g. "JPEG"; set by decode
    generated_caption: str | None = None  # set by the optional captioning stage


@dataclass(frozen=True)
class Reject:
    """A record that will not be written, with the stage and reason; written to rejects/."""

    key: str
    shard: str
    index: int
    stage: str
    reason: str
    detail: str = ""
    url: str | None = None  # the source URL, where the input names one (failed downloads)

    @classmethod
    def of(cls, record: ImageRecord, stage: str, reason: str, detail: str = "") -> Reject:
        return cls(record.key, record.shard, record.index, stage, reason, detail)

    def to_json_dict(self) -> dict[str, Any]:
        """The rejects file's object; text that is not valid UTF-8 (lone surrogates from hostile
        input) is written with backslash escapes, so the file always encodes."""
        out = {
            "key": _writable(self.key),
            "shard": _writable(self.shard),
            "index": self.index,
            "stage": self.stage,
            "reason": self.reason,
            "detail": _writable(self.detail),
        }
        if self.url is not None:
            out["url"] = _writable(self.url)
        return out


def _writable(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, eq=False)
class DetectorInput:
    """An image ready for the detector. ``image`` is either decoded on the CPU (``size x size x 3``
    uint8, the image resized into the top-left ``content_width x content_height`` corner, the rest
    padding) or a ``vesl.vision.device_decode.EncodedImage`` that the detector decodes and
    letterboxes on its device into the same layout."""

    record: ImageRecord
    image: Any  # np.ndarray | EncodedImage
    content_width: int
    content_height: int


@dataclass(frozen=True, eq=False)
class Detections:
    """Candidate boxes of one image, best first. ``boxes`` is ``(n, 4)`` float32 in the stored
    convention; ``query_index`` points into the image's ``phrases``."""

    boxes: np.ndarray
    scores: np.ndarray
    objectness: np.ndarray
    query_index: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass(frozen=True)
class Region:
    """One region-text pair of the output."""

    phrase: str
    char_start: int
    char_end: int
    parser: str
    query_index: int
    box: Box
    score: float
    objectness: float
    caption_source: str = "alt"  # which caption the phrase's span indexes


@dataclass(frozen=True)
class LabeledImage:
    """An image with its kept regions (best first), ready to write."""

    record: ImageRecord
    regions: tuple[Region, ...]
    region_drops: tuple[tuple[str, int], ...] = field(default=())  # (reason, count) of filtered candidates
