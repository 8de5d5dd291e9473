"""The output folder of a run: one set of files per input shard (all paths local or gs://).

    OUTPUT/parquet/SHARD.parquet       one row per written image of that input shard
    OUTPUT/tfrecord/SHARD.tfrecord     one tf.train.Example per written image (.tfrecord.gz when gzipped)
    OUTPUT/webdataset/SHARD.tar        KEY.txt + KEY.json (+ the image) per written image (--write_webdataset)
    OUTPUT/rejects/SHARD.jsonl         one JSON object per rejected record of that shard
    OUTPUT/stats/SHARD.json            the shard's counts; written last: its presence commits the shard
    OUTPUT/summary.json                counts of every committed shard of the run, config, provenance
    OUTPUT/README.md                   a dataset card: ``datasets.load_dataset(OUTPUT)`` reads parquet/
    OUTPUT/_config.json                the configuration every committed shard of the folder was made with
    OUTPUT/_lease.json                 the run that owns the folder now (``vesl.io.lease``)
    OUTPUT/_temporary/RUN_ID/          files being written by run RUN_ID (removed when it ends)

The data folders are the output sinks' (``vesl.io.sinks``: a sink's name is its folder, its suffix its
files'). SHARD is ``shard_output_id(input path)``: the input file's name without its input format's
ending plus a hash of the full path, so it is the same in every run and two inputs never collide. A
rerun into the same OUTPUT skips shards whose stats file exists (``--overwrite`` redoes them).
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import re
from dataclasses import dataclass

TEMP_DIR = "_temporary"
FOLDER_CONFIG = "_config.json"
# Everything a run (and its report) writes directly under OUTPUT besides the sinks' folders; the rest of
# the folder is the user's.
RUN_NAMES = (
    "rejects",
    "stats",
    TEMP_DIR,
    "summary.json",
    "report.html",
    FOLDER_CONFIG,
    "README.md",
    "_lease.json",
    "_lease.json.lock",
)
BOOKKEEPING_SUFFIXES = {"rejects": ".jsonl", "stats": ".json"}


def owned_names() -> tuple[str, ...]:
    """What VESL owns directly under OUTPUT: every registered sink's folder and the run's own files."""
    from vesl.io.sinks import SINKS

    return (*SINKS, *RUN_NAMES)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@functools.lru_cache(maxsize=4096)  # asked once per record and event, for a handful of shards per worker
def shard_output_id(path: str) -> str:
    """The input file's name without its format's ending (any registered input format's), made safe,
    plus 8 hex digits of the full path's SHA-1."""
    return f"{shard_stem(posixpath.basename(path.rstrip('/')))}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def shard_stem(name: str) -> str:
    from vesl.io.readers import input_endings

    ending = next((e for e in input_endings() if name.lower().endswith(e)), "")
    stem = _UNSAFE.sub("_", name[: len(name) - len(ending)]).strip("._") or "shard"
    return stem[:80]


@dataclass(frozen=True)
class OutputLayout:
    """Paths of one output folder. ``suffixes``: (sink name, file suffix) of the data formats, as
    ``vesl.io.sinks.sink_suffixes`` gives them for the run's WriteConfig; ``run_id`` names the run's own
    temporary folder, so two runs never share one."""

    root: str
    run_id: str = ""
    suffixes: tuple[tuple[str, str], ...] = ()

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root.rstrip("/"), *parts)

    def suffix(self, fmt: str) -> str:
        return dict(self.suffixes).get(fmt) or BOOKKEEPING_SUFFIXES[fmt]

    @property
    def data_formats(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.suffixes)

    def dir(self, fmt: str) -> str:
        return self._join(fmt)

    def path(self, fmt: str, shard_id: str) -> str:
        return self._join(fmt, shard_id + self.suffix(fmt))

    def glob(self, fmt: str) -> str:
        return self._join(fmt, "*" + self.suffix(fmt))

    def temp_dir(self, fmt: str) -> str:
        """Where Beam's file sinks write before renaming (removed when the run ends)."""
        return posixpath.join(self.temp_root, fmt)

    @property
    def temp_root(self) -> str:
        return self._join(TEMP_DIR, self.run_id) if self.run_id else self._join(TEMP_DIR)

    @property
    def temp_parent(self) -> str:
        return self._join(TEMP_DIR)

    @property
    def card_path(self) -> str:
        return self._join("README.md")

    @property
    def folder_config_path(self) -> str:
        return self._join(FOLDER_CONFIG)

    @property
    def summary_path(self) -> str:
        return self._join("summary.json")

    @property
    def rejects_glob(self) -> str:
        return self.glob("rejects")

    @property
    def stats_glob(self) -> str:
        return self.glob("stats")
