"""WriteShardOutputs: per input shard, one file per output sink (``vesl.io.sinks``: Parquet, TFRecord,
WebDataset) and a rejects file, through Beam's file sinks (``fileio.WriteToFiles``, which writes to a
temporary name and renames), then the shard's stats file, written last and atomically: its presence
commits the shard. Then summary.json for the whole run.

Files are named after the input shard (``vesl.io.layout``), so a rerun rewrites exactly the shards it
redoes and a shard is either committed with all its files or not committed at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.value_provider import StaticValueProvider

from vesl import progress
from vesl.accounting import Tally
from vesl.config import WriteConfig
from vesl.context import RunContext
from vesl.io.layout import OutputLayout, shard_output_id
from vesl.io.lease import check_holder, release_if_held
from vesl.io.sinks import OutputSink, enabled_sinks
from vesl.transforms import METRICS_NAMESPACE


class BeamFileSink(fileio.FileSink):
    """An output sink (``vesl.io.sinks``) as Beam's ``FileSink``: one copy per file it writes."""

    def __init__(self, sink: OutputSink):
        self.sink = sink

    def create_metadata(self, destination: str, full_file_name: str):
        compression = CompressionTypes.GZIP if self.sink.compression == "gzip" else CompressionTypes.UNCOMPRESSED
        return fileio.FileMetadata(mime_type="application/octet-stream", compression_type=compression)

    def open(self, fh) -> None:
        self.sink.open(fh)

    def write(self, encoded) -> None:
        self.sink.write(encoded)

    def flush(self) -> None:
        self.sink.close()


class JsonLinesSink(fileio.TextSink):
    """Dicts -> one JSON object per line."""

    def write(self, record: dict) -> None:
        super().write(json.dumps(record, ensure_ascii=False, sort_keys=True))


def _named(layout: OutputLayout, fmt: str):
    suffix = layout.suffix(fmt)
    return lambda window, pane, shard_index, total_shards, compression, destination: destination + suffix


def write_empty_file(path: str, sink: fileio.FileSink) -> None:
    """A shard with no record of a format still gets its (empty, valid) file."""
    metadata = sink.create_metadata("", path)
    with (
        naming_the_file(path),
        FileSystems.create(path, mime_type=metadata.mime_type, compression_type=metadata.compression_type) as fh,
    ):
        sink.open(fh)
        sink.flush()


def write_atomically(path: str, text: str, temp_dir: str) -> None:
    """``path`` appears whole or not at all: written in the run's temporary folder (which the launcher
    removes, whatever way the run ends), then renamed into place."""
    temp = f"{temp_dir.rstrip('/')}/{uuid.uuid4().hex}-{path.rsplit('/', 1)[-1]}"
    for folder in (temp_dir, path.rsplit("/", 1)[0]):
        try:
            FileSystems.mkdirs(folder)
        except OSError:  # there already (another commit made it); on object stores folders need no making
            pass
    with naming_the_file(temp), FileSystems.create(temp) as fh:
        fh.write(text.encode("utf-8"))
    FileSystems.rename([temp], [path])


def remove_run_temporary(layout: OutputLayout) -> None:
    """Remove this run's temporary folder, and ``_temporary`` itself once no other run's is left."""

    import fsspec

    fs, _ = fsspec.core.url_to_fs(layout.root)
    if fs.exists(layout.temp_root):
        fs.rm(layout.temp_root, recursive=True)
    with contextlib.suppress(OSError):  # another run's folder is still in it
        fs.rmdir(layout.temp_parent)


def finish_run(layout: OutputLayout) -> bool:
    """Remove this run's temporary files and give the output lease back (if still this run's)."""
    remove_run_temporary(layout)
    return release_if_held(layout.root, layout.run_id)


