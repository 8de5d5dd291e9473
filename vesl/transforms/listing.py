"""ListShards and PlanShards: the input listing and the resume plan, done on the workers.

For inputs of 100k+ shards the driver lists nothing: the job graph holds the ``--input`` patterns
only, never a list of shards or of committed shards. A driver-side list grows the graph with the
input (``bench.listing``: 1.0 MB at 100k regularly named img2dataset shards, as Beam compresses
Create's values, so Dataflow's ~10 MB request limit is reached near 1M; the worker-side graph stays
0.34 MB) and the launcher waits for the whole listing before the job starts. The rules are those of
``vesl.io.inputs`` (``ShardFinder``), applied one folder per call:

- ``MatchPatterns``: each pattern is matched (one glob listing for a glob, whatever its number of
  matches); matched files become shards (a file in an img2dataset folder takes its sidecars, from one
  listing of that folder); matched folders are walked.
- ``WalkLevel1..N``: each folder is listed once, after a Reshuffle that spreads folders over workers;
  an img2dataset folder gives its shards (its ``NNNNN/`` folders are shards, never walked), any other
  folder its loose files and its subfolders for the next level. The last level walks what is left of
  its subtree in one call, so deep trees cost no more levels in the graph.
- ``OneShardPerPath``: a shard found by two patterns is the first pattern's, as on the driver.
- ``CheckPatterns``: a pattern that gives no shard fails the job with the driver's ``InputError``
  text, before any shard is read: the shards pass a side input that exists only once every pattern is
  checked.

``PlanShards`` lists ``OUTPUT/stats/`` with Beam's ``fileio.MatchFiles`` and joins it with the listed
shards by (canonical) shard id; what to do with each is ``vesl.resume.plan``'s decision: a shard of
this input with a stats file made with this configuration is kept as committed (its counts go to the
summary, its keys to the duplicate-key pass); every other shard is processed. The folder's configuration itself (``_config.json``) is checked by the launcher before the
job starts, as for a driver-side listing.
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from vesl import progress, resume
from vesl.context import WorkerSettings
from vesl.io.inputs import ShardFinder, input_exists, no_shards_error
from vesl.io.layout import OutputLayout, shard_output_id
from vesl.io.outputs import OutputFolder
from vesl.records import InputShard, KeptShard
from vesl.transforms import METRICS_NAMESPACE

FOLDERS = "folders"
WHY_NOT = "why_not"
COMMITTED = "committed"
WALK_LEVELS = 3  # levels spread over workers; a deeper subtree is walked by one call of the last level

log = logging.getLogger("vesl")


class _FinderFn(beam.DoFn):
    """One ShardFinder per pattern and worker: folder listings are cached within it."""

    def __init__(self, output: str | None):
        self.output = output
        self.finders: dict[str, ShardFinder] = {}

    def finder(self, pattern: str) -> ShardFinder:
        if pattern not in self.finders:
            self.finders[pattern] = ShardFinder.for_pattern(pattern, self.output)[0]
        return self.finders[pattern]

    def log_notes(self, finder: ShardFinder) -> None:
        for note in finder.notes:
            log.info("input: %s", note)
        finder.notes.clear()


class MatchPatternFn(_FinderFn):
    """(pattern index, pattern) -> ((index, pattern), shard) + FOLDERS ((index, pattern), folder) + WHY_NOT."""

    def process(self, indexed):
        index, pattern = indexed
        finder, path = ShardFinder.for_pattern(pattern, self.output)
        self.finders[pattern] = finder
        matches = finder.expand(pattern, path)  # InputError: no match, or a file of no known format
        for reason in matches.why_not:
            log.info("input: %s", reason)
            yield beam.pvalue.TaggedOutput(WHY_NOT, (index, reason))
        for folder in matches.folders:
            yield beam.pvalue.TaggedOutput(FOLDERS, ((index, pattern), folder))
        for shard in matches.shards:
            yield (index, pattern), shard


class WalkFolderFn(_FinderFn):
    """((index, pattern), folder) -> its shards + FOLDERS (its subfolders); ``whole``: walk the subtree."""

    def __init__(self, output: str | None, whole: bool):
        super().__init__(output)
        self.whole = whole
        self.folders = Metrics.counter(METRICS_NAMESPACE, "input_folders_listed")

    def process(self, element):
        tagged, folder = element
        finder = self.finder(tagged[1])
        pending = [folder]
        while pending:
            step = finder.step(pending.pop())
            self.folders.inc()
            for shard in step.shards:
                yield tagged, shard
            if self.whole:
                pending += reversed(step.subfolders)
            else:
                for sub in step.subfolders:
                    yield beam.pvalue.TaggedOutput(FOLDERS, (tagged, sub))
        self.log_notes(finder)


def first_pattern_shard(keyed: tuple[str, list[tuple[int, InputShard]]]) -> InputShard:
    """(path, [(pattern index, shard)]) -> the shard of the first pattern that found it."""
    _, found = keyed
    return min(found, key=lambda t: (t[0], t[1].format, t[1].metadata or "", t[1].stats or ""))[1]


class CheckPatternFn(beam.DoFn):
    """(index, {pattern, shards, why_not}) -> the pattern's shard count; a pattern without one fails."""

    def process(self, joined):
        _, grouped = joined
        patterns = list(grouped["pattern"])
        count = sum(grouped["shards"])
        if patterns and not count:
            raise no_shards_error(patterns[0], sorted(grouped["why_not"]))
        yield count


