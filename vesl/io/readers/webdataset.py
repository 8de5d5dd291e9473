"""webdataset tar shards (``.tar``, ``.tar.gz``, ``.tgz``) as img2dataset writes them: members
``KEY.jpg|png|webp|...``, ``KEY.txt`` (caption) and ``KEY.json`` (metadata, optional, gives ``url``),
adjacent in the tar. Streamed: one record's members in memory at a time; a member over its cap (``member_limit``) is
skipped unread. A tar that ends early yields
the records before the damage and one ``truncated_shard`` reject for the record it cut, also when
the cut falls between two members (no end-of-archive marker: Python's tarfile takes that for a
normal end), and the same for a damaged member header (tarfile would end there without a word)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.base import Item, damaged_shard, group_to_item, member_limit, split_name


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


def read_webdataset(path: str, cfg: ReadConfig) -> Iterator[Item]:
    index = 0
    key: str | None = None
    files: dict[str, bytes] = {}
    oversized: dict[str, int] = {}
    try:
        with (
            fsspec.open(path, "rb", compression="infer") as f,
            tarfile.open(fileobj=f, mode="r|", tarinfo=_EndAwareTarInfo) as tar,
        ):
            for member in tar:
                if not member.isfile():
                    continue
                member_key, ext = split_name(member.name)
                if key is not None and member_key != key:
                    yield group_to_item(key, files, path, index, cfg, oversized)
                    index += 1
                    files, oversized = {}, {}
                key = member_key
                if member.size > member_limit(ext, cfg):
                    oversized[ext] = member.size  # skipped unread: the tar stream reads past it in blocks
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name} has {len(data)} of {member.size} bytes")
                files[ext] = data
            if getattr(tar, "vesl_damaged", None):
                raise tarfile.ReadError(tar.vesl_damaged)
            if getattr(tar, "vesl_cut", False) and key is not None:
                raise EOFError("the tar has no end-of-archive marker: it was cut after its last full member")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        yield damaged_shard(path, exc, index, f"shard ends inside record {key!r}", key or "", key is not None)
        return
    if key is not None:
        yield group_to_item(key, files, path, index, cfg, oversized)
