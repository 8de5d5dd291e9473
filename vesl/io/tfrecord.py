"""TFRecord framing reader with CRC checks (no TensorFlow).

Each record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
little-endian (the format Beam's WriteToTFRecord and TensorFlow write).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c


class TFRecordError(ValueError):
    pass


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclass(frozen=True)
class SkippedRecord:
    """A record longer than ``max_length``: its bytes were read past in chunks, never held."""

    offset: int
    length: int


@dataclass(frozen=True)
class CorruptRecord:
    """A record whose data fails its CRC inside a sound frame (the length's CRC held): the damage is
    that record's own, and the records after it are read as usual."""

    offset: int
    length: int


SKIP_CHUNK = 1 << 20


def iter_tfrecords(
    stream: BinaryIO,
    verify_crc: bool = True,
    source: str = "<stream>",
    max_length: int | None = None,
    corrupt_records: bool = False,
) -> Iterator[bytes | SkippedRecord | CorruptRecord]:
    """The records of a TFRecord stream. With ``max_length``, a longer record (a huge image, or a
    hostile length field) is skipped in 1 MiB chunks and yielded as a ``SkippedRecord``. With
    ``corrupt_records``, a record whose data fails its CRC comes as a ``CorruptRecord`` and reading
    goes on (as TensorFlow, the default raises)."""
    offset = 0
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12:
            raise TFRecordError(f"{source}: truncated record header at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if verify_crc and masked_crc32c(header[:8]) != length_crc:
            raise TFRecordError(f"{source}: bad length CRC at byte {offset}")
        if max_length is not None and length > max_length:
            left = length + 4
            while left:
                chunk = stream.read(min(left, SKIP_CHUNK))
                if not chunk:
                    raise TFRecordError(f"{source}: truncated record at byte {offset} (length field says {length})")
                left -= len(chunk)
            yield SkippedRecord(offset, length)
            offset += 16 + length
            continue
        data = stream.read(length)
        footer = stream.read(4)
        if len(data) < length or len(footer) < 4:
            raise TFRecordError(f"{source}: truncated record at byte {offset}")
        if verify_crc and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            if not corrupt_records:
                raise TFRecordError(f"{source}: bad data CRC at byte {offset}")
            yield CorruptRecord(offset, length)
        else:
            yield data
        offset += 16 + length


def read_tfrecord_file(path: str, verify_crc: bool = True) -> Iterator[bytes]:
    """Records of a local or remote (fsspec) TFRecord file; ``.gz`` files are gunzipped."""
    import fsspec

    with fsspec.open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        yield from iter_tfrecords(stream, verify_crc, source=path)


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))
