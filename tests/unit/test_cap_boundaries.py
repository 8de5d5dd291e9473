"""Every byte and size cap, met exactly and missed by one, on every reader path it applies on; and the
detector's defaults, declared once (in ``vesl.config``).

Why: the older tests (test_read_limits, test_hostile_records, test_readers, test_decode) try sizes far
over the caps, so a cap that drifted (say to 4x) or an off-by-one (``>`` turned ``>=``) would pass them.
Here each cap is met exactly (the part is accepted: read, or passed on) and missed by one byte,
character or pixel (rejected with its reason). Every check in the readers is "reject when size > cap",
so "at the cap" is a part of exactly the cap's size. Sizes come from the documented formulas
(``documented_*`` below), never from the functions under test, so a drifted formula fails here too.
Caps are set small through ``ReadConfig`` / ``DetectConfig`` so files stay tiny; the fixed metadata
allowance (1 MiB) is used as it is.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import inspect
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import PHOTOS
from tests.images import encode, rgba_png
from vesl.config import DetectConfig, ReadConfig
from vesl.io.readers import Item, base, read_shard, webdataset
from vesl.io.shard_writers import RawSample, write_img2dataset_parquet, write_webdataset
from vesl.io.tfexample import encode_example
from vesl.io.tfrecord import frame_record
from vesl.models.torch_backend import TorchOptions
from vesl.records import ImageRecord, InputShard, Reason
from vesl.vision.decode import ImageDecodeError, decode_image, probe_image
from vesl.vision.prepare import prepare_image

ROCKET = (PHOTOS / "rocket.jpg").read_bytes()  # 3,621 bytes
MAX_IMAGE_BYTES = 4096  # over the photo: an image at the cap is the real JPEG with trailing zeros
MAX_CAPTION_CHARS = 10
CFG = ReadConfig(max_image_bytes=MAX_IMAGE_BYTES, max_caption_chars=MAX_CAPTION_CHARS)
EMOJI = "\U0001f680"  # one character, four UTF-8 bytes: the most a character takes
BOM = "\ufeff".encode()  # 3 bytes, dropped when a caption is decoded ("utf-8-sig")
METADATA_BYTES = 1024 * 1024  # README: KEY.json's cap, and the metadata allowance of record caps


# -- the documented caps ------------------------------------------------------------------------
def documented_caption_bytes(cfg: ReadConfig) -> int:
    """A caption part (tar member, ``files`` file): 4 UTF-8 bytes a character plus a BOM."""
    return 4 * cfg.max_caption_chars + 3


def documented_record_bytes(cfg: ReadConfig) -> int:
    """A TFRecord record: the image cap plus a caption part's cap plus the metadata allowance."""
    return cfg.max_image_bytes + documented_caption_bytes(cfg) + METADATA_BYTES


def documented_row_group_bytes(cfg: ReadConfig) -> int:
    """A Parquet row group (uncompressed, columns read): 4 x the record cap."""
    return 4 * documented_record_bytes(cfg)


def documented_manifest_line_bytes(cfg: ReadConfig) -> int:
    """A manifest line, its newline included: a caption at the character cap however JSON escapes it
    (12 bytes a character: a surrogate pair of \\u escapes) plus the metadata allowance."""
    return 12 * cfg.max_caption_chars + METADATA_BYTES


def test_the_cap_formulas_and_defaults_are_the_documented_ones():
    """The behaviour tests below size their parts from these formulas; here the code is held to them
    (and the README's defaults), so a limit that drifts fails even where no file is read."""
    assert base.MAX_METADATA_BYTES == METADATA_BYTES
    for cfg in (CFG, ReadConfig()):
        assert base.caption_byte_limit(cfg) == documented_caption_bytes(cfg)
        assert base.record_byte_limit(cfg) == documented_record_bytes(cfg)
        assert base.row_group_byte_limit(cfg) == documented_row_group_bytes(cfg)
        assert base.manifest_line_limit(cfg) == documented_manifest_line_bytes(cfg)
    assert (ReadConfig().max_image_bytes, ReadConfig().max_caption_chars) == (64 * 1024 * 1024, 10_000)
    assert DetectConfig.max_image_pixels == 89_478_485


# -- building shards: one way per reader path ---------------------------------------------------
def image_of(size: int, salt: int = 0) -> bytes:
    """``size`` bytes of image: the photo's JPEG, then ``salt`` bytes (readers check sizes, never the
    content; the salt keeps images distinct where a Parquet dictionary would fold equal ones)."""
    assert size >= len(ROCKET)
    return ROCKET + bytes([salt]) * (size - len(ROCKET))


