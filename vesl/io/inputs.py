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

import hashlib
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import fsspec

from vesl.io.layout import owned_names
from vesl.io.readers import FORMATS, describe_endings, format_from_name
from vesl.io.readers.img2dataset import METADATA_FORMAT, METADATA_NAME, STATS_NAME
from vesl.records import InputShard


class InputError(ValueError):
    """An input pattern that names nothing VESL can read (a usage error: raised before any work)."""


def input_exists(path: str | None) -> bool:
    """Whether a committed shard's recorded input is still there (not recorded: said to be)."""
    if not path:
        return True
    fs, stripped = fsspec.core.url_to_fs(path)
    return fs.exists(stripped)


def input_identity(info: dict) -> str:
    """A file's identity from what a listing says of it (no read): its size and, where the store gives
    one, a content checksum (GCS's crc32c, an md5 or an ETag: a rewrite with the same bytes keeps it), else
    its modification time (local files: touching one changes it)."""
    size = info.get("size")
    for key in ("crc32c", "md5Hash", "ETag", "etag"):
        if info.get(key):
            return f"size={size};{key}={info[key]}"
    for key in ("mtime", "LastModified", "updated", "generation", "created"):
        if info.get(key) is not None:
            value = info[key]
            return f"size={size};{key}={value.isoformat() if hasattr(value, 'isoformat') else value!r}"
    return f"size={size}"


