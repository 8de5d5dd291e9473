"""The resume plan: which input shards a run processes, which shards committed by earlier runs it keeps,
and which commits it undoes first (``--overwrite``). Pure: no I/O and no Beam. The launcher applies it
to its own listing of the input and of the output folder (``vesl.launch``); with a listing on the
workers, ``PlanShards`` applies it to each shard they list (``vesl.transforms.listing``).

Rules (README, "Output"):
- A committed shard is one whose stats file exists; an input shard resumes the committed shard of its
  id (``vesl.io.layout.shard_output_id``), or of the name VESL 0.1 gave it: 0.1 left ``.tfrecord``
  endings in the id (``00000.tfrecord-<hash>``), so ids are matched by their canonical form.
- One folder holds one configuration. A committed shard is accepted when its config digest is this
  run's, or what this run's configuration was called by an earlier VESL (``VeslConfig.earlier_digests``);
  any other is a ``ConfigConflict``, the one "another configuration" error.
- ``--overwrite`` uncommits this input's committed shards (a shard under its 0.1 name is removed, since
  the rerun writes it under its new name) and processes every input shard.
- A committed shard whose input changed since (its recorded identity differs from the listing's: a
  rewritten file) is uncommitted and redone. A committed shard whose input is gone is kept (its rows
  stay in the output) and counted as such in the summary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

REDO = "pass --overwrite to redo them (only when this input covers them all), or write elsewhere"
REDO_ON_WORKERS = (
    "write elsewhere, or redo them with --list_shards driver --overwrite (which checks that this input covers them all)"
)


class ConfigConflict(ValueError):
    """Committed shards of another configuration stand in the way (a usage error, said in one line)."""


def another_configuration(root: str, digest: str | None, mine: str, where: str, remedy: str, count: int = 0):
    """The one "another configuration" error: which folder, which digests, where it was seen, what to do."""
    held = f"{count} committed shards" if count else "shards"
    return ConfigConflict(
        f"{root!r} holds {held} made with another configuration (config digest {digest}, this run {mine}; "
        f"see {where}); {remedy}"
    )


def canonical_id(shard_id: str) -> str:
    """A shard id with any registered input ending cut from its name part: the same for an input's
    id and for the id VESL 0.1 gave it (``00000.tfrecord-1a2b3c4d`` -> ``00000-1a2b3c4d``)."""
    from vesl.io.layout import shard_stem

    stem, dash, digest = shard_id.rpartition("-")
    return f"{shard_stem(stem)}{dash}{digest}" if dash else shard_id


def match(input_ids: Iterable[str], committed_ids: Iterable[str]) -> dict[str, str]:
    """input shard id -> the id of the committed shard it resumes (its own id first, else its 0.1 name)."""
    committed = set(committed_ids)
    by_canonical: dict[str, str] = {}
    for shard_id in sorted(committed):
        by_canonical.setdefault(canonical_id(shard_id), shard_id)
    matched = {}
    for shard_id in input_ids:
        found = shard_id if shard_id in committed else by_canonical.get(canonical_id(shard_id))
        if found is not None:
            matched[shard_id] = found
    return matched


@dataclass(frozen=True)
class ResumePlan:
    process: tuple[str, ...]  # input shard ids to run
    keep: dict[str, str]  # input shard id -> committed shard id kept as it is
    uncommit: tuple[str, ...]  # committed shard ids to undo before the run
    outside: tuple[str, ...]  # committed shard ids of no input of this run


def plan(input_ids: Iterable[str], committed_ids: Iterable[str], overwrite: bool) -> ResumePlan:
    """What to do with each input shard, given the folder's committed shards."""
    inputs, committed = sorted(set(input_ids)), set(committed_ids)
    matched = match(inputs, committed)
    outside = tuple(sorted(committed - set(matched.values())))
    if overwrite:
        return ResumePlan(tuple(inputs), {}, tuple(sorted(matched.values())), outside)
    return ResumePlan(tuple(i for i in inputs if i not in matched), matched, (), outside)


def changed(recorded: str | None, current: str | None) -> bool:
    """Whether a committed shard's input is not what it was when the shard was committed (its identity:
    ``vesl.io.inputs.input_identity``). Unknown on either side (a folder written before VESL recorded
    identities, an input given as a bare path) counts as unchanged: such a shard resumes as before."""
    return recorded is not None and current is not None and recorded != current


def redo(decision: ResumePlan, input_ids: Iterable[str]) -> ResumePlan:
    """``decision`` with these kept inputs processed again instead, their commits undone first."""
    again = set(input_ids) & set(decision.keep)
    if not again:
        return decision
    keep = {i: c for i, c in decision.keep.items() if i not in again}
    uncommit = tuple(sorted({*decision.uncommit, *(decision.keep[i] for i in again)}))
    return ResumePlan(tuple(sorted({*decision.process, *again})), keep, uncommit, decision.outside)


def foreign(digests: dict[str | None, str], accepted_digests: Iterable[str]) -> dict[str | None, str]:
    """The folder's config digests (digest -> where one was seen) that are not this configuration's."""
    mine = set(accepted_digests)
    return {d: where for d, where in digests.items() if d not in mine}
