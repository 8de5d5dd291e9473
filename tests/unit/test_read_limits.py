"""Byte caps enforced while reading (a huge member, image or record is never held in memory), and
retries that concern one record retry that record (issue 12)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.hostile_inputs import add_member
from tests.conftest import PHOTOS
from vesl.config import ReadConfig
from vesl.io.readers import base, read_shard
from vesl.io.tfexample import encode_example
from vesl.io.tfrecord import frame_record, masked_crc32c
from vesl.records import ImageRecord, InputShard, Reason

IMAGE = (PHOTOS / "rocket.jpg").read_bytes()
CAP = ReadConfig(max_image_bytes=64 * 1024, max_caption_chars=100)


def outcomes(items) -> list[tuple[str, str]]:
    return [(i.key, "record" if isinstance(i, ImageRecord) else i.reason) for i in items]


def peak_mb(fn) -> tuple[object, float]:
    """fn()'s result and the peak of Python allocations while it ran (bytes read are Python objects)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_tar_members_over_the_caps_are_skipped_unread(tmp_path):
    path = tmp_path / "big.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        add_member(tar, "a.jpg", IMAGE)
        add_member(tar, "a.txt", b"a rocket")
        add_member(tar, "huge.jpg", size=256 * 1024 * 1024)  # compresses to ~250 KB
        add_member(tar, "huge.txt", b"a big zero")
        add_member(tar, "longcap.jpg", IMAGE)
        add_member(tar, "longcap.txt", b"x" * 10_000)
        add_member(tar, "b.jpg", IMAGE)
        add_member(tar, "b.txt", b"a second rocket")
    assert path.stat().st_size < 2 * 1024 * 1024
    items, peak = peak_mb(lambda: list(read_shard(str(path), CAP)))
    assert outcomes(items) == [
        ("a", "record"),
        ("huge", Reason.IMAGE_TOO_LARGE),
        ("longcap", Reason.CAPTION_TOO_LONG),
        ("b", "record"),
    ]
    assert "268435456 bytes > max_image_bytes 65536" in items[1].detail
    assert peak < 32  # the 256 MiB member was never held


