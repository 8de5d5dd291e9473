"""Reading an output folder back (``vesl.io.outputs``): the committed shards' files and rows, exactly
what a direct pyarrow read gives; never a shard without its stats file; a folder copied elsewhere or
on a remote filesystem (fsspec's memory://) reads the same; rows are streamed a batch at a time.

The folders are synthetic, in the shape a run writes (``write_output_folder``). Set VESL_TEST_OUTPUT
to a finished run's output folder (e.g. ``out/sample`` of ``make sample``) to run the same checks on
a copy of it too."""

from __future__ import annotations

import gc
import json
import random
import shutil
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vesl.io.layout import shard_output_id
from vesl.io.outputs import OutputFolder, is_output_folder
from vesl.io.tfexample import encode_example
from vesl.io.tfrecord import frame_record
from vesl.records import ImageRecord, LabeledImage, Phrase, Region, Reject
from vesl.schema import SCHEMA_VERSION, Provenance, parquet_schema, to_parquet_row, to_tf_features

T = TypeVar("T")
PROVENANCE = Provenance("0.1.0", SCHEMA_VERSION, "cloc", "tiny@448", "random weights", "0123456789ab", "")
ADJECTIVES = ["red", "small", "old", "wooden", "bright", "two", "a", "the"]
REJECTS = [("read", "empty_caption"), ("dedup", "duplicate_key"), ("decode", "corrupt_image"), ("filter", "no_regions")]


def phrase_text(rng: random.Random, vocabulary: int) -> str:
    """A phrase of 1 to 3 words; its index is log-uniform over ``vocabulary`` (a few frequent
    phrases, a long tail, as captions have); one in ten upper-cased (the report counts lower case)."""
    index = int(vocabulary ** rng.random()) - 1
    words = [f"thing{index}"] if index % 3 == 0 else [ADJECTIVES[index % len(ADJECTIVES)], f"thing{index}"]
    text = " ".join(["very", *words] if index % 7 == 0 else words)
    return text.upper() if rng.random() < 0.1 else text


def synthetic_item(rng: random.Random, source: str, index: int, vocabulary: int, image: bytes) -> LabeledImage:
    """An image with 0-4 phrases of its caption and 0-3 random boxes per phrase."""
    texts = [phrase_text(rng, vocabulary) for _ in range(rng.randint(0, 4))]
    caption = " and ".join(texts) or "nothing to see"
    phrases, regions, start = [], [], 0
    for q, text in enumerate(texts):
        parser = rng.choice(["cloc", "spacy"])
        phrases.append(Phrase(text, start, start + len(text), parser))
        for _ in range(rng.randint(0, 3)):
            x0, y0 = rng.random() * 0.8, rng.random() * 0.8
            box = (x0, y0, x0 + rng.random() * (1 - x0), y0 + rng.random() * (1 - y0))
            regions.append(Region(text, start, start + len(text), parser, q, box, rng.random(), rng.random()))
        start += len(text) + len(" and ")
    record = ImageRecord(
        f"{Path(source).stem}-{index}", source, index, caption, image, None, tuple(phrases),
        rng.randint(32, 1024), rng.randint(32, 1024), "JPEG" if image else None,
    )  # fmt: skip
    return LabeledImage(record, tuple(regions))


