"""Run accounting: every record read ends written or rejected, and the counts say so.

Stages emit small events; ``Tally`` folds them (it is the accumulator of the summary CombineFn and
is testable without Beam). ``read == written + rejected`` is checked in every summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vesl.records import LabeledImage, Reject, SourceCheck

SHARD, READ, WRITTEN, REJECTED, SOURCE = "shard", "read", "written", "rejected", "source"
# Source-check problems listed in a summary (the counts stay exact beyond it).
MAX_LISTED_PROBLEMS = 100
# Regions-per-image histogram bins (lower bounds).
HISTOGRAM_BINS = (0, 1, 2, 3, 5, 10, 20, 50, 100)

Event = tuple


def shard_event(_: object) -> Event:
    return (SHARD,)


def read_event(_: object) -> Event:
    return (READ,)


def written_event(labeled: LabeledImage) -> Event:
    return (WRITTEN, len(labeled.record.phrases), len(labeled.regions), labeled.region_drops)


def rejected_event(reject: Reject) -> Event:
    return (REJECTED, reject.stage, reject.reason)


def source_event(check: SourceCheck) -> Event:
    problems = tuple(f"{check.shard}: {p}" for p in check.problems)
    return (SOURCE, check.tried, check.downloaded, check.failed, check.expected is not None, problems)


def _bin_label(n: int) -> str:
    lower = max(b for b in HISTOGRAM_BINS if b <= n)
    following = [b for b in HISTOGRAM_BINS if b > lower]
    if not following:
        return f"{lower}+"
    upper = following[0] - 1
    return str(lower) if upper == lower else f"{lower}-{upper}"


@dataclass
class Tally:
    shards: int = 0
    read: int = 0
    written: int = 0
    rejected: int = 0
    phrases: int = 0
    regions: int = 0
    written_without_phrases: int = 0
    written_without_regions: int = 0
    rejected_by: Counter = field(default_factory=Counter)  # (stage, reason) -> n
    candidates_dropped: Counter = field(default_factory=Counter)  # reason -> n
    regions_histogram: Counter = field(default_factory=Counter)  # bin label -> n images
    # img2dataset's bookkeeping against what was read (shards that have it)
    source_shards: int = 0
    source_with_stats: int = 0
    source_tried: int = 0
    source_downloaded: int = 0
    source_failed: int = 0
    source_problem_count: int = 0
    source_problems: list = field(default_factory=list)  # "shard: problem", the first MAX_LISTED_PROBLEMS

    def add(self, event: Event) -> Tally:
        kind = event[0]
        if kind == SHARD:
            self.shards += 1
        elif kind == READ:
            self.read += 1
        elif kind == WRITTEN:
            _, n_phrases, n_regions, drops = event
            self.written += 1
            self.phrases += n_phrases
            self.regions += n_regions
            self.written_without_phrases += n_phrases == 0
            self.written_without_regions += n_regions == 0
            self.regions_histogram[_bin_label(n_regions)] += 1
            for reason, n in drops:
                self.candidates_dropped[reason] += n
        elif kind == REJECTED:
            _, stage, reason = event
            self.rejected += 1
            self.rejected_by[(stage, reason)] += 1
        elif kind == SOURCE:
            _, tried, downloaded, failed, with_stats, problems = event
            self.source_shards += 1
            self.source_with_stats += with_stats
            self.source_tried += tried
            self.source_downloaded += downloaded
            self.source_failed += failed
            self._add_problems(len(problems), problems)
        else:
            raise ValueError(f"unknown accounting event {event!r}")
        return self

    def _add_problems(self, count: int, listed) -> None:
        self.source_problem_count += count
        room = MAX_LISTED_PROBLEMS - len(self.source_problems)
        self.source_problems.extend(list(listed)[: max(room, 0)])

    def merge(self, other: Tally) -> Tally:
        for name in _SCALARS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self._add_problems(other.source_problem_count, other.source_problems)
        self.rejected_by.update(other.rejected_by)
        self.candidates_dropped.update(other.candidates_dropped)
        self.regions_histogram.update(other.regions_histogram)
        return self

    @property
    def balanced(self) -> bool:
        return self.read == self.written + self.rejected

    def to_dict(self) -> dict[str, Any]:
        by_stage: dict[str, dict[str, int]] = {}
        for (stage, reason), n in sorted(self.rejected_by.items()):
            by_stage.setdefault(stage, {})[reason] = n
        order = {_bin_label(b): i for i, b in enumerate(HISTOGRAM_BINS)}
        return {
            "shards": self.shards,
            "read": self.read,
            "written": self.written,
            "rejected": self.rejected,
            "balanced": self.balanced,
            "rejected_by_stage": by_stage,
            "written_without_phrases": self.written_without_phrases,
            "written_without_regions": self.written_without_regions,
            "phrases": self.phrases,
            "phrases_per_image": round(self.phrases / self.written, 3) if self.written else 0.0,
            "regions": self.regions,
            "regions_per_image": round(self.regions / self.written, 3) if self.written else 0.0,
            "regions_per_image_histogram": dict(sorted(self.regions_histogram.items(), key=lambda kv: order[kv[0]])),
            "candidates_dropped_by_reason": dict(sorted(self.candidates_dropped.items())),
            "source_checks": {
                "shards": self.source_shards,
                "shards_with_stats": self.source_with_stats,
                "urls_tried": self.source_tried,
                "downloaded": self.source_downloaded,
                "failed": self.source_failed,
                "problems": self.source_problem_count,
                "problems_listed": sorted(self.source_problems),
            },
        }

    @classmethod
    def from_dict(cls, counts: dict[str, Any]) -> Tally:
        """Inverse of ``to_dict`` (per-shard stats files are merged into the run summary with it)."""
        tally = cls(**{name: counts.get(name, 0) for name in _SCALARS})
        for stage, reasons in counts.get("rejected_by_stage", {}).items():
            for reason, n in reasons.items():
                tally.rejected_by[(stage, reason)] += n
        tally.candidates_dropped.update(counts.get("candidates_dropped_by_reason", {}))
        tally.regions_histogram.update(counts.get("regions_per_image_histogram", {}))
        source = counts.get("source_checks", {})
        for name, key in _SOURCE_KEYS:
            setattr(tally, name, source.get(key, 0))
        tally.source_problems = list(source.get("problems_listed", []))
        return tally


_SOURCE_KEYS = (
    ("source_shards", "shards"),
    ("source_with_stats", "shards_with_stats"),
    ("source_tried", "urls_tried"),
    ("source_downloaded", "downloaded"),
    ("source_failed", "failed"),
    ("source_problem_count", "problems"),
)
_SCALARS = (
    "shards",
    "read",
    "written",
    "rejected",
    "phrases",
    "regions",
    "written_without_phrases",
    "written_without_regions",
    "source_shards",
    "source_with_stats",
    "source_tried",
    "source_downloaded",
    "source_failed",
)
