"""Duplicate keys, found from keys alone: a key read twice is written once.

The first occurrence (by shard path, then position in the shard) wins, so which copy survives does
not depend on the runner; every other occurrence is rejected as ``duplicate_key`` naming the winner.
Keys of shards committed by an earlier run take part as ``committed`` occurrences: they can win but
are never rejected again, so a resumed run's outcome equals a clean run's.

Why keys only (docs/scale.md, "Duplicate keys"): grouping records by key moves every image's bytes
through a shuffle (~100 TB for 10^9 images) and makes a local runner hold them all. Instead a first,
light pass reads each shard's keys, the keys are grouped (~60 bytes an image), and the verdicts
(``Duplicate``, a few per shard at most on sound input) go back to the shard that holds the losing
copy, which rejects it while it reads. Records never leave the worker that reads them until they
are output rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from vesl.records import ImageRecord, Reason, Reject, Stage

# One occurrence of a key: (shard path, index in the shard, committed by an earlier run).
Occurrence = tuple[str, int, bool]


@dataclass(frozen=True)
class Duplicate:
    """The copy of ``key`` at ``shard`` record ``index`` loses to ``first_shard`` record ``first_index``."""

    key: str
    shard: str
    index: int
    first_shard: str
    first_index: int

    @property
    def detail(self) -> str:
        return f"key already read from {self.first_shard} record {self.first_index}"


def duplicates_of(key: str, occurrences: Iterable[Occurrence]) -> Iterator[Duplicate]:
    """The losing occurrences of one key. ``occurrences`` is iterated twice (a list, or Beam's
    re-iterable grouped values), never sorted or held: a key repeated a billion times costs two passes,
    not memory."""
    first: tuple[str, int] | None = None
    for shard, index, _ in occurrences:
        if first is None or (shard, index) < first:
            first = (shard, index)
    if first is None:
        return
    for shard, index, committed in occurrences:
        if not committed and (shard, index) != first:
            yield Duplicate(key, shard, index, first[0], first[1])


def losers_by_index(duplicates: Iterable[Duplicate]) -> dict[int, Duplicate]:
    """One shard's verdicts, by the index of the losing record."""
    return {d.index: d for d in duplicates}


def reject_duplicates(items: Iterable, losers: Mapping[int, Duplicate]) -> Iterator:
    """A shard's read items with each losing record replaced by its ``duplicate_key`` reject. A verdict
    whose key is not the key now at that index (the shard changed between the two passes) is not
    applied: the record is kept, as it would be without any verdict."""
    if not losers:
        yield from items
        return
    for item in items:
        verdict = losers.get(item.index) if isinstance(item, ImageRecord) else None
        if verdict is not None and verdict.key == item.key:
            yield Reject.of(item, Stage.DEDUP, Reason.DUPLICATE_KEY, verdict.detail)
        else:
            yield item