@dataclass
class Listing:
    """One folder's entries by name: files and subfolders (full paths, without protocol), and what the
    listing said of each (``infos``, by path: size, checksum or modification time)."""

    path: str
    files: dict[str, str] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    infos: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def of(cls, fs, path: str) -> Listing:
        listing = cls(path)
        for entry in fs.ls(path, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if not name or entry["name"].rstrip("/") == path.rstrip("/"):
                continue
            full = entry["name"].rstrip("/")
            (listing.folders if entry.get("type") == "directory" else listing.files)[name] = full
            listing.infos[full] = entry
        return listing

    @property
    def is_vesl_output(self) -> bool:
        folders = set(self.folders)
        return {"stats", "rejects"} <= folders or ("_temporary" in folders and "summary.json" in self.files)


def numbered(entries: dict[str, str], pattern: str | re.Pattern) -> dict[str, str]:
    """{shard number: path} of the entries whose name matches ``pattern`` (group 1: the number)."""
    return {m[1]: path for name, path in entries.items() if (m := re.match(pattern, name))}


@dataclass
class Img2datasetFolder:
    """The shards of an img2dataset output folder, and the sidecar files that belong to them."""

    shards: list[InputShard]
    sidecars: set[str]

    @classmethod
    def recognise(cls, listing: Listing) -> Img2datasetFolder | None:
        """img2dataset's folder by its names: ``NNNNN_stats.json`` files, or ``NNNNN.parquet`` (metadata) beside
        another file (or folder) of the same number. A number's data is the first registered format present;
        its ``NNNNN.parquet`` is its metadata, or its data when nothing else is (img2dataset's parquet output
        lists every URL in the data file)."""
        stats = numbered(listing.files, STATS_NAME)
        metadata = numbered(listing.files, METADATA_NAME)
        data: dict[str, tuple[str, str]] = {}  # number -> (format, path)
        for name, spec in FORMATS.items():
            if spec.img2dataset:
                entries = listing.folders if spec.folder else listing.files
                for number, path in numbered(entries, spec.img2dataset).items():
                    data.setdefault(number, (name, path))
        if not stats and not any(n in metadata and path != metadata[n] for n, (_, path) in data.items()):
            return None
        shards, sidecars = [], set(stats.values())
        for number in sorted(set(stats) | set(data)):
            meta, stat = metadata.get(number), stats.get(number)
            # no data at all: the shard is named by its (missing) metadata file, and read as one
            fmt, path = data.get(number, (METADATA_FORMAT, posixpath.join(listing.path, f"{number}.parquet")))
            if path == meta or number not in data:
                shards.append(InputShard(path, fmt, path, stat))
                continue
            shards.append(InputShard(path, fmt, meta, stat))
            if meta:
                sidecars.add(meta)
        return cls(shards, sidecars)


@dataclass
class Discovery:
    shards: list[InputShard]
    notes: list[str]  # what was skipped and why, for the log


@dataclass
class FolderStep:
    """What one folder's listing gives: its shards, and the subfolders still to walk."""

    shards: list[InputShard]
    subfolders: list[str]


class ShardFinder:
    """The folder rules for one pattern's filesystem. The driver walks every folder itself
    (``discover_inputs``); ``vesl.transforms.listing`` walks them on the workers, one ``step`` per
    folder, with the same rules. Paths are without protocol; shards carry the full URL."""

    def __init__(self, fs, remote: bool, output: str | None):
        self.fs = fs
        self.remote = remote
        self.output = output.rstrip("/") if output else None
        self.exclude = [posixpath.join(self.output, name) for name in owned_names()] if self.output else []
        self.listings: dict[str, Listing] = {}
        self.infos: dict[str, dict] = {}  # path -> what a listing (or a glob) said of it
        self.img2dataset: dict[str, tuple[Img2datasetFolder | None, dict[str, InputShard]]] = {}
        self.notes: list[str] = []

    @classmethod
    def for_pattern(cls, pattern: str, output: str | None = None) -> tuple[ShardFinder, str]:
        """The finder for ``pattern``'s filesystem and the pattern's path on it."""
        fs, path = fsspec.core.url_to_fs(pattern)
        return cls(fs, "://" in pattern, fsspec.core.url_to_fs(output)[1] if output else None), path

    def full(self, path: str) -> str:
        return self.fs.unstrip_protocol(path) if self.remote else path

    def listing(self, path: str) -> Listing:
        if path not in self.listings:
            self.listings[path] = Listing.of(self.fs, path)
            self.infos.update(self.listings[path].infos)
        return self.listings[path]

    def identity(self, path: str, folder: bool = False) -> str:
        """A shard file's identity (``input_identity``) from a listing already made, else one ``info`` call;
        a ``files`` folder's from its own listing (its members' names and identities)."""
        if folder:
            members = sorted(self.listing(path).infos.items())
            text = "\n".join(f"{posixpath.basename(p)}:{input_identity(info)}" for p, info in members)
            return f"files={len(members)};sha1={hashlib.sha1(text.encode()).hexdigest()[:16]}"
        info = self._info(path)
        if info is None:
            raise FileNotFoundError(path)
        return input_identity(info)

    def img2dataset_folder(self, path: str) -> tuple[Img2datasetFolder | None, dict[str, InputShard]]:
        """The folder as img2dataset output (or None), and its shards by data path; once per folder, so a glob
        of 100k files in one folder costs one listing and no search per file."""
        if path not in self.img2dataset:
            folder = Img2datasetFolder.recognise(self.listing(path))
            self.img2dataset[path] = (folder, {s.path: s for s in folder.shards} if folder else {})
        return self.img2dataset[path]

    def excluded(self, path: str) -> bool:
        return any(path == e or path.startswith(e + "/") for e in self.exclude)

    def _shard(self, shard: InputShard) -> InputShard:
        """The shard with full paths (the pattern's protocol) and its identity: its data's, and its sidecars'."""
        full = self.full
        parts = [self.identity(shard.path, folder=FORMATS[shard.format].folder)]
        parts += [self.identity(p) for p in (shard.metadata, shard.stats) if p and p != shard.path and self._exists(p)]
        return InputShard(
            full(shard.path),
            shard.format,
            full(shard.metadata) if shard.metadata else None,
            full(shard.stats) if shard.stats else None,
            " | ".join(parts),
        )

    def _exists(self, path: str) -> bool:
        """A sidecar img2dataset should have written may be missing (an unfinished shard): that is said
        by the shard's source check, not here."""
        return self._info(path) is not None

    def _info(self, path: str) -> dict | None:
        """The path's listing entry: from a listing already made, else one ``info`` call (kept, so the
        path's identity costs no second call on an object store); None when the path is not there."""
        if path not in self.infos:
            try:
                self.infos[path] = self.fs.info(path)
            except FileNotFoundError:
                return None
        return self.infos[path]

    def step(self, folder: str) -> FolderStep:
        """One folder by the folder rules: the shards it holds itself, and the subfolders to walk."""
        folder = folder.rstrip("/")
        if self.excluded(folder):
            self.notes.append(f"skipped {self.full(folder)}: it is this run's output")
            return FolderStep([], [])
        listing = self.listing(folder)
        if listing.is_vesl_output and folder != self.output:
            self.notes.append(f"skipped {self.full(folder)}: a VESL output folder")
            return FolderStep([], [])
        shards: list[InputShard] = []
        subfolders: list[str] = []
        img2dataset, _ = self.img2dataset_folder(folder)
        if img2dataset is not None:
            shards += [self._shard(s) for s in img2dataset.shards]
            taken = {s.path for s in img2dataset.shards} | img2dataset.sidecars
            loose = {n: p for n, p in listing.files.items() if p not in taken}
        else:
            loose = listing.files
            subfolders = [p for name, p in sorted(listing.folders.items()) if not _hidden(name)]
        for name, file_path in sorted(loose.items()):
            fmt = format_from_name(name, searched=True)
            if fmt and not _hidden(name):
                shards.append(self._shard(InputShard(file_path, fmt)))
        return FolderStep(shards, subfolders)

    def folder(self, path: str) -> list[InputShard]:
        """Every shard under a folder, by the folder rules."""
        shards: list[InputShard] = []
        pending = [path]
        while pending:
            step = self.step(pending.pop())
            shards += step.shards
            pending += reversed(step.subfolders)
        return shards

    def match(self, path: str, is_folder: bool) -> tuple[list[InputShard], str | None]:
        """The shards of one matched file (a folder match gives none here: walk it); (no shards, why) for a
        sidecar or a file in this run's output; (no shards, None) for a file of no known format."""
        if self.excluded(path):
            return [], f"{self.full(path)} is in this run's output"
        parent = posixpath.dirname(path.rstrip("/"))
        img2dataset, by_path = self.img2dataset_folder(parent) if parent else (None, {})
        if img2dataset is not None:
            if path.rstrip("/") in by_path:
                return [self._shard(by_path[path.rstrip("/")])], None
            if path in img2dataset.sidecars:
                return [], f"{self.full(path)} is img2dataset's bookkeeping, read with its shard"
        if is_folder:
            return [], None
        fmt = format_from_name(path)
        if fmt is None:
            return [], None
        return [self._shard(InputShard(path, fmt))], None

    def expand(self, pattern: str, path: str) -> PatternMatches:
        """One pattern: the shards its file matches give, the folders it matches (to walk), and why matches
        gave nothing. Raises ``InputError`` when it matches nothing, or matches a file of no known format."""
        if self.fs.isdir(path):
            matches = [(path, True)]
        elif any(c in path for c in "*?["):
            # detail=True: the listing says which matches are folders, without a call per match
            found = self.fs.glob(path, detail=True)
            self.infos.update(found)
            matches = [(m, found[m].get("type") == "directory") for m in sorted(found)]
        else:
            matches = [(path, False)] if self._exists(path) else []
        if not matches:
            raise InputError(f"no input matches {pattern!r}")
        result = PatternMatches([], [], [])
        unknown = []
        for match, is_folder in matches:
            got, reason = self.match(match, is_folder)
            result.shards += got
            if reason:
                result.why_not.append(reason)
            elif is_folder and not got:
                result.folders.append(match)
            elif not got:
                unknown.append(self.full(match))
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise InputError(
                f"{unknown[0]}{more}: not a format VESL reads (expected {describe_endings()}); narrow {pattern!r}"
            )
        return result


@dataclass
class PatternMatches:
    shards: list[InputShard]
    folders: list[str]  # matched folders, still to walk
    why_not: list[str]  # why some matches gave no shard (for the error when the pattern gives none)


def no_shards_error(pattern: str, why_not: list[str]) -> InputError:
    reason = f": {why_not[0]}" if why_not else f" (looked for {describe_endings()})"
    return InputError(f"{pattern!r} holds no input VESL can read{reason}")


def split_patterns(patterns: Iterable[str]) -> list[str]:
    """``--input`` values, repeated or comma-separated, in order, blanks dropped."""
    return [p for p in (p.strip() for chunk in patterns for p in chunk.split(",")) if p]


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def discover_inputs(patterns: Iterable[str], output: str | None = None) -> Discovery:
    """Shards of ``patterns`` (globs, folders, files; comma-separated or repeated), sorted by path and
    de-duplicated (a shard found by two patterns is the first one's). ``output``: the run's output folder,
    whose VESL files are never read. Raises ``InputError`` naming the first pattern that matches nothing
    readable."""
    found: dict[str, InputShard] = {}
    notes: list[str] = []
    for pattern in split_patterns(patterns):
        finder, path = ShardFinder.for_pattern(pattern, output)
        matches = finder.expand(pattern, path)
        shards = matches.shards + [s for folder in matches.folders for s in finder.folder(folder)]
        if not shards:
            raise no_shards_error(pattern, matches.why_not)
        notes += finder.notes + matches.why_not
        for shard in shards:
            found.setdefault(shard.path, shard)
    return Discovery([found[p] for p in sorted(found)], notes)