def write_shard(
    root: Path, source: str, items: list[LabeledImage], rejects: list[dict], row_group: int, **parquet_options: Any
) -> dict:
    """One committed shard as a run writes it (data files, then the stats file); its counts.
    ``parquet_options``: more arguments of ``pq.write_table`` (page sizes)."""
    shard_id = shard_output_id(source)
    files = {fmt: root / fmt / f"{shard_id}{suffix}" for fmt, suffix in (("parquet", ".parquet"), ("tfrecord", ".tfrecord"), ("rejects", ".jsonl"))}  # fmt: skip
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    rows = [to_parquet_row(item, PROVENANCE, include_image=bool(item.record.image_bytes)) for item in items]
    table = pa.Table.from_pylist(rows, schema=parquet_schema())
    pq.write_table(table, files["parquet"], row_group_size=row_group, **parquet_options)
    examples = (encode_example(to_tf_features(item, PROVENANCE, include_image=False)) for item in items)
    files["tfrecord"].write_bytes(b"".join(map(frame_record, examples)))
    files["rejects"].write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects), encoding="utf-8")
    n_phrases, n_regions = sum(len(i.record.phrases) for i in items), sum(len(i.regions) for i in items)
    counts = {
        "read": len(items) + len(rejects), "written": len(items), "rejected": len(rejects), "balanced": True,
        "phrases": n_phrases, "regions": n_regions,
    }  # fmt: skip
    stats = {
        "schema_version": SCHEMA_VERSION, "provenance": asdict(PROVENANCE), "shard_id": shard_id, "input": source,
        "input_format": "webdataset", "files": {fmt: str(path) for fmt, path in files.items()}, "counts": counts,
    }  # fmt: skip
    (root / "stats").mkdir(exist_ok=True)
    (root / "stats" / f"{shard_id}.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    return counts


def write_output_folder(
    root: Path,
    shards: int = 3,
    rows_per_shard: int = 20,
    rejects_per_shard: int = 2,
    vocabulary: int = 200,
    image: bytes = b"",
    row_group: int = 1000,
    seed: int = 0,
) -> Path:
    """A finished run's output folder: per shard its Parquet (rows of random phrases and boxes, with
    ``image`` bytes in every row when given), TFRecord, rejects and stats files; summary.json."""
    rng = random.Random(seed)
    totals = {"read": 0, "written": 0, "rejected": 0, "phrases": 0, "regions": 0}
    for s in range(shards):
        source = f"/data/in/part-{s:05d}.tar"
        items = [synthetic_item(rng, source, i, vocabulary, image) for i in range(rows_per_shard)]
        rejects = [
            Reject(f"bad-{s}-{i}", source, rows_per_shard + i, *rng.choice(REJECTS), f"detail {i}").to_json_dict()
            for i in range(rejects_per_shard)
        ]
        for name, value in write_shard(root, source, items, rejects, row_group).items():
            if name in totals:
                totals[name] += value
    written = max(1, totals["written"])
    counts = {
        **totals, "balanced": True, "shards": shards,
        "regions_per_image": round(totals["regions"] / written, 3),
        "phrases_per_image": round(totals["phrases"] / written, 3),
    }  # fmt: skip
    summary = {"schema_version": SCHEMA_VERSION, "provenance": asdict(PROVENANCE), "counts": counts}
    (root / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return root


@pytest.fixture
def output(tmp_path) -> Path:
    """A finished run's output folder in a tmp dir (its real runs are read in tests/e2e)."""
    return write_output_folder(tmp_path / "out", row_group=7)  # 20 rows a file: 3 row groups


def direct_rows(paths, columns=None) -> list[dict]:
    rows = []
    for path in paths:
        table = pq.read_table(path)
        rows += table.select(columns or [c for c in table.column_names if c != "image"]).to_pylist()
    return rows


def committed_files(root: Path, fmt: str) -> list[str]:
    """The files of a folder whose every shard is committed, found by listing the folder."""
    return sorted(str(p) for p in (root / fmt).iterdir())


def test_files_and_rows_equal_a_direct_read(output):
    folder = OutputFolder(str(output))
    for fmt in ("parquet", "tfrecord", "rejects"):
        assert folder.files(fmt) == committed_files(output, fmt)
    parquet = committed_files(output, "parquet")
    assert list(folder.rows()) == direct_rows(parquet)  # every column but the image bytes
    assert list(folder.rows(["key", "image"], batch_rows=3)) == direct_rows(parquet, ["key", "image"])
    assert list(folder.rows(limit=5, batch_rows=2)) == direct_rows(parquet)[:5]
    assert [item.record.key for item in folder.labeled(limit=4)] == [r["key"] for r in direct_rows(parquet)[:4]]
    lines = [line for p in committed_files(output, "rejects") for line in Path(p).read_text().splitlines()]
    assert list(folder.rejects()) == [json.loads(line) for line in lines if line.strip()]
    assert folder.summary() == json.loads((output / "summary.json").read_text())
    shards = folder.shards()
    assert [s.shard_id for s in shards] == sorted(p.stem for p in (output / "stats").iterdir())
    stats = json.loads((output / "stats" / f"{shards[0].shard_id}.json").read_text())
    assert (shards[0].input, shards[0].counts, shards[0].stats) == (stats["input"], stats["counts"], stats)


def test_an_uncommitted_shard_is_not_read(tmp_path):
    """A run that died between writing a shard's data files and its stats file: no reader of the
    output folder reads that shard; pointing at its parquet/ folder or a glob reads every file, as
    before."""
    from vesl.export import iter_labeled
    from vesl.training.torch_dataset import expand_sources

    root = write_output_folder(tmp_path / "out")
    committed = OutputFolder(str(root)).files("parquet")
    shutil.copy(committed[0], root / "parquet" / "died-0123abcd.parquet")
    (root / "rejects" / "died-0123abcd.jsonl").write_text('{"key": "x", "stage": "read", "reason": "r"}\n')
    folder = OutputFolder(str(root))
    assert folder.files("parquet") == committed
    assert len(list(folder.rows(["key"]))) == 60 and len(list(folder.rejects())) == 6
    assert expand_sources(str(root)) == committed
    assert len(list(iter_labeled(str(root)))) == 60
    every = sorted(str(p) for p in (root / "parquet").iterdir())
    assert expand_sources(str(root / "parquet")) == expand_sources(str(root / "parquet" / "*.parquet")) == every
    assert len(list(iter_labeled(str(root / "parquet")))) == 80
    # the TFRecord readers too
    from vesl.training.tfdata import iter_numpy_examples

    tfrecords = OutputFolder(str(root)).files("tfrecord")
    shutil.copy(tfrecords[0], root / "tfrecord" / "died-0123abcd.tfrecord")
    assert len(list(iter_numpy_examples(str(root)))) == 60
    assert len(list(iter_numpy_examples(str(root / "tfrecord")))) == 80


def test_a_copied_folder_reads_where_it_is_now(tmp_path):
    """Stats files record their data files by full path; a copy (``gsutil cp -r``) reads its own."""
    original = write_output_folder(tmp_path / "out")
    before = list(OutputFolder(str(original)).rows())
    copy = shutil.copytree(original, tmp_path / "elsewhere" / "copy")
    shutil.rmtree(original)
    folder = OutputFolder(str(copy))
    assert all(f.startswith(str(copy) + "/") for fmt in ("parquet", "rejects") for f in folder.files(fmt))
    assert list(folder.rows()) == before and len(list(folder.rejects())) == 6


def test_a_remote_folder_reads_through_fsspec(tmp_path):
    """Any fsspec URL (gs:// in production): here fsspec's in-memory filesystem."""
    local = write_output_folder(tmp_path / "out")
    memory = fsspec.filesystem("memory")
    memory.put(str(local), "/vesl-test-remote", recursive=True)
    try:
        url = "memory://vesl-test-remote"
        folder = OutputFolder(url)
        assert is_output_folder(url)
        assert all(f.startswith(url + "/parquet/") for f in folder.files("parquet"))
        assert list(folder.rows()) == list(OutputFolder(str(local)).rows())
        assert list(folder.rejects()) == list(OutputFolder(str(local)).rejects())
        assert folder.summary()["counts"]["written"] == 60
    finally:
        memory.rm("/vesl-test-remote", recursive=True)


def test_is_output_folder(tmp_path):
    root = write_output_folder(tmp_path / "out", shards=1)
    assert is_output_folder(str(root)) and is_output_folder(str(root) + "/")
    assert not is_output_folder(str(root / "parquet"))  # a plain folder of Parquet files
    assert not is_output_folder(str(root / "summary.json")) and not is_output_folder(str(tmp_path / "none"))


def test_rows_are_streamed_a_batch_at_a_time(tmp_path):
    """A 32 MB file (2 row groups, pages of 100 rows) read with its image bytes: never the whole file,
    row group or column chunk in memory. Streamed, the Python objects and pyarrow's buffers each peak
    near 1 MB whatever the file's size (a page and a batch); reading the file whole, above its size."""
    root = tmp_path / "out"
    items = [
        LabeledImage(ImageRecord(f"k{i}", "/in/s.tar", i, "a cat", random.Random(i).randbytes(4096)), ())
        for i in range(8000)
    ]
    write_shard(root, "/in/s.tar", items, [], row_group=4000, write_batch_size=100, data_page_size=1 << 18)
    size = sum(p.stat().st_size for p in (root / "parquet").iterdir())
    assert size > 32e6
    n, (python_peak, arrow_peak) = peak_memory(
        lambda: sum(len(row["image"]) for row in OutputFolder(str(root)).rows(["key", "image"], batch_rows=100))
    )
    assert n == 8000 * 4096
    assert python_peak < size / 10 and arrow_peak < size / 10, (size, python_peak, arrow_peak)


_POOLS: list[pa.MemoryPool] = []  # kept alive: a buffer may outlive the call that allocated it


def peak_memory(work: Callable[[], T]) -> tuple[T, tuple[int, int]]:
    """``work()``'s result and its peak memory: Python objects (tracemalloc) and pyarrow's buffers
    (a proxy of the default pool, made the default for the call: its high-water mark is this call's)."""
    base = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(base)
    _POOLS.append(pool)
    gc.collect()
    tracemalloc.start()
    pa.set_memory_pool(pool)
    try:
        result = work()
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        pa.set_memory_pool(base)
        tracemalloc.stop()
    return result, (python_peak, pool.max_memory())