class CommitShardFn(beam.DoFn):
    """Once every file of a shard is in place, write its stats file (the commit) and pass its tally on."""

    def __init__(
        self, layout: OutputLayout, sinks: dict[str, Any], header: dict[str, Any], progress_dir: str | None = None
    ):
        self.layout = layout
        self.sinks = sinks
        self.header = header
        self.progress_dir = progress_dir
        self.committed = Metrics.counter(METRICS_NAMESPACE, progress.SHARDS_COMMITTED)

    def setup(self):
        self.progress = progress.counters_for(self.progress_dir)

    def process(self, element):
        shard_id, grouped = element
        tally = Tally()
        for part in grouped["tally"]:
            tally.merge(part)
        files = {}
        for fmt, sink in self.sinks.items():
            path = self.layout.path(fmt, shard_id)
            if not list(grouped[fmt]):
                write_empty_file(path, sink)
            files[fmt] = path
        # Fault injection for the kill-and-rerun test: hold each commit so the run can be killed midway.
        time.sleep(float(os.environ.get("VESL_TEST_COMMIT_DELAY_S", "0")))
        if self.layout.run_id:  # the fence: a run whose lease was taken over commits nothing more
            check_holder(self.layout.root, self.layout.run_id)
        inputs = sorted(set(grouped["input"]), key=lambda shard: shard.path)
        source = inputs[0] if inputs else None
        stats = {
            **self.header,
            "shard_id": shard_id,
            "input": source.path if source else None,
            "input_format": source.format if source else None,
            "input_sidecars": {"metadata": source.metadata, "stats": source.stats} if source else None,
            "input_identity": source.identity if source else None,
            "files": files,
            "counts": tally.to_dict(),
        }
        write_atomically(self.layout.path("stats", shard_id), json.dumps(stats, indent=2), self.layout.temp_root)
        self.committed.inc()
        if self.progress is not None:
            self.progress.add(progress.SHARDS_COMMITTED)
            self.progress.flush()
        yield tally


class TallyFn(beam.CombineFn):
    def create_accumulator(self) -> Tally:
        return Tally()

    def add_input(self, tally: Tally, event) -> Tally:
        return tally.add(event)

    def merge_accumulators(self, tallies: Iterable[Tally]) -> Tally:
        merged = Tally()
        for tally in tallies:
            merged.merge(tally)
        return merged

    def extract_output(self, tally: Tally) -> Tally:
        return tally


class MergeTalliesFn(TallyFn):
    def add_input(self, tally: Tally, other: Tally) -> Tally:
        return tally.merge(other)

    def extract_output(self, tally: Tally) -> dict[str, Any]:
        return tally.to_dict()