def _tar(folder: Path, samples: list[RawSample]) -> Path:
    return Path(write_webdataset(str(folder / "shard.tar"), samples))


def lean_tar(folder: Path, samples: list[RawSample]) -> InputShard:
    """A plain tar, walked by ``TarStream`` (seeking over what it skips)."""
    return InputShard(str(_tar(folder, samples)), "webdataset")


def gzipped_tar(folder: Path, samples: list[RawSample]) -> InputShard:
    """A ``.tar.gz``: ``TarStream`` over a gunzipping stream."""
    gz = folder / "shard.tar.gz"
    gz.write_bytes(gzip.compress(_tar(folder, samples).read_bytes(), compresslevel=1))
    return InputShard(str(gz), "webdataset")


SPARSE_KEY = "0sparse"


def tarfile_tar(folder: Path, samples: list[RawSample]) -> InputShard:
    """A tar led by a GNU sparse member: ``TarStream`` gives the shard up before passing anything on,
    so Python's tarfile reads every member (``webdataset._tarfile_members``)."""
    tar = _tar(folder, samples)
    sparse = tarfile.TarInfo(f"{SPARSE_KEY}.bin")
    sparse.type = tarfile.GNUTYPE_SPARSE
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.GNU_FORMAT) as t:
        t.addfile(sparse)
    tar.write_bytes(head.getvalue()[: tarfile.BLOCKSIZE] + tar.read_bytes())
    return InputShard(str(tar), "webdataset")


def files_folder(folder: Path, samples: list[RawSample]) -> InputShard:
    """img2dataset's ``files`` layout: the members ``write_webdataset`` writes, as files of a folder."""
    shard = folder / "00000"
    with tarfile.open(_tar(folder, samples)) as t:
        t.extractall(shard, filter="data")
    return InputShard(str(shard), "files")


def manifest(folder: Path, samples: list[RawSample]) -> InputShard:
    """A JSON-lines manifest naming one image file a line."""
    lines = []
    for s in samples:
        (folder / f"{s.key}.{s.image_ext}").write_bytes(s.image)
        entry = {"key": s.key, "image": f"{s.key}.{s.image_ext}", "caption": s.caption, "url": s.meta.get("url")}
        lines.append(json.dumps(entry))
    path = folder / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return InputShard(str(path), "manifest")


def img2dataset_parquet(folder: Path, samples: list[RawSample]) -> InputShard:
    """img2dataset's parquet output: image bytes in ``jpg`` (one row group)."""
    return InputShard(write_img2dataset_parquet(str(folder / "p.parquet"), samples), "parquet")


HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def hf_parquet(folder: Path, samples: list[RawSample]) -> InputShard:
    """Hugging Face ``datasets`` Parquet: the image as an ``Image`` struct (``{bytes, path}``)."""
    table = pa.table(
        {
            "key": [s.key for s in samples],
            "image": pa.array([{"bytes": s.image, "path": f"{s.key}.jpg"} for s in samples], HF_IMAGE),
            "text": [s.caption for s in samples],
        }
    )
    path = folder / "hf.parquet"
    pq.write_table(table, path)
    return InputShard(str(path), "parquet")


def tf_example(sample: RawSample) -> bytes:
    """img2dataset's tfrecord Example: bytes features key, jpg, txt, url and its metadata columns."""
    caption = sample.caption.encode() if isinstance(sample.caption, str) else sample.caption
    features = {"key": ("bytes", [sample.key.encode()]), "jpg": ("bytes", [sample.image]), "txt": ("bytes", [caption])}
    features.update({name: ("bytes", [str(value).encode()]) for name, value in sample.meta.items()})
    return encode_example(features)


def tfrecord(folder: Path, samples: list[RawSample]) -> InputShard:
    path = folder / "t.tfrecord"
    path.write_bytes(b"".join(frame_record(tf_example(s)) for s in samples))
    return InputShard(str(path), "tfrecord")


def gzipped_tfrecord(folder: Path, samples: list[RawSample]) -> InputShard:
    path = folder / "t.tfrecord.gz"
    path.write_bytes(gzip.compress(b"".join(frame_record(tf_example(s)) for s in samples), compresslevel=1))
    return InputShard(str(path), "tfrecord")


