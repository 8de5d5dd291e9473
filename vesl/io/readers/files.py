"""``files`` shards: a folder of ``KEY.jpg`` (or png/webp/...) + ``KEY.txt`` (caption) + ``KEY.json``
(metadata), img2dataset's default output format (one ``NNNNN/`` folder per shard). The folder is
listed once (names only); records are read in key order, one record's files in memory at a time."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.base import Item, group_to_item, is_transient, shard_reject, split_name
from vesl.records import Reason, Reject, Stage


def read_files(path: str, cfg: ReadConfig) -> Iterator[Item]:
    try:
        fs, root = fsspec.core.url_to_fs(path)
        listing = fs.ls(root, detail=True)
    except Exception as exc:
        if is_transient(exc):
            raise
        yield shard_reject(path, exc)
        return
    groups: dict[str, dict[str, str]] = {}
    for entry in listing:
        if entry.get("type") != "file":
            continue
        key, ext = split_name(posixpath.basename(entry["name"]))
        if key and ext:
            groups.setdefault(key, {})[ext] = entry["name"]
    for index, key in enumerate(sorted(groups)):
        files: dict[str, bytes] = {}
        try:
            for ext, name in groups[key].items():
                files[ext] = fs.cat_file(name)
        except Exception as exc:
            if is_transient(exc):
                raise  # the shard is read again
            detail = f"{name}: {type(exc).__name__}: {exc}"
            yield Reject(key, path, index, Stage.READ, Reason.IMAGE_NOT_FOUND, detail)
            continue
        yield group_to_item(key, files, path, index, cfg)