class WriteShardOutputs(beam.PTransform):
    """(labeled images, rejects, keyed accounting events, input shards, previous, shard count) ->
    committed shards and summary.json. ``previous``: the counts of shards committed by earlier runs that
    this run keeps; ``shard count``: a one-element PCollection, the input's shards (processed + kept)."""

    def __init__(self, config: WriteConfig, run: RunContext, config_json: str, summary_header: dict[str, Any]):
        super().__init__()
        self.config = config
        self.layout = run.layout
        self.provenance = run.provenance
        self.release_lease = run.release_lease
        self.progress_dir = run.workers.progress_dir
        self.config_json = config_json
        self.summary_header = summary_header

    def expand(self, inputs):
        labeled, rejects, events, input_shards, previous, shard_count, gone = inputs
        layout = self.layout
        sinks: dict[str, fileio.FileSink] = {}
        written: dict[str, beam.PCollection] = {}
        for sink in enabled_sinks(self.config, self.provenance, self.config_json):
            name = sink.name.title()
            sinks[sink.name] = BeamFileSink(sink)
            written[sink.name] = (
                labeled
                | f"Encode{name}" >> beam.Map(lambda item, sink=sink: (_shard_of(item), sink.encode(item)))
                | f"Write{name}" >> self._write(sink.name, sinks[sink.name])
            )
        sinks["rejects"] = JsonLinesSink()
        written["rejects"] = (
            rejects
            | "ToRejectJson" >> beam.Map(lambda r: (shard_output_id(r.shard), r.to_json_dict()))
            | "WriteRejects" >> self._write("rejects", sinks["rejects"])
        )
        grouped = {
            "tally": events | "TallyPerShard" >> beam.CombinePerKey(TallyFn()),
            "input": input_shards | "KeyInputs" >> beam.Map(lambda shard: (shard_output_id(shard.path), shard)),
        }
        for fmt, results in written.items():
            grouped[fmt] = results | f"Key{fmt.title()}Files" >> beam.Map(lambda r: (r.destination, r.file_name))
        header = {key: self.summary_header[key] for key in ("schema_version", "provenance")}
        committed = (
            grouped
            | "GroupShardFiles" >> beam.CoGroupByKey()
            | "CommitShards" >> beam.ParDo(CommitShardFn(layout, sinks, header, self.progress_dir))
        )
        summary_header = self.summary_header
        summary = (
            (committed, previous | "PreviousTallies" >> beam.Map(Tally.from_dict))
            | "AllShards" >> beam.Flatten()
            | "MergeShardCounts" >> beam.CombineGlobally(MergeTalliesFn())
            | "ToSummaryJson"
            >> beam.Map(
                lambda counts, n, gone: json.dumps(
                    {**summary_header, "input_shards": n, "input_shards_gone": gone, "counts": counts}, indent=2
                ),
                beam.pvalue.AsSingleton(shard_count),
                beam.pvalue.AsSingleton(gone),
            )
            | "WriteSummary" >> beam.Map(lambda text: write_atomically(layout.summary_path, text, layout.temp_root))
        )
        if self.release_lease and layout.run_id:  # no launcher waits: the job cleans up after itself
            summary | "FinishRun" >> beam.Map(lambda _: finish_run(layout))
        return summary

    def _write(self, fmt: str, sink: fileio.FileSink) -> beam.PTransform:
        # max_writers_per_bundle=0 sends every record through WriteToFiles' grouped path, so each
        # shard id gets exactly one file (per-bundle files would collide on the shard's name).
        return fileio.WriteToFiles(
            path=self.layout.dir(fmt),
            destination=lambda keyed: keyed[0],
            sink=lambda destination: _Unkeyed(sink),
            file_naming=_named(self.layout, fmt),
            shards=1,
            max_writers_per_bundle=0,
            # WriteToFiles reads its temp directory with .get() (a ValueProvider), not as a string.
            temp_directory=StaticValueProvider(str, self.layout.temp_dir(fmt)),
        )


def _shard_of(item) -> str:
    return shard_output_id(item.record.shard)


class _Unkeyed(fileio.FileSink):
    """Feeds the value of (shard id, value) pairs to a sink; a failed write names its file."""

    def __init__(self, sink: fileio.FileSink):
        import copy

        self.sink = copy.deepcopy(sink)  # one writer state per file
        self.path = ""

    def create_metadata(self, destination, full_file_name):
        self.path = full_file_name  # Beam asks for the metadata of each file just before it opens it
        return self.sink.create_metadata(destination, full_file_name)

    def open(self, fh) -> None:
        with naming_the_file(self.path):
            self.sink.open(fh)

    def write(self, keyed) -> None:
        try:  # per record: a plain try, not naming_the_file's context manager (~1 us a record)
            self.sink.write(keyed[1])
        except OSError as exc:
            raise_naming(exc, self.path)

    def flush(self) -> None:
        with naming_the_file(self.path):
            self.sink.flush()


@contextlib.contextmanager
def naming_the_file(path: str) -> Iterator[None]:
    """A system error without a file name (a write into a full disk: ``[Errno 28] No space left on device``)
    is raised again with ``path``, so the one line a failed run says names where it failed."""
    try:
        yield
    except OSError as exc:
        raise_naming(exc, path)


def raise_naming(exc: OSError, path: str) -> NoReturn:
    """Raise ``exc`` again, as a copy naming ``path`` when it names no file (and has an errno to say)."""
    if exc.filename is None and exc.errno is not None and path:
        raise type(exc)(exc.errno, exc.strerror, path) from exc
    raise exc