@dataclass(frozen=True)
class ReaderPath:
    """One way a record's parts reach ``make_record``: a shard layout and how it is read."""

    name: str
    write: Callable[[Path, list[RawSample]], InputShard]
    keys_only: bool = False  # the duplicate-key pass: image and metadata members skipped unread
    refuses_unread: bool = True  # an image over its cap is refused by its size, never read whole

    def read(self, folder: Path, samples: list[RawSample], cfg: ReadConfig = CFG) -> dict[str, Item]:
        """The shard's items by key (the sparse member that routes a tar to tarfile left out)."""
        items = read_shard(self.write(folder, samples), cfg, keys_only=self.keys_only)
        return {item.key: item for item in items if item.key != SPARSE_KEY}


TAR_PATHS = [
    ReaderPath("tar-lean", lean_tar),
    ReaderPath("tar.gz-lean", gzipped_tar),
    ReaderPath("tar-tarfile", tarfile_tar),
    ReaderPath("tar-keys-only", lean_tar, keys_only=True),
]
UNREAD_PART_PATHS = [*TAR_PATHS, ReaderPath("files", files_folder)]  # parts capped by their size, unread
METADATA_PATHS = [p for p in UNREAD_PART_PATHS if not p.keys_only]  # the keys-only pass never reads KEY.json
ALL_PATHS = [
    *UNREAD_PART_PATHS,
    ReaderPath("manifest", manifest),
    ReaderPath("parquet-img2dataset", img2dataset_parquet, refuses_unread=False),  # cells come with the row group
    ReaderPath("parquet-hf-image-struct", hf_parquet, refuses_unread=False),
    ReaderPath("tfrecord", tfrecord, refuses_unread=False),  # features come with their record
    ReaderPath("tfrecord.gz", gzipped_tfrecord, refuses_unread=False),
]


def ids(paths: list[ReaderPath]) -> list[str]:
    return [p.name for p in paths]


def outcome(item) -> str:
    return "record" if isinstance(item, ImageRecord) else item.reason


def test_a_tar_led_by_a_sparse_member_is_read_by_tarfile(tmp_path, monkeypatch):
    """The ``tar-tarfile`` path really is tarfile's: every record comes from its member walk."""
    walked: list[str] = []
    tarfile_members = webdataset._tarfile_members

    def spying(f):
        for member in tarfile_members(f):
            walked.append(member[0])
            yield member

    monkeypatch.setattr(webdataset, "_tarfile_members", spying)
    got = ReaderPath("tar-tarfile", tarfile_tar).read(tmp_path, [RawSample("a", image_of(4000), "a rocket")])
    assert outcome(got["a"]) == "record" and walked == [f"{SPARSE_KEY}.bin", "a.jpg", "a.txt", "a.json"]


# -- max_image_bytes ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ALL_PATHS, ids=ids(ALL_PATHS))
def test_an_image_of_exactly_max_image_bytes_is_read_and_one_byte_more_is_image_too_large(tmp_path, path):
    """``len(image) > max_image_bytes`` rejects: tar members and ``files`` by their size and manifest
    images after reading one byte past the cap, all unread (the detail says so); Parquet cells and
    TFRecord features once read with their row group or record."""
    samples = [
        RawSample("at", image_of(MAX_IMAGE_BYTES), "a rocket"),
        RawSample("past", image_of(MAX_IMAGE_BYTES + 1), "a rocket"),
    ]
    got = path.read(tmp_path, samples)
    assert outcome(got["at"]) == "record"
    assert got["at"].image_bytes == (b"" if path.keys_only else samples[0].image)
    assert outcome(got["past"]) == Reason.IMAGE_TOO_LARGE
    assert f"max_image_bytes {MAX_IMAGE_BYTES}" in got["past"].detail
    assert ("(not read)" in got["past"].detail) == path.refuses_unread


