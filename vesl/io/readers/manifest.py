"""JSON-lines manifests for a user's own folder: one ``{"key", "image", "caption"}`` object a line;
``image`` is a path relative to the manifest (or absolute, or a URL fsspec opens). Streamed: one line
and its image in memory at a time; an image over ``max_image_bytes`` is not read past the cap, and
one that storage keeps failing on (after retries) costs its record only."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

import fsspec

from vesl.config import ReadConfig
from vesl.io.readers.base import (
    InputFormat,
    Item,
    fetch_part,
    is_transient,
    iter_capped_lines,
    make_record,
    manifest_line_limit,
    normalize_key,
    shard_reject,
)
from vesl.records import Reason, Reject, Stage


def _resolve_image_path(manifest: str, image: str) -> str:
    if "://" in image or image.startswith("/"):
        return image
    return posixpath.join(posixpath.dirname(manifest), image)


TOO_LARGE = object()


def _read_capped(path: str, limit: int):
    """The file's bytes, or ``TOO_LARGE`` after reading at most ``limit + 1`` of them."""
    with fsspec.open(path, "rb") as f:
        data = f.read(limit + 1)
    return TOO_LARGE if len(data) > limit else data


def read_manifest(path: str, cfg: ReadConfig) -> Iterator[Item]:
    try:
        f = fsspec.open(path, "rb").open()
    except Exception as exc:
        if is_transient(exc):
            raise
        yield shard_reject(path, exc)
        return
    limit = manifest_line_limit(cfg)
    with f:
        for index, raw_line in enumerate(iter_capped_lines(f, limit)):
            if isinstance(raw_line, int):
                detail = f"line {index + 1}: {raw_line} bytes, over the {limit} a line may hold (caption cap + metadata); not parsed"
                yield Reject("", path, index, Stage.READ, Reason.BAD_MANIFEST_LINE, detail)
                continue
            if not raw_line.strip():
                continue
            try:
                entry = json.loads(raw_line)
                if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                    raise ValueError('expected an object with an "image" path')
            except ValueError as exc:
                yield Reject("", path, index, Stage.READ, Reason.BAD_MANIFEST_LINE, f"line {index + 1}: {exc}")
                continue
            image_path = _resolve_image_path(path, entry["image"])
            key = entry.get("key")
            if key is None or key == "":
                key = posixpath.basename(entry["image"]).rsplit(".", 1)[0]
            caption = entry.get("caption")
            if caption is None and isinstance(entry.get("captions"), list) and entry["captions"]:
                caption = entry["captions"][0]
            image = fetch_part(
                lambda p=image_path: _read_capped(p, cfg.max_image_bytes),
                normalize_key(key)[0],
                path,
                index,
                image_path,
            )
            if image is TOO_LARGE:
                detail = f"{image_path}: more than max_image_bytes {cfg.max_image_bytes} bytes (not read)"
                yield Reject(normalize_key(key)[0], path, index, Stage.READ, Reason.IMAGE_TOO_LARGE, detail)
            elif isinstance(image, Reject):
                yield image
            else:
                yield make_record(key, path, index, caption, image, entry.get("url"), cfg)


FORMAT = InputFormat(
    "manifest",
    read_manifest,
    endings=(".jsonl", ".json"),
    searched=(".jsonl",),
)
