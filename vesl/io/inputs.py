"""``--input`` patterns -> the shards to read: which files are data, in which format, and with which
img2dataset sidecars. Decided once, on the machine that builds the pipeline, by listing folders
(names only; one listing per folder, local or any fsspec URL).

Rules (README, "Inputs"):
- A folder is recognised by its content. An **img2dataset output folder** (``NNNNN_stats.json``
  files, or ``NNNNN.parquet`` beside ``NNNNN.tar``, ``NNNNN.tfrecord`` or a ``NNNNN/`` folder) gives
  one shard per ``NNNNN``, in the format of its data: ``NNNNN.tar`` (webdataset), ``NNNNN.tfrecord``,
  ``NNNNN/`` (files), or else ``NNNNN.parquet`` itself (parquet). Its ``NNNNN.parquet`` metadata and
  ``NNNNN_stats.json`` travel with the shard and are never read as data.
- **Any other folder** is searched recursively for ``.tar``/``.tar.gz``/``.tgz``, ``.parquet``,
  ``.tfrecord``/``.tfrecord.gz`` and ``.jsonl`` files (not ``.json``: too many other things are
  JSON); a subfolder that is an img2dataset folder follows the rule above.
- **Skipped**: what the run itself writes in ``--output`` (its ``parquet/``, ``tfrecord/``,
  ``rejects/``, ``stats/``, ``summary.json``...; the rest of that folder may hold input, as
  ``make sample`` does), any other VESL output folder, and names starting with ``.`` or ``_``
  (``.git``, img2dataset's ``_tmp``, VESL's ``_temporary``, ``_SUCCESS``).
- **Globs and files**: each match is a folder (as above) or a file, read as its name says; a file in
  an img2dataset folder takes its sidecars, and a sidecar matched by a glob is left to its shard. A
  matched file of no known format, or a pattern that yields no shard, is an ``InputError``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import fsspec

from vesl.io.layout import OWNED_NAMES
from vesl.io.readers import format_from_name
from vesl.records import InputFormat, InputShard

_STATS = re.compile(r"^(\d+)_stats\.json$")
_NUMBERED = {
    "parquet": re.compile(r"^(\d+)\.parquet$"),
    "tar": re.compile(r"^(\d+)\.tar$"),
    "tfrecord": re.compile(r"^(\d+)\.tfrecord$"),
}
_SHARD_FOLDER = re.compile(r"^\d+$")
FOLDER_FORMATS = ".tar, .tar.gz, .tgz, .parquet, .tfrecord, .tfrecord.gz, .jsonl or an img2dataset output folder"


class InputError(ValueError):
    """An input pattern that names nothing VESL can read (a usage error: raised before any work)."""


@dataclass
class Listing:
    """One folder's entries by name: files and subfolders (full paths, without protocol)."""

    path: str
    files: dict[str, str] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, fs, path: str) -> Listing:
        listing = cls(path)
        for entry in fs.ls(path, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if not name or entry["name"].rstrip("/") == path.rstrip("/"):
                continue
            (listing.folders if entry.get("type") == "directory" else listing.files)[name] = entry["name"].rstrip("/")
        return listing

    @property
    def is_vesl_output(self) -> bool:
        folders = set(self.folders)
        return {"stats", "rejects"} <= folders or ("_temporary" in folders and "summary.json" in self.files)


@dataclass
class Img2datasetFolder:
    """The shards of an img2dataset output folder, and the sidecar files that belong to them."""

    shards: list[InputShard]
    sidecars: set[str]

    @classmethod
    def recognise(cls, listing: Listing) -> Img2datasetFolder | None:
        numbered = {kind: {} for kind in _NUMBERED}
        stats = {}
        for name, path in listing.files.items():
            if m := _STATS.match(name):
                stats[m[1]] = path
            for kind, pattern in _NUMBERED.items():
                if m := pattern.match(name):
                    numbered[kind][m[1]] = path
        folders = {name: path for name, path in listing.folders.items() if _SHARD_FOLDER.match(name)}
        parquet, tar, tfrecord = numbered["parquet"], numbered["tar"], numbered["tfrecord"]
        paired = set(parquet) & (set(tar) | set(tfrecord) | set(folders))
        if not stats and not paired:
            return None
        shards, sidecars = [], set(stats.values())
        for shard_id in sorted(set(stats) | set(parquet) | set(tar) | set(tfrecord) | set(folders)):
            metadata, stat = parquet.get(shard_id), stats.get(shard_id)
            if shard_id in tar:
                shards.append(InputShard(tar[shard_id], InputFormat.WEBDATASET, metadata, stat))
            elif shard_id in tfrecord:
                shards.append(InputShard(tfrecord[shard_id], InputFormat.TFRECORD, metadata, stat))
            elif shard_id in folders:
                shards.append(InputShard(folders[shard_id], InputFormat.FILES, metadata, stat))
            else:  # parquet output (the parquet is the data and lists every URL), or a shard whose data is gone
                path = metadata or posixpath.join(listing.path, f"{shard_id}.parquet")
                shards.append(InputShard(path, InputFormat.PARQUET, path, stat))
                continue
            if metadata:
                sidecars.add(metadata)
        return cls(shards, sidecars)


@dataclass
class Discovery:
    shards: list[InputShard]
    notes: list[str]  # what was skipped and why, for the log


class _Finder:
    def __init__(self, fs, remote: bool, output: str | None):
        self.fs = fs
        self.remote = remote
        self.output = output.rstrip("/") if output else None
        self.exclude = [posixpath.join(self.output, name) for name in OWNED_NAMES] if self.output else []
        self.listings: dict[str, Listing] = {}
        self.notes: list[str] = []

    def full(self, path: str) -> str:
        return self.fs.unstrip_protocol(path) if self.remote else path

    def listing(self, path: str) -> Listing:
        if path not in self.listings:
            self.listings[path] = Listing.of(self.fs, path)
        return self.listings[path]

    def excluded(self, path: str) -> bool:
        return any(path == e or path.startswith(e + "/") for e in self.exclude)

    def _shard(self, shard: InputShard) -> InputShard:
        full = self.full
        return InputShard(
            full(shard.path),
            shard.format,
            full(shard.metadata) if shard.metadata else None,
            full(shard.stats) if shard.stats else None,
        )

    def folder(self, path: str) -> list[InputShard]:
        """Every shard under a folder, by the folder rules."""
        shards: list[InputShard] = []
        pending = [path.rstrip("/")]
        while pending:
            folder = pending.pop()
            if self.excluded(folder):
                self.notes.append(f"skipped {self.full(folder)}: it is this run's output")
                continue
            listing = self.listing(folder)
            if listing.is_vesl_output and folder != self.output:
                self.notes.append(f"skipped {self.full(folder)}: a VESL output folder")
                continue
            img2dataset = Img2datasetFolder.recognise(listing)
            if img2dataset is not None:
                shards += [self._shard(s) for s in img2dataset.shards]
                taken = {s.path for s in img2dataset.shards} | img2dataset.sidecars
                loose = {n: p for n, p in listing.files.items() if p not in taken}
            else:
                loose = listing.files
                pending += [p for name, p in sorted(listing.folders.items(), reverse=True) if not _hidden(name)]
            for name, file_path in sorted(loose.items()):
                fmt = folder_format(name)
                if fmt and not _hidden(name):
                    shards.append(InputShard(self.full(file_path), fmt))
        return shards

    def match(self, path: str, is_folder: bool) -> tuple[list[InputShard], str | None]:
        """The shards of one matched path; (no shards, why) for a sidecar or an unknown file."""
        if self.excluded(path):
            return [], f"{self.full(path)} is in this run's output"
        parent = posixpath.dirname(path.rstrip("/"))
        img2dataset = Img2datasetFolder.recognise(self.listing(parent)) if parent else None
        if img2dataset is not None:
            for shard in img2dataset.shards:
                if shard.path == path.rstrip("/"):
                    return [self._shard(shard)], None
            if path in img2dataset.sidecars:
                return [], f"{self.full(path)} is img2dataset's bookkeeping, read with its shard"
        if is_folder:
            return self.folder(path), None
        fmt = format_from_name(path)
        if fmt is None:
            return [], None
        return [InputShard(self.full(path), fmt)], None


def folder_format(name: str) -> str | None:
    """The format of a file found in a folder: as its name says, but a ``.json`` file is not taken for
    a manifest (name manifests ``.jsonl``, or pass a ``.json`` manifest explicitly)."""
    fmt = format_from_name(name)
    return None if fmt == InputFormat.MANIFEST and not name.lower().endswith(".jsonl") else fmt


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def discover_inputs(patterns: Iterable[str], output: str | None = None) -> Discovery:
    """Shards of ``patterns`` (globs, folders, files; comma-separated or repeated), sorted by path and
    de-duplicated. ``output``: the run's output folder, whose VESL files are never read. Raises ``InputError``
    naming the first pattern that matches nothing readable."""
    found: dict[str, InputShard] = {}
    notes: list[str] = []
    for pattern in (p.strip() for chunk in patterns for p in chunk.split(",")):
        if not pattern:
            continue
        fs, path = fsspec.core.url_to_fs(pattern)
        remote = "://" in pattern
        finder = _Finder(fs, remote, fsspec.core.url_to_fs(output)[1] if output else None)
        if fs.isdir(path):
            matches = [(path, True)]
        elif any(c in path for c in "*?["):
            matches = [(m, fs.isdir(m)) for m in sorted(fs.glob(path))]
        else:
            matches = [(path, False)] if fs.exists(path) else []
        if not matches:
            raise InputError(f"no input matches {pattern!r}")
        shards, unknown, why_not = [], [], []
        for match, is_folder in matches:
            got, reason = finder.match(match, is_folder)
            shards += got
            if reason:
                why_not.append(reason)
            elif not got and not is_folder:
                unknown.append(finder.full(match))
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise InputError(
                f"{unknown[0]}{more}: not a format VESL reads (expected {FOLDER_FORMATS}); narrow {pattern!r}"
            )
        if not shards:
            reason = f": {why_not[0]}" if why_not else f" (looked for {FOLDER_FORMATS})"
            raise InputError(f"{pattern!r} holds no input VESL can read{reason}")
        notes += finder.notes + why_not
        for shard in shards:
            found.setdefault(shard.path, shard)
    return Discovery([found[p] for p in sorted(found)], notes)
