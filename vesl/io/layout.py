"""The output folder of a run (all paths may be local or gs://):

OUTPUT/parquet/regions-SSSSS-of-NNNNN.parquet     one row per written image
OUTPUT/tfrecord/regions-SSSSS-of-NNNNN.tfrecord   one tf.train.Example per written image (.gz when gzipped)
OUTPUT/rejects/rejects-SSSSS-of-NNNNN.jsonl       one JSON object per rejected record
OUTPUT/summary.json                               counts, config, provenance, schema version
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True)
class OutputLayout:
    root: str

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root.rstrip("/"), *parts)

    @property
    def parquet_prefix(self) -> str:
        return self._join("parquet", "regions")

    @property
    def tfrecord_prefix(self) -> str:
        return self._join("tfrecord", "regions")

    @property
    def rejects_prefix(self) -> str:
        return self._join("rejects", "rejects")

    @property
    def summary_path(self) -> str:
        return self._join("summary.json")

    @property
    def parquet_glob(self) -> str:
        return self._join("parquet", "*.parquet")

    @property
    def tfrecord_glob(self) -> str:
        return self._join("tfrecord", "*.tfrecord*")

    @property
    def rejects_glob(self) -> str:
        return self._join("rejects", "*.jsonl")

    @property
    def owned_dirs(self) -> tuple[str, ...]:
        return (self._join("parquet"), self._join("tfrecord"), self._join("rejects"))
