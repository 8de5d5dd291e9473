"""What every output sink is: one output format, written as one file per input shard.

A sink is built once a run (``OutputSink(write_config, provenance, config_json)``) and copied per file
by the writer stage (``vesl.transforms.write``, which puts it behind Beam's file sinks). On the
workers, ``encode`` turns a labeled image into what the sink writes (before the write grouping, so
the grouping carries output rows only); a file is then ``open(fh)``-ed, ``write``-n an encoded row at a
time and ``close``-d (the footer, the end-of-archive marker; the file handle stays the caller's).
``read_keys`` reads a written file back for the run that resumes the folder (the keys its duplicate
pass must count). File names come from ``vesl.io.layout.OutputLayout``: ``OUTPUT/NAME/SHARD+suffix``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO, ClassVar

from vesl.config import WriteConfig
from vesl.records import LabeledImage
from vesl.schema import Provenance


class OutputSink:
    name: ClassVar[str] = ""  # the folder under OUTPUT, the key in a stats file's ``files``, the WriteConfig switch

    def __init__(self, config: WriteConfig, provenance: Provenance, config_json: str):
        self.config = config
        self.provenance = provenance
        self.config_json = config_json

    @classmethod
    def enabled(cls, config: WriteConfig) -> bool:
        return bool(getattr(config, cls.name))

    @classmethod
    def suffix(cls, config: WriteConfig) -> str:
        raise NotImplementedError

    @property
    def compression(self) -> str | None:
        """``gzip``: the file is compressed as it is written (by the writer stage); None: as it is."""
        return None

    def encode(self, labeled: LabeledImage) -> Any:
        raise NotImplementedError

    def open(self, fh: BinaryIO) -> None:
        raise NotImplementedError

    def write(self, encoded: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @classmethod
    def read_keys(cls, path: str) -> Iterator[tuple[str, int]]:
        """(key, source_index) of every row of a file this sink wrote."""
        raise NotImplementedError