def test_manifest_image_over_the_cap_is_not_read_whole(tmp_path):
    (tmp_path / "ok.jpg").write_bytes(IMAGE)
    with open(tmp_path / "big.jpg", "wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: 300 MiB of zeros on no disk
    lines = [
        {"key": "big", "image": "big.jpg", "caption": "a big one"},
        {"key": "ok", "image": "ok.jpg", "caption": "x"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(map(json.dumps, lines)))
    items, peak = peak_mb(lambda: list(read_shard(str(tmp_path / "m.jsonl"), CAP)))
    assert outcomes(items) == [("big", Reason.IMAGE_TOO_LARGE), ("ok", "record")]
    assert peak < 32


def test_tfrecord_record_over_the_cap_is_skipped(tmp_path):
    small = encode_example({"key": ("bytes", [b"s"]), "jpg": ("bytes", [IMAGE]), "txt": ("bytes", [b"a rocket"])})
    big = encode_example({"key": ("bytes", [b"b"]), "jpg": ("bytes", [bytes(2_000_000)]), "txt": ("bytes", [b"x"])})
    path = tmp_path / "t.tfrecord"
    path.write_bytes(frame_record(small) + frame_record(big) + frame_record(small))
    items = list(read_shard(InputShard(str(path), "tfrecord"), CAP))
    assert outcomes(items) == [("s", "record"), ("", Reason.IMAGE_TOO_LARGE), ("s", "record")]
    assert "record 1 of 2000" in items[1].detail
    # a hostile length field (far beyond the file) is damage, not an allocation
    header = struct.pack("<Q", 1 << 40)
    path.write_bytes(frame_record(small) + header + struct.pack("<I", masked_crc32c(header)) + b"xx")
    tail = list(read_shard(InputShard(str(path), "tfrecord"), CAP))
    assert outcomes(tail)[0] == ("s", "record") and tail[-1].reason in (Reason.IMAGE_TOO_LARGE, Reason.TRUNCATED_SHARD)


def test_parquet_row_group_too_big_to_read_is_rejected_row_by_row_unread(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    limit = base.row_group_byte_limit(CAP)  # 4 x (64 KiB image + caption + metadata allowance)
    huge_caption = "x" * (limit + 1)  # one row, but its column chunk alone is over the limit
    path = tmp_path / "p.parquet"
    schema = pa.schema([("key", pa.string()), ("caption", pa.string()), ("jpg", pa.binary())])
    with pq.ParquetWriter(path, schema) as writer:
        writer.write_table(pa.table({"key": ["a", "b"], "caption": ["a rocket", "b"], "jpg": [IMAGE, IMAGE]}, schema))
        writer.write_table(
            pa.table({"key": ["h1", "h2"], "caption": [huge_caption, "c"], "jpg": [IMAGE, IMAGE]}, schema)
        )
        writer.write_table(pa.table({"key": ["z"], "caption": ["last"], "jpg": [IMAGE]}, schema))
    assert pq.ParquetFile(path).num_row_groups == 3
    items, peak = peak_mb(lambda: list(read_shard(str(path), CAP)))
    assert outcomes(items) == [
        ("a", "record"),
        ("b", "record"),
        ("h1", Reason.ROW_GROUP_TOO_LARGE),
        ("h2", Reason.ROW_GROUP_TOO_LARGE),
        ("z", "record"),
    ]
    assert [i.index for i in items] == [0, 1, 2, 3, 4]
    assert "parquet row group 1 holds" in items[2].detail and f"over the {limit}" in items[2].detail
    assert peak < limit / 2**20  # the oversized group was never decoded
    # Just under the limit it is read as usual.
    roomy = ReadConfig(max_image_bytes=CAP.max_image_bytes * 2, max_caption_chars=CAP.max_caption_chars)
    assert outcomes(read_shard(str(path), roomy))[2] == ("h1", Reason.CAPTION_TOO_LONG)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=12),
    st.integers(1, 30),
    st.integers(1, 17),
)
def test_capped_lines_equal_plain_lines_with_long_ones_as_lengths(shape, limit, chunk):
    content = b"".join(b"x" * n + (b"\n" if newline else b"") for n, newline in shape)
    expected = [line if len(line) <= limit else len(line) for line in content.splitlines(keepends=True)]
    assert list(base.iter_capped_lines(io.BytesIO(content), limit, chunk)) == expected


def test_a_manifest_line_of_256_mib_is_not_held(tmp_path):
    (tmp_path / "ok.jpg").write_bytes(IMAGE)
    path = tmp_path / "m.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps({"key": "ok", "image": "ok.jpg", "caption": "a rocket"}).encode() + b"\n")
        f.write(b'{"key": "huge", "image": "ok.jpg", "caption": "')
        f.truncate(f.tell() + 256 * 1024 * 1024)  # a caption of NUL bytes, on no disk
        f.seek(0, 2)
        f.write(b'"}\n' + json.dumps({"key": "after", "image": "ok.jpg", "caption": "a rocket"}).encode())
    items, peak = peak_mb(lambda: list(read_shard(str(path), CAP)))
    assert outcomes(items) == [("ok", "record"), ("", Reason.BAD_MANIFEST_LINE), ("after", "record")]
    assert "line 2: 268435" in items[1].detail and "not parsed" in items[1].detail
    assert peak < 16


def test_files_shard_checks_sizes_from_the_listing(tmp_path):
    folder = tmp_path / "00000"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(IMAGE)
    (folder / "a.txt").write_text("a rocket")
    with open(folder / "b.jpg", "wb") as f:
        f.truncate(200 * 1024 * 1024)
    (folder / "b.txt").write_text("big")
    items = list(read_shard(InputShard(str(folder), "files"), CAP))
    assert outcomes(items) == [("a", "record"), ("b", Reason.IMAGE_TOO_LARGE)]


class Timeouts:
    """A local filesystem whose open of one file times out ``failures`` times."""

    failures = 0
    target = ""

    @classmethod
    def register(cls):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        class Flaky(LocalFileSystem):
            protocol = "timeouts"

            def _open(self, path, mode="rb", **kwargs):
                if path.endswith(Timeouts.target) and Timeouts.failures:
                    Timeouts.failures -= 1
                    raise TimeoutError("read timed out (simulated)")
                return super()._open(path, mode, **kwargs)

            def cat_file(self, path, start=None, end=None, **kwargs):
                if path.endswith(Timeouts.target) and Timeouts.failures:
                    Timeouts.failures -= 1
                    raise TimeoutError("read timed out (simulated)")
                return super().cat_file(path, start, end, **kwargs)

            @classmethod
            def _strip_protocol(cls, path):
                return LocalFileSystem._strip_protocol(
                    path[len("timeouts://") :] if path.startswith("timeouts://") else path
                )

        fsspec.register_implementation("timeouts", Flaky, clobber=True)


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(base, "RETRY_BASE_DELAY_S", 0.0)
    Timeouts.register()


def test_a_timeout_on_one_manifest_image_retries_that_image(tmp_path, no_backoff):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.jpg").write_bytes(IMAGE)
    lines = [{"key": k, "image": f"{k}.jpg", "caption": "a rocket"} for k in "abc"]
    (tmp_path / "m.jsonl").write_text("\n".join(map(json.dumps, lines)))
    Timeouts.target, Timeouts.failures = "b.jpg", 2
    items = list(read_shard(f"timeouts://{tmp_path}/m.jsonl", CAP))
    assert outcomes(items) == [("a", "record"), ("b", "record"), ("c", "record")] and Timeouts.failures == 0
    Timeouts.failures = 100  # never answers: that image is rejected, the rest are read
    items = list(read_shard(f"timeouts://{tmp_path}/m.jsonl", CAP))
    assert outcomes(items) == [("a", "record"), ("b", Reason.IMAGE_UNREACHABLE), ("c", "record")]
    assert "after 4 attempts" in items[1].detail


def test_a_timeout_on_one_file_of_a_files_shard_retries_that_record(tmp_path, no_backoff):
    folder = tmp_path / "00000"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.jpg").write_bytes(IMAGE)
        (folder / f"{name}.txt").write_text("a rocket")
    Timeouts.target, Timeouts.failures = "b.jpg", 100
    items = list(read_shard(InputShard(f"timeouts://{folder}", "files"), CAP))
    assert outcomes(items) == [("a", "record"), ("b", Reason.IMAGE_UNREACHABLE), ("c", "record")]
