"""webdataset tar shards (``.tar``, ``.tar.gz``, ``.tgz``) as img2dataset writes them: members
``KEY.jpg|png|webp|...``, ``KEY.txt`` (caption) and ``KEY.json`` (metadata, optional, gives ``url``),
adjacent in the tar. Streamed (``tarstream``; Python's tarfile for sparse members): one record's
members in memory at a time; a member over its cap (``member_limit``) is
skipped unread. A tar that ends early yields
the records before the damage and one ``truncated_shard`` reject for the record it cut, also when
the cut falls between two members (no end-of-archive marker: Python's tarfile takes that for a
normal end), and the same for a damaged member header (tarfile would end there without a word)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.base import InputFormat, Item, damaged_shard, group_to_item, member_limit, split_name
from vesl.io.readers.tarstream import TarStream, TarUnsupported


class _EndAwareTarInfo(tarfile.TarInfo):
    """Notes how the archive ended: tarfile stops quietly at the zero block that ends a tar, at the
    end of a file cut between members, and (past the first member) at a damaged header."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
            tar.vesl_cut = False
            raise
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError):  # the file ran out first
            tar.vesl_cut = True
            raise
        except tarfile.InvalidHeaderError as exc:  # e.g. a bad checksum: the rest cannot be trusted
            tar.vesl_damaged = f"damaged tar header at byte {tar.offset} ({exc})"
            raise


def _lean_members(f) -> Iterator[tuple[str, int, bool, Callable[[], bytes]]]:
    stream = TarStream(f)
    for member in stream:
        yield member.name, member.size, member.is_file, stream.read


def _tarfile_members(f) -> Iterator[tuple[str, int, bool, Callable[[], bytes]]]:
    """Python's tarfile, for what ``TarStream`` does not read (sparse members)."""
    with tarfile.open(fileobj=f, mode="r|", tarinfo=_EndAwareTarInfo) as tar:
        for member in tar:

            def read(member=member) -> bytes:
                handle = tar.extractfile(member)
                return handle.read() if handle is not None else b""

            yield member.name, member.size, member.isfile(), read
        if getattr(tar, "vesl_damaged", None):
            raise tarfile.ReadError(tar.vesl_damaged)
        if getattr(tar, "vesl_cut", False):
            raise EOFError("the tar has no end-of-archive marker: it was cut after its last full member")


def read_webdataset(path: str, cfg: ReadConfig, keys_only: bool = False) -> Iterator[Item]:
    """Records and rejects in order. ``keys_only`` (the duplicate-key pass): the same records and
    rejects, but image and metadata members are skipped unread (seeked over where the file allows), so
    records carry empty image bytes and no URL: whether a record is a record depends on its members'
    names and sizes and on its caption only, and the caption is still read."""
    emitted = 0
    try:
        for item in _read_webdataset(path, cfg, _lean_members, keys_only):
            emitted += 1
            yield item
    except TarUnsupported:  # read it again with tarfile, passing on only what was not passed on yet
        for position, item in enumerate(_read_webdataset(path, cfg, _tarfile_members, keys_only)):
            if position >= emitted:
                yield item


def _read_webdataset(path: str, cfg: ReadConfig, members, keys_only: bool = False) -> Iterator[Item]:
    index = 0
    key: str | None = None
    files: dict[str, bytes] = {}
    oversized: dict[str, int] = {}
    try:
        with fsspec.open(path, "rb", compression="infer") as f:
            for name, size, is_file, read in members(f):
                if not is_file:
                    continue
                member_key, ext = split_name(name)
                if key is not None and member_key != key:
                    yield group_to_item(key, files, path, index, cfg, oversized)
                    index += 1
                    files, oversized = {}, {}
                key = member_key
                if size > member_limit(ext, cfg):
                    oversized[ext] = size  # skipped unread
                    continue
                if keys_only and ext != "txt":
                    # Present and within its cap is all a record needs of it; a cut inside it still
                    # shows, at the next header.
                    files[ext] = b""
                    continue
                data = read()
                if len(data) != size:
                    raise tarfile.ReadError(f"member {name} has {len(data)} of {size} bytes")
                files[ext] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        yield damaged_shard(path, exc, index, f"shard ends inside record {key!r}", key or "", key is not None)
        return
    if key is not None:
        yield group_to_item(key, files, path, index, cfg, oversized)


def read_webdataset_keys(path: str, cfg: ReadConfig) -> Iterator[Item]:
    """``read_webdataset`` with ``keys_only``: image and metadata members skipped unread."""
    return read_webdataset(path, cfg, keys_only=True)


FORMAT = InputFormat(
    "webdataset",
    read_webdataset,
    endings=(".tar", ".tar.gz", ".tgz"),
    read_keys=read_webdataset_keys,
    img2dataset=r"^(\d+)\.tar$",
)
