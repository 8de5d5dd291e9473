"""WebDataset output (``--write_webdataset``): one tar per input shard, the layout the ``webdataset``
package reads (``wds.WebDataset(urls).decode()``): per written image, adjacent members

    MEMBER.txt    the caption
    MEMBER.json   the record as the Parquet row holds it (``vesl.schema``), without the image: key,
                  source, caption, size, phrases, regions (boxes in the stored convention), provenance
    MEMBER.jpg    the original image bytes, when the run keeps them (``--write_image_bytes``); the
                  ending is the image's format (``jpg``, ``png``, ``webp``, ...)

webdataset takes a sample's key from a member's name up to its first dot, and a slash as a folder, so
``MEMBER`` is the key with ``%``, ``.`` and ``/`` percent-encoded (``member_key``; ``original_key``
undoes it; the original key is also ``key`` in the JSON). Members carry no time (mtime 0), so a rerun
writes the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from vesl.config import WriteConfig
from vesl.io.sinks.base import OutputSink
from vesl.records import LabeledImage
from vesl.schema import to_parquet_row

IMAGE_ENDINGS = {"jpeg": "jpg", "tiff": "tif"}  # the stored format's name -> the usual file ending


def member_key(key: str) -> str:
    """The key as a member name's stem: ``%``, ``.`` and ``/`` percent-encoded (reversibly)."""
    return key.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")


def original_key(member: str) -> str:
    """``member_key``'s inverse: every ``%`` of a member key starts one of its three escapes."""
    return unquote(member)


class WebDatasetSink(OutputSink):
    name = "webdataset"

    @classmethod
    def suffix(cls, config: WriteConfig) -> str:
        return ".tar"

    def encode(self, labeled: LabeledImage) -> list[tuple[str, bytes]]:
        """(member name, bytes) of one written image."""
        row = to_parquet_row(labeled, self.provenance, include_image=False)
        row.pop("image")
        stem = member_key(labeled.record.key)
        members = [
            (f"{stem}.txt", labeled.record.caption.encode("utf-8")),
            (f"{stem}.json", json.dumps(row, ensure_ascii=False, sort_keys=True).encode("utf-8")),
        ]
        if self.config.write_image_bytes and labeled.record.image_bytes:
            fmt = (row["image_format"] or "bin").lower()
            members.append((f"{stem}.{IMAGE_ENDINGS.get(fmt, fmt)}", labeled.record.image_bytes))
        return members

    def open(self, fh) -> None:
        # pax: names of any length and any UTF-8 text; stream mode writes as it goes, no seeking back
        self._tar = tarfile.open(fileobj=fh, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (close())

    def write(self, members: list[tuple[str, bytes]]) -> None:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()  # the end-of-archive blocks; the file handle passed in stays open

    @classmethod
    def read_keys(cls, path: str) -> Iterator[tuple[str, int]]:
        import fsspec

        with fsspec.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    row: dict[str, Any] = json.load(tar.extractfile(member))
                    yield row["key"], row["source_index"]
