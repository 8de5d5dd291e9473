"""The input format registry: each format declared once, and everything that names input files
(discovery, the readers, the output layout's shard ids) reads that one declaration."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from tests.conftest import IMG2DATASET
from vesl.config import ReadConfig
from vesl.io import readers
from vesl.io.inputs import discover_inputs
from vesl.io.layout import shard_output_id
from vesl.io.readers import FORMATS, format_from_name, input_endings, read_shard
from vesl.io.readers.base import InputFormat
from vesl.records import ImageRecord, InputShard


@pytest.mark.parametrize("spec", FORMATS.values(), ids=lambda spec: spec.name)
def test_every_registered_ending_names_its_format_and_is_cut_from_shard_ids(spec):
    for ending in spec.endings:
        path = f"gs://bucket/in/00007{ending}"
        assert format_from_name(path) == spec.name
        assert format_from_name(path.upper()) == spec.name  # endings are case-insensitive
        assert shard_output_id(path).startswith("00007-")


def test_a_tfrecord_inputs_shard_id_has_no_ending():
    """Defect: the layout kept its own list of endings, without .tfrecord: a TFRecord input's shard id was
    ``00000.tfrecord-<hash>`` (its outputs ``parquet/00000.tfrecord-<hash>.parquet``)."""
    for name in ("00000.tfrecord", "00000.tfrecord.gz", "00000.tfrecords", "00000.TFRecord"):
        assert shard_output_id(f"/data/{name}").split("-")[0] == "00000"


def test_longest_ending_wins():
    assert input_endings().index(".tar.gz") < input_endings().index(".tar")
    assert shard_output_id("/d/x.tar.gz").startswith("x-") and shard_output_id("/d/x.tfrecord.gz").startswith("x-")
    assert format_from_name("/d/x.tfrecord.gz") == "tfrecord"


def test_folder_searches_pick_only_the_searched_endings():
    assert format_from_name("/d/m.json") == "manifest"  # named explicitly: a manifest
    assert format_from_name("/d/m.json", searched=True) is None  # found in a folder: too often something else
    assert format_from_name("/d/m.jsonl", searched=True) == "manifest"


@pytest.fixture
def extra_format(monkeypatch):
    """A new input format, registered the way a contributor would (its own reader + one registry entry):
    ``.captions`` files of ``KEY<TAB>caption`` lines, each image beside it as ``KEY.png``."""
    import fsspec

    from vesl.io.readers.base import make_record

    def read_captions(path: str, cfg: ReadConfig):
        folder = path.rsplit("/", 1)[0]
        with fsspec.open(path, "rt") as f:
            for index, line in enumerate(f):
                key, caption = line.rstrip("\n").split("\t", 1)
                with fsspec.open(f"{folder}/{key}.png", "rb") as image:
                    yield make_record(key, path, index, caption, image.read(), None, cfg)

    def read_keys(path: str, cfg: ReadConfig):
        with fsspec.open(path, "rt") as f:
            for index, line in enumerate(f):
                yield make_record(line.split("\t", 1)[0], path, index, line.split("\t", 1)[1], b"", None, cfg)

    spec = InputFormat("captions", read_captions, endings=(".captions",), read_keys=read_keys)
    monkeypatch.setitem(FORMATS, spec.name, spec)
    return spec


def test_a_registered_format_is_found_read_and_named_with_nothing_else_changed(tmp_path, extra_format):
    from tests.images import grayscale_png

    (tmp_path / "a.png").write_bytes(grayscale_png())
    (tmp_path / "b.png").write_bytes(grayscale_png())
    (tmp_path / "part-1.captions").write_text("a\ta red kite\nb\ttwo dogs\n")
    shards = discover_inputs([str(tmp_path)]).shards
    assert shards == [InputShard(str(tmp_path / "part-1.captions"), "captions")]
    records = list(read_shard(shards[0], ReadConfig()))
    assert [(r.key, r.caption) for r in records] == [("a", "a red kite"), ("b", "two dogs")]
    assert all(isinstance(r, ImageRecord) and r.image_bytes for r in records)
    keys = list(read_shard(shards[0], ReadConfig(), keys_only=True))
    assert [r.key for r in keys] == ["a", "b"] and not any(r.image_bytes for r in keys)
    assert shard_output_id(shards[0].path).startswith("part-1-")


def test_img2dataset_folders_are_recognised_from_the_registry(monkeypatch):
    """The data of an img2dataset shard number is the first registered format present: reordering the
    registry (tfrecord before webdataset) is the only change needed to prefer another format."""
    shards = discover_inputs([str(IMG2DATASET / "tfrecord")]).shards
    assert {s.format for s in shards} == {"tfrecord"} and all(s.metadata.endswith(".parquet") for s in shards)
    no_tfrecord = {name: spec for name, spec in FORMATS.items() if name != "tfrecord"}
    monkeypatch.setattr(readers, "FORMATS", no_tfrecord)
    monkeypatch.setattr(sys.modules["vesl.io.inputs"], "FORMATS", no_tfrecord)
    # without the tfrecord format, each number's NNNNN.parquet (img2dataset's metadata) is all there is
    shards = discover_inputs([str(IMG2DATASET / "tfrecord")]).shards
    assert {s.format for s in shards} == {"parquet"} and all(s.path == s.metadata for s in shards)


def reader_imports(name: str) -> set[str]:
    """The reader modules ``vesl.io.readers.NAME`` imports, at module level or inside functions."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(readers.__file__).parent / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vesl.io.readers."):
            found.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "vesl.io.readers":
            found.update(alias.name for alias in node.names)
    return found


def test_readers_import_no_circle():
    """parquet and img2dataset imported each other (a function-local import broke the circle), tfrecord
    took its column names from the parquet reader: the reader modules' imports form no cycle."""
    from pathlib import Path

    names = [p.stem for p in Path(readers.__file__).parent.glob("*.py") if p.stem != "__init__"]
    graph = {name: reader_imports(name) & set(names) for name in names}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(n == target or (n not in seen and reaches(n, target, seen | {n})) for n in graph[start])

    assert [name for name in names if reaches(name, name, set())] == []
    assert "parquet" not in graph["tfrecord"]


def test_format_declarations_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FORMATS["webdataset"].endings = (".tar",)  # type: ignore[misc]
