"""File patterns -> files, for any fsspec URL (local, gs://, ...). The one place VESL expands
patterns: pipeline inputs, training readers and TFRecord readers all call ``expand_patterns``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import fsspec


def expand_patterns(patterns: Iterable[str], keep: Callable[[str], bool] = lambda path: True) -> list[str]:
    """Sorted, de-duplicated files matching the patterns: globs, single files, or folders (searched
    recursively, keeping the files ``keep`` accepts). Remote paths keep their protocol. A pattern that
    matches nothing raises FileNotFoundError naming it; comma-separated patterns are split."""
    files: set[str] = set()
    for pattern in (p.strip() for chunk in patterns for p in chunk.split(",")):
        if not pattern:
            continue
        fs, path = fsspec.core.url_to_fs(pattern)
        if fs.isdir(path):
            matches = [m for m in fs.find(path) if keep(m)]
        elif any(c in path for c in "*?["):
            matches = fs.glob(path)
        else:
            matches = [path] if fs.exists(path) else []
        if not matches:
            raise FileNotFoundError(f"no input matches {pattern!r}")
        files.update(fs.unstrip_protocol(m) if "://" in pattern else m for m in matches)
    return sorted(files)