# -- max_caption_chars, as characters ------------------------------------------------------------
@pytest.mark.parametrize("path", ALL_PATHS, ids=ids(ALL_PATHS))
def test_a_caption_of_exactly_max_caption_chars_is_read_and_one_character_more_is_caption_too_long(tmp_path, path):
    """Characters after stripping surrounding whitespace are counted, not bytes: the caption at the cap
    is 10 four-byte characters; the one past it is 11 ASCII characters, far under the byte cap of a
    caption part, so it is the character count that rejects it."""
    at_cap = f" {EMOJI * MAX_CAPTION_CHARS}\n"
    samples = [
        RawSample("at", image_of(4000), at_cap),
        RawSample("past", image_of(4000), "x" * (MAX_CAPTION_CHARS + 1)),
    ]
    got = path.read(tmp_path, samples)
    assert outcome(got["at"]) == "record" and got["at"].caption == EMOJI * MAX_CAPTION_CHARS
    assert outcome(got["past"]) == Reason.CAPTION_TOO_LONG
    assert f"{MAX_CAPTION_CHARS + 1} characters > max_caption_chars {MAX_CAPTION_CHARS}" in got["past"].detail


# -- max_caption_chars, as the bytes of a caption part ----------------------------------------------
@pytest.mark.parametrize("path", UNREAD_PART_PATHS, ids=ids(UNREAD_PART_PATHS))
def test_a_caption_part_of_exactly_the_byte_cap_is_read_and_one_byte_more_is_caption_too_long_unread(tmp_path, path):
    """A ``KEY.txt`` of ``4 x max_caption_chars + 3`` bytes (a BOM and 10 four-byte characters: the
    largest caption at the cap) is read; one byte more is rejected by its size alone. That byte is a
    trailing space, so read, the caption would still be 10 characters: the byte cap decides."""
    at_cap = BOM + (EMOJI * MAX_CAPTION_CHARS).encode()
    assert len(at_cap) == documented_caption_bytes(CFG)
    samples = [RawSample("at", image_of(4000), at_cap), RawSample("past", image_of(4000), at_cap + b" ")]
    got = path.read(tmp_path, samples)
    assert outcome(got["at"]) == "record" and got["at"].caption == EMOJI * MAX_CAPTION_CHARS
    assert outcome(got["past"]) == Reason.CAPTION_TOO_LONG
    assert f"{len(at_cap) + 1} bytes > {len(at_cap)}" in got["past"].detail and "not read" in got["past"].detail


# -- MAX_METADATA_BYTES (KEY.json) ------------------------------------------------------------------
def with_metadata_of(key: str, size: int) -> RawSample:
    """A record whose ``KEY.json`` (as ``write_webdataset`` writes it) is exactly ``size`` bytes."""
    meta = {"url": f"https://x.invalid/{key}.jpg", "pad": ""}
    meta["pad"] = "x" * (size - len(json.dumps({"key": key, **meta})))
    sample = RawSample(key, image_of(4000), "a rocket", meta=meta)
    assert len(json.dumps({"key": key, **meta})) == size
    return sample


@pytest.mark.parametrize("path", METADATA_PATHS, ids=ids(METADATA_PATHS))
def test_metadata_of_exactly_max_metadata_bytes_is_read_and_one_byte_more_is_skipped_unread(tmp_path, path):
    """Metadata is optional: a ``KEY.json`` over its cap is skipped unread and costs the record only its
    URL (no reject). At the cap it is read and the URL kept."""
    samples = [with_metadata_of("at", METADATA_BYTES), with_metadata_of("past", METADATA_BYTES + 1)]
    got = path.read(tmp_path, samples)
    assert outcome(got["at"]) == outcome(got["past"]) == "record"
    assert got["at"].url == "https://x.invalid/at.jpg"
    assert got["past"].url is None


# -- the TFRecord record cap --------------------------------------------------------------------------
def example_of(key: str, size: int, cfg: ReadConfig) -> RawSample:
    """A record of exactly ``size`` bytes holding the largest parts the caps allow (an image of
    ``max_image_bytes``, a caption of ``4 x max_caption_chars + 3`` bytes), topped up with a metadata
    feature."""
    caption = BOM + (EMOJI * cfg.max_caption_chars).encode()
    sample = RawSample(key, image_of(cfg.max_image_bytes), caption, meta={"pad": ""})
    for _ in range(4):  # the nested length prefixes grow with the pad: converge
        missing = size - len(tf_example(sample))
        if not missing:
            return sample
        sample.meta["pad"] = "x" * (len(sample.meta["pad"]) + missing)
    raise AssertionError(f"no record of exactly {size} bytes")


