"""Reading a VESL output folder back: the one module that does it (report, exports, training readers).

    folder = OutputFolder("gs://bucket/vesl-out")      # or a local path, or any fsspec URL
    folder.summary()                                    # summary.json
    folder.shards()                                     # the committed shards, from their stats files
    folder.files("parquet")                             # their Parquet files ("tfrecord", "rejects" too)
    for row in folder.rows(["key", "regions"]): ...     # Parquet rows as dicts, one row batch in memory
    for item in folder.labeled(): ...                   # vesl.records.LabeledImage
    for reject in folder.rejects(): ...                 # the rejects, one JSON line at a time

Only committed shards are read: a shard is committed once its stats file exists (``vesl.io.layout``),
so the data files of a run that died before writing a shard's stats file are never read. A stats file
records its data files by full path; they are resolved as the layout's folder for the format joined
with the recorded file NAME, so a folder copied elsewhere (``gsutil cp -r``) reads the same.

Imports only what a reader-only install has (pyarrow, fsspec, the stdlib): training hosts use it.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import fsspec
import pyarrow.parquet as pq

from vesl.io.layout import FOLDER_CONFIG, OutputLayout

if TYPE_CHECKING:
    from vesl.records import LabeledImage

# Column chunks are read through a buffer of this size, not whole and not all of a row group's up
# front (pyarrow's ``pre_buffer``): a row group's ``image`` column can be hundreds of MB.
READ_BUFFER_BYTES = 1 << 20
IMAGE_COLUMN = "image"


@dataclass(frozen=True)
class CommittedShard:
    """One committed input shard: what its stats file says, with its files resolved in this folder."""

    shard_id: str
    input: str | None
    counts: dict[str, Any]
    files: dict[str, str]  # format ("parquet", "tfrecord", "rejects") -> path in this folder
    stats: dict[str, Any] = field(repr=False, compare=False)  # the whole stats file


@dataclass(frozen=True)
class RowRef:
    """Where a row is: its Parquet file and its index in that file (to read more of it later)."""

    path: str
    index: int


def _join(root: str, name: str) -> str:
    return posixpath.join(root.rstrip("/"), name)


def is_output_folder(path: str) -> bool:
    """Whether ``path`` is a VESL output folder (it holds ``stats/``, ``summary.json`` or
    ``_config.json``), as opposed to a plain folder of Parquet files: readers then read only its
    committed shards, never what a run left half-written."""
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.isdir(root):
        return False
    return fs.isdir(_join(root, "stats")) or any(fs.isfile(_join(root, n)) for n in ("summary.json", FOLDER_CONFIG))


def _open_parquet(handle: Any) -> pq.ParquetFile:
    return pq.ParquetFile(handle, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)


def iter_file_rows(path: str, columns: Sequence[str] | None = None, batch_rows: int = 1024) -> Iterator[dict]:
    """The rows of one Parquet file as dicts, decoded one batch of ``batch_rows`` at a time.
    ``columns=None``: every column but ``image`` (the encoded images are most of a file's bytes);
    columns the file lacks are left out (files of older schema versions)."""
    fs, stripped = fsspec.core.url_to_fs(path)
    with fs.open(stripped, "rb") as handle:
        parquet = _open_parquet(handle)
        names = parquet.schema_arrow.names
        wanted = [c for c in names if c != IMAGE_COLUMN] if columns is None else [c for c in columns if c in names]
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
            yield from batch.to_pylist()


def read_rows(
    paths: Iterable[str], columns: Sequence[str] | None = None, limit: int | None = None, batch_rows: int = 1024
) -> Iterator[dict]:
    """The rows of Parquet files, in order, streamed (``iter_file_rows``), at most ``limit``."""
    if limit is not None and limit <= 0:
        return
    n = 0
    for path in paths:
        for row in iter_file_rows(path, columns, batch_rows):
            yield row
            n += 1
            if limit is not None and n >= limit:
                return


def read_cells(path: str, column: str, indices: Iterable[int], batch_rows: int = 64) -> dict[int, Any]:
    """``column``'s values at the given row indices of one Parquet file, reading only the row groups
    that hold them, one small batch at a time: the report fetches a sample's image bytes this way.
    Empty when the file has no such column."""
    wanted = sorted(set(indices))
    fs, stripped = fsspec.core.url_to_fs(path)
    found: dict[int, Any] = {}
    with fs.open(stripped, "rb") as handle:
        parquet = _open_parquet(handle)
        if column not in parquet.schema_arrow.names:
            return found
        start = 0
        for group in range(parquet.metadata.num_row_groups):
            end = start + parquet.metadata.row_group(group).num_rows
            here = [i for i in wanted if start <= i < end]
            if here:
                found.update(_cells_of_group(parquet, group, column, start, here, batch_rows))
            start = end
    return found


def _cells_of_group(
    parquet: pq.ParquetFile, group: int, column: str, start: int, indices: list[int], batch_rows: int
) -> dict[int, Any]:
    found: dict[int, Any] = {}
    offset = start
    for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[group], columns=[column]):
        values = batch.column(0)
        for i in indices:
            if offset <= i < offset + batch.num_rows:
                found[i] = values[i - offset].as_py()
        offset += batch.num_rows
        if offset > indices[-1]:
            break
    return found


def committed_ids(layout: OutputLayout) -> set[str]:
    """Shard ids with a stats file in the folder: committed by any run, whatever its input. Listed afresh
    (object stores' listings are cached per process, and another run may have committed since)."""
    fs, root = fsspec.core.url_to_fs(layout.root)
    fs.invalidate_cache()
    stats_dir = f"{root.rstrip('/')}/stats"
    suffix = layout.suffix("stats")
    listed = fs.ls(stats_dir, detail=False) if fs.isdir(stats_dir) else []
    return {posixpath.basename(p)[: -len(suffix)] for p in listed if p.endswith(suffix)}


class OutputFolder:
    """A VESL output folder, read through its committed shards. The list of committed shards is read
    once, at first use (one small read per stats file): an ``OutputFolder`` is a snapshot of the
    folder; make a new one to see shards a live run commits later."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") or root
        self.layout = OutputLayout(self.root)
        self._shards: list[CommittedShard] | None = None

    def __repr__(self) -> str:
        return f"OutputFolder({self.root!r})"

    def summary(self) -> dict[str, Any]:
        """summary.json: the counts of the whole run, its config and provenance."""
        with fsspec.open(self.layout.summary_path, "r", encoding="utf-8") as f:
            return json.load(f)

    def shards(self) -> list[CommittedShard]:
        """Every committed shard (one per stats file), sorted by shard id."""
        if self._shards is None:
            fs, pattern = fsspec.core.url_to_fs(self.layout.stats_glob)
            shards = []
            for path in fs.glob(pattern):
                with fs.open(path, "r", encoding="utf-8") as f:
                    shards.append(self._shard(posixpath.basename(path)[: -len(".json")], json.load(f)))
            self._shards = sorted(shards, key=lambda s: s.shard_id)
        return list(self._shards)

    def shard(self, shard_id: str) -> CommittedShard:
        """One committed shard, from its stats file alone (FileNotFoundError when it is not committed)."""
        with fsspec.open(self.layout.path("stats", shard_id), "r", encoding="utf-8") as f:
            return self._shard(shard_id, json.load(f))

    def uncommit(self, shard_id: str) -> None:
        """Undo a shard's commit: its stats file first (from then on it is not committed), then its files,
        which no reader should find beside the files of the run that redoes it."""
        shard = self.shard(shard_id)
        fs, _ = fsspec.core.url_to_fs(self.root)
        for path in [self.layout.path("stats", shard_id), *shard.files.values()]:
            stripped = fsspec.core.url_to_fs(path)[1]
            if fs.exists(stripped):
                fs.rm(stripped)

    def remove_uncommitted(self, layout: OutputLayout) -> list[str]:
        """Remove the files in ``layout``'s data folders and in ``rejects/`` (those with their format's ending)
        whose shard has no stats file: a run that stopped before committing them left them. Only a run
        holding the folder's lease may call this (no other run is writing). Returns the paths removed."""
        fs, _ = fsspec.core.url_to_fs(self.root)
        committed = committed_ids(layout)
        doomed = []
        for fmt in (*layout.data_formats, "rejects"):
            folder, suffix = fsspec.core.url_to_fs(layout.dir(fmt))[1], layout.suffix(fmt)
            if fs.isdir(folder):
                names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(folder, detail=False)]
                doomed += [
                    posixpath.join(folder, n)
                    for n in names
                    if n.endswith(suffix) and n[: -len(suffix)] not in committed
                ]
        if doomed:
            fs.rm(doomed)
        return doomed

    def _shard(self, stem: str, stats: dict[str, Any]) -> CommittedShard:
        recorded = stats.get("files") or {}
        files = {fmt: _join(self.layout.dir(fmt), posixpath.basename(p)) for fmt, p in recorded.items() if p}
        return CommittedShard(stats.get("shard_id") or stem, stats.get("input"), stats.get("counts", {}), files, stats)

    def files(self, fmt: str) -> list[str]:
        """The committed shards' files of one format ("parquet", "tfrecord", "rejects"), by shard id."""
        return [s.files[fmt] for s in self.shards() if fmt in s.files]

    def located_rows(
        self, columns: Sequence[str] | None = None, batch_rows: int = 1024
    ) -> Iterator[tuple[RowRef, dict]]:
        """``rows`` with where each row is, for reading more of a few rows later (``cells``)."""
        for path in self.files("parquet"):
            for index, row in enumerate(iter_file_rows(path, columns, batch_rows)):
                yield RowRef(path, index), row

    def rows(
        self, columns: Sequence[str] | None = None, limit: int | None = None, batch_rows: int = 1024
    ) -> Iterator[dict]:
        """The committed Parquet rows as dicts, one row batch decoded at a time (an output can hold
        millions of rows). ``columns=None``: every column except ``image`` (ask for it by name)."""
        return read_rows(self.files("parquet"), columns, limit, batch_rows)

    def cells(self, column: str, refs: Iterable[RowRef]) -> dict[RowRef, Any]:
        """``column``'s values of the given rows (e.g. the image bytes of a sample of rows)."""
        by_path: dict[str, list[int]] = defaultdict(list)
        for ref in refs:
            by_path[ref.path].append(ref.index)
        return {
            RowRef(path, i): value
            for path, indices in by_path.items()
            for i, value in read_cells(path, column, indices).items()
        }

    def labeled(self, limit: int | None = None) -> Iterator[LabeledImage]:
        """The rows as typed records (without image bytes), for exports and evaluation."""
        from vesl.schema import from_parquet_row

        for row in self.rows(limit=limit):
            yield from_parquet_row(row)[0]

    def rejects(self) -> Iterator[dict]:
        """The committed shards' rejects, one JSON object per line, read a line at a time."""
        for path in self.files("rejects"):
            yield from iter_rejects(path)


