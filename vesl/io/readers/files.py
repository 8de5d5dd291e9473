"""``files`` shards: a folder of ``KEY.jpg`` (or png/webp/...) + ``KEY.txt`` (caption) + ``KEY.json``
(metadata), img2dataset's default output format (one ``NNNNN/`` folder per shard). The folder is
listed once (names and sizes); records are read in key order, one record's files in memory at a time.
A file over its cap is not read; a file that storage keeps failing on costs its record only."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.base import (
    InputFormat,
    Item,
    fetch_part,
    group_to_item,
    is_transient,
    member_limit,
    shard_reject,
    split_name,
)
from vesl.records import Reject


def read_files(path: str, cfg: ReadConfig) -> Iterator[Item]:
    try:
        fs, root = fsspec.core.url_to_fs(path)
        listing = fs.ls(root, detail=True)
    except Exception as exc:
        if is_transient(exc):
            raise
        yield shard_reject(path, exc)
        return
    groups: dict[str, dict[str, tuple[str, int]]] = {}
    for entry in listing:
        if entry.get("type") != "file":
            continue
        key, ext = split_name(posixpath.basename(entry["name"]))
        if key and ext:
            groups.setdefault(key, {})[ext] = (entry["name"], int(entry.get("size") or 0))
    for index, key in enumerate(sorted(groups)):
        yield _record(fs, key, groups[key], path, index, cfg)


def _record(fs, key: str, parts: dict[str, tuple[str, int]], path: str, index: int, cfg: ReadConfig) -> Item:
    """One record from its files; a file over its cap is left unread, one storage cannot give costs the
    record."""
    oversized = {ext: size for ext, (_, size) in parts.items() if size > member_limit(ext, cfg)}
    files: dict[str, bytes] = {}
    for ext, (name, _) in parts.items():
        if ext not in oversized:
            data = fetch_part(lambda name=name: fs.cat_file(name), key, path, index, name)
            if isinstance(data, Reject):
                return data
            files[ext] = data
    return group_to_item(key, files, path, index, cfg, oversized)


FORMAT = InputFormat(
    "files",
    read_files,
    img2dataset=r"^(\d+)$",
    folder=True,
)