@pytest.mark.parametrize("path", ALL_PATHS[-2:], ids=ids(ALL_PATHS[-2:]))
def test_a_tfrecord_record_of_exactly_the_record_cap_is_read_and_one_byte_more_is_image_too_large(tmp_path, path):
    """``length > record_byte_limit`` skips a record by its length field; at the cap it is read, and a
    record holding an image and a caption at their caps fits it (with metadata to spare)."""
    limit = documented_record_bytes(CFG)
    samples = [example_of("at", limit, CFG), example_of("past", limit + 1, CFG), RawSample("after", ROCKET, "x")]
    items = list(read_shard(path.write(tmp_path, samples), CFG))
    assert [(i.key, outcome(i)) for i in items] == [
        ("at", "record"),
        ("", Reason.IMAGE_TOO_LARGE),
        ("after", "record"),
    ]
    assert items[0].image_bytes == samples[0].image and items[0].caption == EMOJI * MAX_CAPTION_CHARS
    assert f"record 1 of {limit + 1} bytes" in items[1].detail and f"> {limit}" in items[1].detail


# -- the Parquet row-group cap ------------------------------------------------------------------------
ROW_GROUP_CFG = ReadConfig(max_image_bytes=256 * 1024, max_caption_chars=MAX_CAPTION_CHARS)
ROW_GROUP_ROWS = 20


def row_group_rows(last_image: int) -> list[RawSample]:
    """19 rows with images at the cap and one with ``last_image`` bytes (all distinct)."""
    full = ROW_GROUP_CFG.max_image_bytes
    sizes = [full] * (ROW_GROUP_ROWS - 1) + [last_image]
    return [RawSample(f"k{i:02d}", image_of(size, salt=i), "a rocket") for i, size in enumerate(sizes)]


def uncompressed_bytes(path: str) -> int:
    """The row group's uncompressed size from the file's footer (pyarrow's own count): every column
    of these files is one the reader reads."""
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 1
    return meta.row_group(0).total_byte_size


def parquet_with_row_group_of(
    folder: Path, size: int, write: Callable[[Path, list[RawSample]], InputShard]
) -> InputShard:
    """A one-row-group shard of exactly ``size`` uncompressed bytes, found by sizing the last image
    (one image byte adds one stored byte at these sizes)."""
    last = ROW_GROUP_CFG.max_image_bytes // 2
    for _ in range(6):
        shard = write(folder, row_group_rows(last))
        missing = size - uncompressed_bytes(shard.path)
        if not missing:
            assert len(ROCKET) <= last <= ROW_GROUP_CFG.max_image_bytes  # every image within its own cap
            return shard
        last += missing
    raise AssertionError(f"no row group of exactly {size} bytes")


@pytest.mark.parametrize("write", [img2dataset_parquet, hf_parquet], ids=["img2dataset", "hf-image-struct"])
@pytest.mark.parametrize("over", [0, 1], ids=["at-cap", "one-past"])
def test_a_row_group_of_exactly_the_row_group_cap_is_read_and_one_byte_more_is_row_group_too_large(
    tmp_path, write, over
):
    """``row_group_bytes > row_group_byte_limit`` refuses a row group unread, row by row; at the cap
    every row is read (sizes from the footer; nested struct leaves count)."""
    limit = documented_row_group_bytes(ROW_GROUP_CFG)
    shard = parquet_with_row_group_of(tmp_path, limit + over, write)
    items = list(read_shard(shard, ROW_GROUP_CFG))
    expected = Reason.ROW_GROUP_TOO_LARGE if over else "record"
    assert [(i.key, outcome(i)) for i in items] == [(f"k{i:02d}", expected) for i in range(ROW_GROUP_ROWS)]
    if over:
        assert f"holds {limit + 1} bytes" in items[0].detail and f"over the {limit}" in items[0].detail


# -- the manifest line cap ------------------------------------------------------------------------------
def manifest_line(key: str, size: int, newline: bool = True) -> bytes:
    """A valid manifest line of exactly ``size`` bytes, its newline (if any) included."""
    entry = {"key": key, "image": "a.jpg", "caption": "a rocket", "pad": ""}
    entry["pad"] = "x" * (size - newline - len(json.dumps(entry)))
    line = json.dumps(entry).encode() + b"\n" * newline
    assert len(line) == size
    return line


def read_manifest_lines(folder: Path, lines: list[bytes], cfg: ReadConfig = CFG) -> list[tuple[str, str]]:
    (folder / "a.jpg").write_bytes(ROCKET)
    (folder / "m.jsonl").write_bytes(b"".join(lines))
    return [(i.key, outcome(i)) for i in read_shard(InputShard(str(folder / "m.jsonl"), "manifest"), cfg)]


