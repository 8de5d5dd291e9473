"""Parquet output: one row per written image (``vesl.schema``'s columns), in row groups, zstd by default."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vesl.config import WriteConfig
from vesl.io.sinks.base import OutputSink
from vesl.records import LabeledImage
from vesl.schema import parquet_schema, to_parquet_row

CODECS = {"none": "NONE", "zstd": "ZSTD", "snappy": "SNAPPY", "gzip": "GZIP"}


class ParquetSink(OutputSink):
    name = "parquet"
    rows_per_group = 1000

    @classmethod
    def suffix(cls, config: WriteConfig) -> str:
        return ".parquet"

    def encode(self, labeled: LabeledImage) -> dict[str, Any]:
        return to_parquet_row(labeled, self.provenance, self.config.write_image_bytes)

    def open(self, fh) -> None:
        import pyarrow.parquet as pq

        self.schema = parquet_schema(self.config_json)
        self._writer = pq.ParquetWriter(fh, self.schema, compression=CODECS[self.config.parquet_compression])
        self._rows: list[dict] = []

    def write(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_group:
            self._write_rows()

    def _write_rows(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def close(self) -> None:
        if self._writer is not None:
            self._write_rows()
            self._writer.close()  # writes the footer
            self._writer = None

    @classmethod
    def read_keys(cls, path: str) -> Iterator[tuple[str, int]]:
        import fsspec
        import pyarrow.parquet as pq

        with fsspec.open(path, "rb") as f:
            table = pq.read_table(f, columns=["key", "source_index"])
        yield from zip(table.column("key").to_pylist(), table.column("source_index").to_pylist())
