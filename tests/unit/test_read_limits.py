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


class Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand (a 1 GiB member without 1 GiB anywhere)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def add(tar, name: str, data: bytes | None = None, size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else size
    tar.addfile(info, io.BytesIO(data) if data is not None else io.BufferedReader(Zeros(size)))


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
        add(tar, "a.jpg", IMAGE)
        add(tar, "a.txt", b"a rocket")
        add(tar, "huge.jpg", size=256 * 1024 * 1024)  # compresses to ~250 KB
        add(tar, "huge.txt", b"a big zero")
        add(tar, "longcap.jpg", IMAGE)
        add(tar, "longcap.txt", b"x" * 10_000)
        add(tar, "b.jpg", IMAGE)
        add(tar, "b.txt", b"a second rocket")
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
