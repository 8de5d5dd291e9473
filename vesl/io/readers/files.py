"""``files`` shards: a folder of ``KEY.jpg`` (or png/webp/...) + ``KEY.txt`` (caption) + ``KEY.json``
(metadata), img2dataset's default output format (one ``NNNNN/`` folder per shard). The folder is
listed once (names and sizes); records are read in key order, one record's files in memory at a time.
A file over its cap is not read; a file that storage keeps failing on costs its record only."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.base import Item, group_to_item, is_transient, member_limit, shard_reject, split_name, with_retries
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
    groups: dict[str, dict[str, tuple[str, int]]] = {}
    for entry in listing:
        if entry.get("type") != "file":
            continue
        key, ext = split_name(posixpath.basename(entry["name"]))
        if key and ext:
            groups.setdefault(key, {})[ext] = (entry["name"], int(entry.get("size") or 0))
    for index, key in enumerate(sorted(groups)):
        files: dict[str, bytes] = {}
        oversized = {ext: size for ext, (_, size) in groups[key].items() if size > member_limit(ext, cfg)}
        try:
            for ext, (name, _) in groups[key].items():
                if ext in oversized:
                    continue
                data, unreachable = with_retries(lambda name=name: fs.cat_file(name))
                if unreachable:
                    yield Reject(key, path, index, Stage.READ, Reason.IMAGE_UNREACHABLE, f"{name}: {unreachable}")
                    break
                files[ext] = data
            else:
                yield group_to_item(key, files, path, index, cfg, oversized)
        except Exception as exc:
            detail = f"{name}: {type(exc).__name__}: {exc}"
            yield Reject(key, path, index, Stage.READ, Reason.IMAGE_NOT_FOUND, detail)
