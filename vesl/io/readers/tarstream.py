"""A lean streaming tar reader: the members of a tar, in order, read from a file object once.

Why not ``tarfile``: its per-member Python (``TarInfo.frombuf``, its ``_Stream`` buffer) was most of
the cost of reading a webdataset shard (~0.28 ms a record on the development VM), and every shard is
read twice (keys pass, then records: docs/scale.md). This reader parses the same headers the way
``tarfile.TarInfo.frombuf`` does (names with the ustar prefix, octal and base-256 numbers, both
checksum conventions, GNU long names, pax ``path``/``size``, global pax headers), and says how the
archive ended, which tarfile does not:

- a zero block: the end-of-archive marker, a normal end;
- the file ends before one (``TarCut``): it was cut, also when the cut falls between two members;
- a header whose checksum or numbers are wrong (``TarDamaged``; ``tarfile.ReadError`` at the start of
  the file, as tarfile says of a file that is no tar at all): tarfile ends there without a word.

Members it does not read (GNU sparse files, in any form) raise ``TarUnsupported`` before anything of
them is passed on, so the caller can read the shard with tarfile instead.
"""

from __future__ import annotations

import re
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
REGULAR_TYPES = (b"0", b"\0", b"7")  # file, old-style file, contiguous file
OTHER_SUPPORTED_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, folders, fifos: no data
GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = b"L", b"K", b"S"
PAX_TYPES = (b"x", b"X")  # X: Solaris' name for the same
PAX_GLOBAL = b"g"
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_SKIP_CHUNK = 1 << 20


class TarCut(EOFError):
    """The file ended before the end-of-archive marker."""


class TarDamaged(tarfile.ReadError):
    """A header that is not a valid tar header, past the start of the archive."""


class TarUnsupported(Exception):
    """A member this reader does not handle (GNU sparse files)."""


@dataclass
class TarMember:
    name: str
    size: int
    is_file: bool
    offset: int  # of its header in the archive


def _nts(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _nti(field: bytes) -> int:
    if field[0] in (0o200, 0o377):  # base-256 (GNU), for sizes over 8 GiB
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0o377 else n
    text = field.split(b"\0", 1)[0].decode("ascii").strip()
    return int(text or "0", 8)


def _checksum_ok(header: bytes) -> bool:
    stored = _nti(header[148:156])
    unsigned = 256 + sum(header[:148]) + sum(header[156:])
    if stored == unsigned:
        return True
    signed = 256 + sum(struct.unpack_from("148b8x356b", header))
    return stored == signed


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        match = _PAX_RECORD.match(data, pos)
        if match is None:
            raise ValueError("invalid pax header")
        length = int(match.group(1))
        if length < 1 or pos + length > len(data):
            raise ValueError("invalid pax header length")
        value = data[match.end() : pos + length - 1]
        key = match.group(2).decode("utf-8", "surrogateescape")
        try:
            records[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            records[key] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarStream:
    """``for member in TarStream(f)``: each member once, in order; ``read()`` gives the data of the
    member just yielded (call it before the next one; an unread member is skipped)."""

    def __init__(self, fileobj):
        self.f = fileobj
        self.offset = 0  # bytes consumed
        self._left = 0  # data + padding of the current member not yet consumed
        self._size = 0
        self._read_done = True
        self._global: dict[str, str] = {}
        try:
            self._can_seek = bool(fileobj.seekable())
        except (AttributeError, OSError, ValueError):
            self._can_seek = False

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.offset += len(data)
        return data

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if self._can_seek:
            self.f.seek(n, 1)  # past the end of the file is allowed: the next header read comes back empty
            self.offset += n
            return
        while n > 0:
            got = self._read(min(n, _SKIP_CHUNK))
            if not got:
                return
            n -= len(got)

    def read(self) -> bytes:
        """The current member's data (fewer bytes than its size when the file was cut inside it)."""
        if self._read_done:
            raise ValueError("read() once per member, before the next one")
        self._read_done = True
        data = self._read(self._size)
        self._left -= len(data)
        return data

    def _header(self) -> bytes | None:
        header = self._read(BLOCK)
        if not header:
            if self.offset == 0:
                raise tarfile.ReadError("empty file")
            raise TarCut("the tar has no end-of-archive marker")
        if len(header) < BLOCK:
            if self.offset == len(header):
                raise tarfile.ReadError("truncated header")
            raise TarCut("the tar ends inside a member header, before its end-of-archive marker")
        if header == ZERO_BLOCK:
            return None
        try:
            ok = _checksum_ok(header)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            at = self.offset - BLOCK
            if at == 0:
                raise tarfile.ReadError("bad checksum")
            raise TarDamaged(f"damaged tar header at byte {at} (bad checksum)")
        return header

    def __iter__(self) -> Iterator[TarMember]:
        while True:
            self._skip(self._left)
            self._left = 0
            overrides: dict[str, str] | None = None  # a local pax header's records (None: none came)
            long_name: str | None = None
            while True:  # meta headers (GNU long names, pax) describe the member that follows them
                start = self.offset
                header = self._header()
                if header is None:
                    return
                kind = header[156:157]
                try:
                    size = _nti(header[124:136])
                except (ValueError, UnicodeDecodeError):
                    raise TarDamaged(f"damaged tar header at byte {start} (bad size)") from None
                if size < 0:
                    raise TarDamaged(f"damaged tar header at byte {start} (negative size)")
                if kind not in (GNU_LONGNAME, GNU_LONGLINK, PAX_GLOBAL, *PAX_TYPES):
                    break
                padded = -(-size // BLOCK) * BLOCK
                data = self._read(padded)
                if len(data) < padded:
                    raise TarCut("the tar ends inside a member header, before its end-of-archive marker")
                data = data[:size]
                if kind == GNU_LONGNAME:
                    long_name = _nts(data)
                elif kind != GNU_LONGLINK:
                    try:
                        records = _pax_records(data)
                    except ValueError as exc:
                        raise TarDamaged(f"damaged pax header at byte {start} ({exc})") from None
                    if kind == PAX_GLOBAL:
                        self._global.update(records)
                    else:
                        overrides = {**(overrides or {}), **records}
            pax = {**self._global, **(overrides or {})}  # as tarfile: global records reach every member
            if kind == GNU_SPARSE or any(key.startswith("GNU.sparse.") for key in pax):
                raise TarUnsupported("a GNU sparse member")
            name = _nts(header[0:100])
            prefix = _nts(header[345:500])
            if kind == b"\0" and name.endswith("/"):
                kind = b"5"
            if prefix:
                name = f"{prefix}/{name}"
            if long_name is not None:
                name = long_name
            if "path" in pax:
                name = pax["path"]
            if kind == b"5":  # as tarfile: a folder's name has no trailing slash, however it was given
                name = name.rstrip("/")
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise TarDamaged(f"damaged pax header before byte {start} (bad size)") from None
            is_file = kind in REGULAR_TYPES
            has_data = is_file or kind not in OTHER_SUPPORTED_TYPES
            self._size = size if has_data else 0
            self._left = -(-self._size // BLOCK) * BLOCK
            self._read_done = not is_file
            yield TarMember(name, size, is_file, start)