def test_a_manifest_line_of_exactly_the_line_cap_is_read_and_one_byte_more_is_bad_manifest_line(tmp_path):
    """The cap counts a line's bytes with its newline; a line over it is rejected unparsed and the next
    one is read. (The lines are longer than the 1 MiB the reader reads at once.)"""
    limit = documented_manifest_line_bytes(CFG)
    lines = [manifest_line("at", limit), manifest_line("past", limit + 1), manifest_line("after", 100, False)]
    assert read_manifest_lines(tmp_path, lines) == [
        ("at", "record"),
        ("", Reason.BAD_MANIFEST_LINE),
        ("after", "record"),
    ]


@pytest.mark.parametrize("over", [0, 1], ids=["at-cap", "one-past"])
def test_a_last_manifest_line_without_a_newline_has_the_same_cap(tmp_path, over):
    """The file's last line, unterminated, is held to the same byte count (it has no newline to count)."""
    limit = documented_manifest_line_bytes(CFG)
    lines = [manifest_line("first", 100), manifest_line("last", limit + over, newline=False)]
    expected = ("", Reason.BAD_MANIFEST_LINE) if over else ("last", "record")
    assert read_manifest_lines(tmp_path, lines) == [("first", "record"), expected]


def test_a_caption_at_the_character_cap_fits_a_manifest_line_however_json_escapes_it(tmp_path):
    """``json.dumps`` (``ensure_ascii``, its default) writes a character outside the Basic Multilingual
    Plane as two \\u escapes: 12 bytes. Such a caption at ``max_caption_chars`` is read by every other
    path, so the manifest must read it too (it was refused as ``bad_manifest_line`` once
    ``12 x max_caption_chars`` outgrew ``4 x max_caption_chars + 3 + 1 MiB``), and one character more
    is ``caption_too_long`` there as everywhere."""
    cfg = ReadConfig(max_image_bytes=MAX_IMAGE_BYTES, max_caption_chars=140_000)
    lines = [
        json.dumps({"key": key, "image": "a.jpg", "caption": EMOJI * chars}).encode() + b"\n"
        for key, chars in (("at", cfg.max_caption_chars), ("past", cfg.max_caption_chars + 1))
    ]
    assert len(lines[0]) > 4 * cfg.max_caption_chars + 3 + METADATA_BYTES
    assert read_manifest_lines(tmp_path, lines, cfg) == [("at", "record"), ("past", Reason.CAPTION_TOO_LONG)]


# -- max_image_pixels (decoded images) -------------------------------------------------------------------
MAX_PIXELS = 12
AT_PIXELS, PAST_PIXELS = (4, 3), (13, 1)  # 12 and 13 pixels


def png(size: tuple[int, int]) -> bytes:
    return encode(Image.new("RGB", size, (200, 30, 30)), "PNG")


def jpeg(size: tuple[int, int]) -> bytes:
    return encode(Image.new("RGB", size, (200, 30, 30)), "JPEG")


def _prepare(data: bytes, on_device: bool):
    record = ImageRecord("k", "s", 0, "a rocket", data)
    return prepare_image(record, DetectConfig(max_image_pixels=MAX_PIXELS, image_size=16), False, on_device)


DECODE_PATHS: dict[str, tuple[Callable[[tuple[int, int]], bytes], Callable[[bytes], object]]] = {
    "decode_image": (png, lambda data: decode_image(data, MAX_PIXELS)),
    "probe_image": (png, lambda data: probe_image(data, MAX_PIXELS)),
    "prepare-cpu-decode": (png, lambda data: _prepare(data, on_device=False)),
    # JPEGs for the device decoder are only probed here: the cap is checked from the header
    "prepare-device-probe": (jpeg, lambda data: _prepare(data, on_device=True)),
}


@pytest.mark.parametrize("name", list(DECODE_PATHS))
def test_an_image_of_exactly_max_image_pixels_is_decoded_and_one_pixel_more_is_too_many_pixels(name):
    """``width x height > max_pixels`` rejects, from the header: 4 x 3 = 12 pixels pass a cap of 12,
    13 x 1 = 13 do not."""
    make, run = DECODE_PATHS[name]
    assert run(make(AT_PIXELS)) is not None
    with pytest.raises(ImageDecodeError) as info:
        run(make(PAST_PIXELS))
    assert info.value.reason == Reason.TOO_MANY_PIXELS
    assert info.value.detail == f"13x1 = 13 pixels > limit {MAX_PIXELS}"