def _pass_after(shard: InputShard, _checked: int) -> InputShard:
    return shard


class ListShards(beam.PTransform):
    """PBegin -> the InputShards of ``patterns``, one per path, listed on the workers."""

    def __init__(self, patterns: list[str], output: str | None = None, levels: int = WALK_LEVELS):
        super().__init__()
        self.patterns = list(patterns)
        self.output = output
        self.levels = levels

    def expand(self, pbegin):
        patterns = pbegin | "Patterns" >> beam.Create(list(enumerate(self.patterns)))
        matched = patterns | "MatchPatterns" >> beam.ParDo(MatchPatternFn(self.output)).with_outputs(
            FOLDERS, WHY_NOT, main="shards"
        )
        found, folders = [matched.shards], matched[FOLDERS]
        for level in range(1, self.levels + 1):
            walked = (
                folders
                | f"SpreadFolders{level}" >> beam.Reshuffle()
                | f"WalkLevel{level}"
                >> beam.ParDo(WalkFolderFn(self.output, whole=level == self.levels)).with_outputs(
                    FOLDERS, main="shards"
                )
            )
            found.append(walked.shards)
            folders = walked[FOLDERS]
        found = found | "AllFound" >> beam.Flatten()
        checked = (
            {
                "pattern": patterns,
                "shards": found | "PerPattern" >> beam.Map(lambda t: (t[0][0], 1)),
                "why_not": matched[WHY_NOT],
            }
            | "JoinPatterns" >> beam.CoGroupByKey()
            | "CheckPatterns" >> beam.ParDo(CheckPatternFn())
            | "CountFound" >> beam.CombineGlobally(sum)
        )
        return (
            found
            | "ByPath" >> beam.Map(lambda t: (t[1].path, (t[0][0], t[1])))
            | "GroupByPath" >> beam.GroupByKey()
            | "OneShardPerPath" >> beam.Map(first_pattern_shard)
            | "AfterCheck" >> beam.Map(_pass_after, beam.pvalue.AsSingleton(checked))
        )


def stats_shard_id(path: str, suffix: str) -> str:
    return path.rsplit("/", 1)[-1][: -len(suffix)]