# File endings of each data format, for the sources given as folders or globs rather than an output folder.
FORMAT_ENDINGS = {"parquet": (".parquet",), "tfrecord": (".tfrecord", ".tfrecord.gz"), "webdataset": (".tar",)}


def source_files(source: str | Sequence[str], fmt: str) -> list[str]:
    """The ``fmt`` files (``parquet``, ``tfrecord``, ...) of a VESL output folder, any other folder, a glob,
    or a list of them (comma-separated or not; local or remote). An output folder's root gives its
    committed shards' files only: a shard a run left half-written is never trained on. Any other folder
    gives every such file under it; globs give what they match."""
    from vesl.io.paths import expand_patterns

    patterns = [p.strip() for chunk in ([source] if isinstance(source, str) else source) for p in chunk.split(",")]
    patterns = [p for p in patterns if p]
    endings = FORMAT_ENDINGS.get(fmt, (f".{fmt}",))
    # Only a plain folder path can be an output folder: files and globs cost no look-up (lists of
    # thousands of gs:// files are common).
    outputs = [p for p in patterns if not p.endswith(endings) and not any(c in p for c in "*?[")]
    outputs = [p for p in outputs if is_output_folder(p)]
    files = [path for root in outputs for path in _committed_files(root, fmt)]
    others = [p for p in patterns if p not in outputs]
    if others:
        files += expand_patterns(others, keep=lambda path: path.endswith(endings))
    return sorted(set(files))