# -- defaults declared once -------------------------------------------------------------------------------
def config_default(name: str, config: type = DetectConfig):
    return next(f.default for f in dataclasses.fields(config) if f.name == name)


def patch_config_default(monkeypatch, name: str, value, config: type = DetectConfig) -> None:
    """Change a config dataclass's declared default for ``name`` (its field and its class attribute), as
    an edit of its declaration would."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    monkeypatch.setattr(field, "default", value)
    monkeypatch.setattr(config, name, value)


def fresh_copy(module: str) -> ModuleType:
    """A private execution of ``module``'s source (the imported module is left alone), so its defaults
    are computed again from what DetectConfig declares now."""
    spec = importlib.util.find_spec(module)
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy


def default_of(function, parameter: str):
    return inspect.signature(function).parameters[parameter].default


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    from vesl.models.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoint)


def test_the_detectors_defaults_are_the_configs(tiny_model):
    """A detector built without a config pads, caches and computes as one built from the default config."""
    from vesl.models.owlv2 import PAD_VALUE, Owlv2Detector

    detector = Owlv2Detector(tiny_model.model, tiny_model.tokenizer, "cpu", 64)
    config = DetectConfig()
    assert PAD_VALUE == detector.pad_value == config.pad_value == 0.5
    assert detector.text_cache_size == config.text_cache_size
    assert str(detector.dtype) == f"torch.{config.dtype}"
    assert default_of(Owlv2Detector, "compile_model") == config.options.compile
    assert default_of(Owlv2Detector, "compile_mode") == config.options.compile_mode


def test_changing_the_configs_pad_value_changes_the_detectors(tiny_model, monkeypatch):
    """The pad grey is declared once: change DetectConfig's default and the detector pads with the new
    one, with no second place to edit."""
    patch_config_default(monkeypatch, "pad_value", 0.25)
    owlv2 = fresh_copy("vesl.models.owlv2")
    assert owlv2.PAD_VALUE == default_of(owlv2.Owlv2Detector, "pad_value") == 0.25
    detector = owlv2.Owlv2Detector(tiny_model.model, tiny_model.tokenizer, "cpu", 64)
    x = detector.pixel_values([np.zeros((64, 64, 3), np.uint8)], [(32, 64)])
    raw = x * detector._std + detector._mean  # back to [0, 1]
    assert np.allclose(raw[0, :, :, 32:].numpy(), 0.25, atol=1e-6)
    assert np.allclose(raw[0, :, :, :32].numpy(), 0.0, atol=1e-6)


@pytest.mark.parametrize(
    ("config", "name", "parameter", "value"),
    [
        (DetectConfig, "text_cache_size", "text_cache_size", 17),
        (DetectConfig, "dtype", "dtype", "bfloat16"),
        (TorchOptions, "compile", "compile_model", True),
        (TorchOptions, "compile_mode", "compile_mode", "max-autotune"),
    ],
)
def test_changing_the_configs_other_detector_defaults_changes_the_detectors(
    monkeypatch, config, name, parameter, value
):
    """The detector's other keyword defaults are the config's (the torch backend's options for
    compilation): one declaration each."""
    patch_config_default(monkeypatch, name, value, config)
    assert default_of(fresh_copy("vesl.models.owlv2").Owlv2Detector, parameter) == value


def test_the_alpha_background_default_is_the_configs(monkeypatch):
    """Transparent pixels land on DetectConfig's alpha_background wherever no caller says otherwise: the
    CPU decoder, its RGB conversion and the device decoder's CPU fallback."""
    assert config_default("alpha_background") == (255, 255, 255)
    assert decode_image(rgba_png(), 10**6).image.getpixel((35, 5)) == (255, 255, 255)  # a transparent pixel
    patch_config_default(monkeypatch, "alpha_background", (1, 2, 3))
    decode = fresh_copy("vesl.vision.decode")
    device_decode = fresh_copy("vesl.vision.device_decode")
    assert default_of(decode.decode_image, "alpha_background") == (1, 2, 3)
    assert default_of(decode.to_rgb, "alpha_background") == (1, 2, 3)
    assert default_of(device_decode.DeviceImageDecoder, "alpha_background") == (1, 2, 3)
    assert decode.decode_image(rgba_png(), 10**6).image.getpixel((35, 5)) == (1, 2, 3)
