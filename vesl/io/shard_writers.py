"""Write input shards in the layouts the readers take (img2dataset's webdataset tar and parquet).

Used to build the bundled sample and test fixtures, and handy to turn a folder of images into shards.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class RawSample:
    """One input record as bytes; ``None`` leaves that member/column out (to build bad input)."""

    key: str
    image: bytes | None
    caption: str | bytes | None
    image_ext: str = "jpg"
    meta: dict = field(default_factory=dict)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(path: str, samples: Iterable[RawSample]) -> str:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            if s.image is not None:
                _add_member(tar, f"{s.key}.{s.image_ext}", s.image)
            if s.caption is not None:
                caption = s.caption.encode("utf-8") if isinstance(s.caption, str) else s.caption
                _add_member(tar, f"{s.key}.txt", caption)
            meta = {"key": s.key, **s.meta}
            _add_member(tar, f"{s.key}.json", json.dumps(meta).encode())
    return path


def write_img2dataset_parquet(path: str, samples: Iterable[RawSample]) -> str:
    rows = list(samples)
    table = pa.table(
        {
            "key": pa.array([s.key for s in rows], pa.string()),
            "caption": pa.array(
                [
                    s.caption
                    if isinstance(s.caption, str) or s.caption is None
                    else s.caption.decode("utf-8", "replace")
                    for s in rows
                ],
                pa.string(),
            ),
            "url": pa.array([s.meta.get("url") for s in rows], pa.string()),
            "status": pa.array(["success" if s.image is not None else "failed_to_download" for s in rows]),
            "error_message": pa.array([None if s.image is not None else "sample: no image" for s in rows], pa.string()),
            "jpg": pa.array([s.image for s in rows], pa.binary()),
        }
    )
    pq.write_table(table, path, compression="zstd")
    return path