def _committed_files(root: str, fmt: str) -> list[str]:
    files = OutputFolder(root).files(fmt)
    if not files:
        raise FileNotFoundError(f"{root!r} is a VESL output folder without a committed {fmt} file")
    return files


def iter_rejects(path: str) -> Iterator[dict]:
    """One rejects file's objects, a line at a time."""
    fs, stripped = fsspec.core.url_to_fs(path)
    with fs.open(stripped, "r", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


@dataclass(frozen=True)
class SourceImage:
    """A row's image bytes read back from its input shard, or why they could not be (``data`` None)."""

    row: dict
    data: bytes | None
    why: str = ""  # "no_source_shard", "input_unreadable" or "not_in_input" when ``data`` is None
    detail: str = ""


def iter_source_images(rows: Iterable[dict]) -> Iterator[SourceImage]:
    """The image bytes of rows written without them, read back from their input shards (``source_shard``,
    ``source_index`` and ``key`` must match): each input shard is read once, in order, and stops being
    read once its rows are found; a row is given back as soon as its record is read, so only the rows
    (not their images) wait in memory. Every row comes back exactly once, with ``data`` None and a reason
    when its shard is not readable from here or no longer holds it. The report's gallery and the
    patch-seg export read images this way. Needs the readers (not part of a reader-only install)."""
    wanted: dict[str, dict[int, dict]] = {}
    for row in rows:
        if not row.get("source_shard"):
            yield SourceImage(row, None, "no_source_shard", "the row records no input shard")
            continue
        wanted.setdefault(row["source_shard"], {})[row["source_index"]] = row
    for shard, indices in wanted.items():
        yield from _shard_images(shard, indices)


def _shard_images(shard: str, indices: dict[int, dict]) -> Iterator[SourceImage]:
    """``indices``' rows with their bytes from one input shard; the rest with why (``indices`` is emptied)."""
    from vesl.config import ReadConfig
    from vesl.io.readers import read_shard
    from vesl.records import ImageRecord, Reject

    why, detail = "not_in_input", f"no record with this key and index in {shard}"
    try:
        for item in read_shard(shard, ReadConfig()):
            if isinstance(item, ImageRecord) and item.index in indices and indices[item.index]["key"] == item.key:
                yield SourceImage(indices.pop(item.index), item.image_bytes)
                if not indices:  # this shard's wanted records are all found: stop reading it
                    return
            elif isinstance(item, Reject) and item.index < 0:  # the shard (or its rest) is not readable
                why, detail = "input_unreadable", f"{shard}: {item.detail}"
    except Exception as exc:  # the input moved or is not readable from here
        why, detail = "input_unreadable", f"{shard}: {type(exc).__name__}: {exc}"
    for row in indices.values():
        yield SourceImage(row, None, why, detail)
    indices.clear()