class PlanShardFn(beam.DoFn):
    """(canonical shard id, {shard, stats}) -> each shard to process, or COMMITTED (a KeptShard) for one
    that resumes a committed shard: the decisions are ``vesl.resume``'s, as
    the launcher's for a driver-side listing."""

    def __init__(self, layout: OutputLayout, accepted_digests: tuple[str, ...], overwrite: bool, progress_dir=None):
        self.layout = layout
        self.accepted_digests = accepted_digests
        self.overwrite = overwrite
        self.progress_dir = progress_dir
        self.kept = Metrics.counter(METRICS_NAMESPACE, "shards_already_committed")
        self.changed = Metrics.counter(METRICS_NAMESPACE, "shards_redone_input_changed")
        self.gone = Metrics.counter(METRICS_NAMESPACE, "shards_kept_input_gone")

    def setup(self):
        self.progress = progress.counters_for(self.progress_dir)

    def process(self, joined):
        _, grouped = joined
        suffix = self.layout.suffix("stats")
        committed = {stats_shard_id(path, suffix): path for path in grouped["stats"]}
        shards = list(grouped["shard"])
        for shard in shards:
            yield from self.plan(shard, committed)
        if not shards:  # committed by a run over another input, or an input that is gone
            for shard_id, path in committed.items():
                stats = self.read(path)
                if not input_exists(stats.get("input")):
                    self.gone.inc()
                    log.warning("committed shard %s is kept though its input %s is gone", shard_id, stats["input"])
                    yield beam.pvalue.TaggedOutput(COMMITTED, KeptShard(shard_id, stats["counts"], input_gone=True))

    def plan(self, shard, committed: dict[str, str]):
        shard_id = shard_output_id(shard.path)
        decision = resume.plan([shard_id], committed, self.overwrite)
        if decision.keep:
            kept = decision.keep[shard_id]
            stats = self.read(committed[kept])
            if not resume.changed(stats.get("input_identity"), shard.identity):
                self.kept.inc()
                yield beam.pvalue.TaggedOutput(COMMITTED, KeptShard(kept, stats["counts"]))
                return
            self.changed.inc()
            log.warning("committed shard %s is redone: its input %s changed since", kept, shard.path)
            decision = resume.redo(decision, [shard_id])
        self.uncommit(decision, shard_id)
        if self.progress is not None:
            self.progress.add(progress.SHARDS_LISTED)
            self.progress.flush()
        yield shard

    def uncommit(self, decision: resume.ResumePlan, shard_id: str) -> None:
        """A commit under VESL 0.1's name goes with its files (they would stay beside the new ones); one under
        the shard's own id loses its stats file when its input changed (the files are rewritten)."""
        for old in decision.uncommit:
            if old != shard_id or not self.overwrite:
                OutputFolder(self.layout.root).uncommit(old)

    def read(self, stats_path: str) -> dict:
        import fsspec

        with fsspec.open(stats_path, "r") as f:
            stats = json.load(f)
        digest = stats.get("provenance", {}).get("config_digest")
        if digest not in self.accepted_digests:
            mine = self.accepted_digests[0]
            raise resume.another_configuration(self.layout.root, digest, mine, stats_path, resume.REDO)
        return stats


class PlanShards(beam.PTransform):
    """InputShards -> the shards to process (main) + COMMITTED: KeptShards, this input's shards that
    earlier runs committed. ``accepted_digests``: this configuration's digest first, then what
    earlier VESL versions called it. ``overwrite``: every shard is processed again."""

    def __init__(
        self,
        layout: OutputLayout,
        accepted_digests: tuple[str, ...],
        overwrite: bool,
        workers: WorkerSettings = WorkerSettings(),
    ):
        super().__init__()
        self.layout = layout
        self.accepted_digests = tuple(accepted_digests)
        self.overwrite = overwrite
        self.progress_dir = workers.progress_dir

    def expand(self, shards):
        suffix = self.layout.suffix("stats")
        stats = (
            shards.pipeline
            | "MatchCommitted" >> fileio.MatchFiles(self.layout.stats_glob, fileio.EmptyMatchTreatment.ALLOW)
            | "CommittedById" >> beam.Map(lambda m: (resume.canonical_id(stats_shard_id(m.path, suffix)), m.path))
        )
        by_id = shards | "ShardsById" >> beam.Map(
            lambda shard: (resume.canonical_id(shard_output_id(shard.path)), shard)
        )
        planned = PlanShardFn(self.layout, self.accepted_digests, self.overwrite, self.progress_dir)
        return (
            {"shard": by_id, "stats": stats}
            | "JoinCommitted" >> beam.CoGroupByKey()
            | "Plan" >> beam.ParDo(planned).with_outputs(COMMITTED, main="to_process")
        )
