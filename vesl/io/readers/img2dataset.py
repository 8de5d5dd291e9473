"""img2dataset's own bookkeeping, beside every output shard it writes:

- ``NNNNN.parquet`` (metadata; for ``--output_format parquet`` it is the data file itself): one row
  per URL tried, with ``key``, ``url``, ``status`` (``success``, ``failed_to_download``,
  ``failed_to_resize``) and ``error_message``. Failed URLs appear nowhere else.
- ``NNNNN_stats.json``: the shard's counts (``count``, ``successes``, ``failed_to_download``,
  ``failed_to_resize``, ``status_dict``), written when the shard is finished.

VESL reads the data file, then the metadata: each failed URL becomes a ``read`` reject carrying
img2dataset's status as the reason and its error message as the detail, and each URL marked
``success`` that the data file lacks becomes a ``missing_from_shard`` reject, so ``read`` counts
every URL img2dataset tried. The stats are then checked against what was read; a disagreement is a
``SourceCheck`` problem (reported per shard and in the summary), never a silent difference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import fsspec

from vesl.io.readers.arrow import as_text, iter_row_batches, text_as_bytes
from vesl.io.readers.base import SHARD_INDEX, Item, is_transient, normalize_url
from vesl.records import InputShard, Reason, Reject, SourceCheck, Stage

# img2dataset's names beside each shard NNNNN (group 1: the number); the metadata is Parquet, read as the
# parquet format when it is the shard's data too (img2dataset's parquet output).
METADATA_NAME = r"^(\d+)\.parquet$"
STATS_NAME = r"^(\d+)_stats\.json$"
METADATA_FORMAT = "parquet"
SUCCESS = "success"
FAILED_STATUSES = (Reason.FAILED_TO_DOWNLOAD, Reason.FAILED_TO_RESIZE)
METADATA_COLUMNS = ("key", "url", "status", "error_message")
STATS_FIELDS = ("count", "successes", "failed_to_download", "failed_to_resize")


def failed_download(key: str, shard: str, index: int, status: str | None, error: str | None, url) -> Reject | None:
    """The reject for a URL img2dataset tried and could not store; None when there is no status (not
    img2dataset's data) or it is ``success``. A status other than img2dataset's two failures counts
    as ``failed_to_download``."""
    if status is None or status == SUCCESS:
        return None
    reason = status if status in FAILED_STATUSES else Reason.FAILED_TO_DOWNLOAD
    detail = f"img2dataset {status}: {error or 'no message'}"
    return Reject(str(key or ""), shard, index, Stage.READ, reason, detail, normalize_url(url))


class ShardTally:
    """What the data reader yielded for one shard, for the metadata pass and the check."""

    def __init__(self) -> None:
        self.keys: set[str] = set()  # keys of the shard's records (a shard's worth of short strings)
        self.in_shard = 0  # records of the data file (written or rejected later)
        self.failed = 0  # URLs img2dataset could not store
        self.missing = 0  # marked success, absent from the data file
        self.shard_errors = 0  # shard-level rejects (the data file could not be read)
        self.metadata_rows = 0
        self.not_in_metadata = 0

    def observe(self, item: Item) -> Item:
        if isinstance(item, Reject) and item.index == SHARD_INDEX:
            self.shard_errors += 1
        elif isinstance(item, Reject) and item.reason in FAILED_STATUSES:
            self.failed += 1
        elif isinstance(item, Reject) and item.reason == Reason.MISSING_FROM_SHARD:
            self.missing += 1
        else:
            self.in_shard += 1
            if item.key:
                self.keys.add(item.key)
        return item


def metadata_rejects(
    shard: InputShard, start_index: int, tally: ShardTally, batch_rows: int = 1024
) -> Iterator[Reject]:
    """Rejects for the metadata rows that did not reach the data file (streamed, a row batch at a
    time). Their ``index`` continues after the data file's records."""
    import pyarrow.parquet as pq

    with fsspec.open(shard.metadata, "rb") as f:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        columns = [c for c in METADATA_COLUMNS if c in names]
        index = start_index
        listed: set[str] = set()
        for _, batch in iter_row_batches(pf, columns, batch_rows):
            values = {name: [as_text(v) for v in column] for name, column in text_as_bytes(batch).items()}
            empty = [None] * batch.num_rows
            for key, url, status, error in zip(*(values.get(c, empty) for c in METADATA_COLUMNS)):
                tally.metadata_rows += 1
                key = "" if key is None else str(key)
                listed.add(key)
                if status == SUCCESS:
                    if key in tally.keys:
                        continue
                    detail = "img2dataset's metadata lists this URL as downloaded, but the shard has no such record"
                    reject = Reject(key, shard.path, index, Stage.READ, Reason.MISSING_FROM_SHARD, detail, url)
                else:
                    reject = failed_download(key, shard.path, index, status or "no status", error, url)
                index += 1
                yield tally.observe(reject)
    tally.not_in_metadata = len(tally.keys - listed)


def read_stats(path: str) -> tuple[dict[str, int] | None, str | None]:
    """img2dataset's counts for a shard, or (None, why not)."""
    try:
        with fsspec.open(path, "rb") as f:
            stats = json.load(f)
        return {name: int(stats[name]) for name in STATS_FIELDS}, None
    except FileNotFoundError:
        return None, f"no {path.rsplit('/', 1)[-1]} (img2dataset did not finish this shard?)"
    except Exception as exc:
        if is_transient(exc):
            raise
        return None, f"unreadable img2dataset stats {path}: {type(exc).__name__}: {exc}"


def source_check(shard: InputShard, tally: ShardTally, has_metadata: bool, metadata_error: str = "") -> SourceCheck:
    """Compares what was read with what img2dataset says it wrote."""
    problems: list[str] = [metadata_error] if metadata_error else []
    expected = None
    if shard.stats:
        expected, why_not = read_stats(shard.stats)
        if why_not:
            problems.append(why_not)
    elif has_metadata:
        problems.append("no _stats.json beside the shard (img2dataset did not finish it?)")
    tried = tally.in_shard + tally.failed + tally.missing
    if expected is not None:
        failures = expected["failed_to_download"] + expected["failed_to_resize"]
        if expected["count"] != tried:
            problems.append(f"img2dataset tried {expected['count']} URLs, VESL accounts for {tried}")
        if expected["successes"] != tally.in_shard:
            problems.append(f"img2dataset stored {expected['successes']} images, the shard holds {tally.in_shard}")
        if failures != tally.failed:
            problems.append(f"img2dataset reports {failures} failed URLs, its metadata lists {tally.failed}")
        if has_metadata and tally.metadata_rows != expected["count"]:
            problems.append(f"img2dataset tried {expected['count']} URLs, its metadata lists {tally.metadata_rows}")
    if tally.missing:
        problems.append(f"{tally.missing} URLs marked downloaded are missing from the shard")
    if tally.not_in_metadata:
        problems.append(f"{tally.not_in_metadata} records of the shard are not in its metadata")
    if tally.shard_errors:
        problems.append("the data file could not be read (see its unreadable_shard reject)")
    return SourceCheck(shard.path, tried, tally.in_shard, tally.failed, expected, tuple(problems))


def with_img2dataset_accounting(shard: InputShard, data: Iterable[Item]) -> Iterator[Item | SourceCheck]:
    """The data file's items, then the metadata's rejects, then the shard's ``SourceCheck``."""
    tally = ShardTally()
    last_index = -1
    for item in data:
        if item.index != SHARD_INDEX:
            last_index = max(last_index, item.index)
        yield tally.observe(item)
    separate_metadata = shard.metadata is not None and shard.metadata != shard.path
    metadata_error = ""
    if separate_metadata:
        try:
            yield from metadata_rejects(shard, last_index + 1, tally)
        except Exception as exc:
            if is_transient(exc):
                raise  # the shard is read again
            # Failed URLs cannot be counted without it: said in the check, not hidden.
            metadata_error = f"img2dataset metadata {shard.metadata} unreadable ({type(exc).__name__}: {exc})"
    else:  # img2dataset's parquet output: the data file lists every URL tried itself
        tally.metadata_rows = tally.in_shard + tally.failed
    yield source_check(shard, tally, shard.metadata is not None, metadata_error)
