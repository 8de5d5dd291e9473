"""Reading Parquet row batches in bounded memory, shared by the Parquet reader and img2dataset's
metadata pass (its ``NNNNN.parquet``): one row group at a time, string columns as bytes."""

from __future__ import annotations


def iter_row_batches(pf, columns: list[str], batch_rows: int, byte_limit: int | None = None):
    """(row group, record batch or None), one row group at a time: pyarrow pre-buffers every row
    group an iterator covers (a whole file at once), so memory is bounded by the largest row group,
    not the file. A row group whose ``columns`` hold more than ``byte_limit`` uncompressed bytes is
    not read: it comes as (row group, None)."""
    for row_group in range(pf.num_row_groups):
        if byte_limit is not None and row_group_bytes(pf, row_group, columns) > byte_limit:
            yield row_group, None
            continue
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=columns):
            yield row_group, batch


def row_group_bytes(pf, row_group: int, columns: list[str]) -> int:
    """Uncompressed bytes of ``columns`` in one row group, from the file's footer (nothing is read);
    nested columns (an Image struct) count every leaf under them."""
    meta = pf.metadata.row_group(row_group)
    roots = {c.split(".")[0] for c in columns}
    return sum(
        meta.column(i).total_uncompressed_size
        for i in range(meta.num_columns)
        if meta.column(i).path_in_schema.split(".")[0] in roots
    )


def text_as_bytes(batch) -> dict[str, list]:
    """The batch as Python lists, string columns as bytes: one invalid UTF-8 value then costs only its
    own row (pyarrow would fail the whole batch converting it to str)."""
    import pyarrow as pa

    columns = {}
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_string(column.type):
            column = column.view(pa.binary())
        elif pa.types.is_large_string(column.type):
            column = column.view(pa.large_binary())
        columns[name] = column.to_pylist()
    return columns


def as_text(value):
    """Bytes (a string column read as binary) as text, bad UTF-8 replaced; other values as they are."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
