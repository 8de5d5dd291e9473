"""The report reads an output of any size in bounded memory (one streamed pass, histograms and capped
counters, a reservoir sample for the gallery) and its counts are the data's: checked on synthetic
output folders (``tests.unit.test_outputs.write_output_folder``)."""

from __future__ import annotations

import html
import io
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.unit.test_outputs import peak_memory, write_output_folder
from vesl.io.outputs import OutputFolder
from vesl.report import PhraseTally, Reservoir, build_report


def chart(document: str, title: str) -> list[tuple[str, float]]:
    """(label, value) of each bar of the chart titled ``title``, in drawing order."""
    figure = document.split(f"<figcaption>{html.escape(title)}</figcaption>", 1)[1].split("</figure>", 1)[0]
    vertical = re.findall(r"<title>(.*?): ([-+.e0-9]+)</title>", figure)
    horizontal = re.findall(r'text-anchor="end">([^<]*)</text><rect [^>]*/><text [^>]*>([-+.e0-9]+)</text>', figure)
    return [(html.unescape(label), float(value)) for label, value in vertical or horizontal]


def table(document: str, first_header: str) -> list[list[str]]:
    """The rows of the table whose first header is ``first_header`` (cells as text)."""
    for found in re.findall(r"<table[^>]*>(.*?)</table>", document, re.S):
        rows = [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", found)]
        if rows and rows[0] and rows[0][0] == html.escape(first_header):
            return [[html.unescape(cell) for cell in row] for row in rows]
    raise AssertionError(f"no table {first_header!r}")


def data_of(root: Path) -> tuple[list[dict], list[dict]]:
    """Every row (without image bytes) and every reject, read directly."""
    import pyarrow.parquet as pq

    rows = [r for p in sorted((root / "parquet").iterdir()) for r in pq.read_table(p).drop(["image"]).to_pylist()]
    rejects = [json.loads(line) for p in sorted((root / "rejects").iterdir()) for line in p.read_text().splitlines()]
    return rows, rejects


def test_the_reports_counts_are_the_datas(tmp_path):
    root = write_output_folder(tmp_path / "out", shards=3, rows_per_shard=400, rejects_per_shard=90, vocabulary=300)
    document = build_report(str(root), n_images=2)
    rows, rejects = data_of(root)
    regions = [r for row in rows for r in row["regions"]]
    per_image = Counter(min(len(row["regions"]), 30) for row in rows)
    assert chart(document, "Regions per image (30 = 30 or more)") == [(str(k), per_image[k]) for k in range(31)]
    by_reason = Counter(f"{r['stage']}: {r['reason']}" for r in rejects).most_common()
    assert chart(document, "Rejects by stage and reason") == by_reason
    top = Counter(r["phrase"].lower() for r in regions).most_common(20)
    assert chart(document, "Top phrases (regions)") == top
    words = Counter(min(len(r["phrase"].split()), 8) for r in regions)
    assert chart(document, "Words per phrase (of regions; 8 = 8 or more)") == [(str(k), words[k]) for k in range(1, 9)]
    assert sum(v for _, v in chart(document, "Region scores")) == len(regions)
    grid = table(document, "centre y \\ x")
    assert sum(int(v) for row in grid[1:] for v in row[1:]) == len(regions)
    asked = Counter(p["text"].lower() for row in rows for p in row["phrases"])
    boxed = {r["phrase"].lower() for r in regions}
    without = Counter({p: n for p, n in asked.items() if p not in boxed})
    assert f"{sum(asked.values())} queries ({len(asked)} distinct); {len(without)} distinct" in document
    assert table(document, "phrase")[1:] == [[p, str(n)] for p, n in without.most_common(15)]
    listed = sorted(rejects, key=lambda r: (r["stage"], r["reason"], r["key"]))[:200]
    assert [row[0] for row in table(document, "key")[1:]] == [r["key"] for r in listed]
    assert f"{len(rejects)} rejects (the first 200 by stage and reason)" in document
    assert [row[3] for row in table(document, "shard")[1:]] == ["400"] * 3
    assert "approximate" not in document


def tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


def report_peak(root: Path) -> tuple[int, int]:
    """Peak memory of a report on ``root``, with a phrase table capped below the folder's distinct
    phrases (the random phrases of a long-tailed vocabulary of 10^6: more distinct ones with more rows)."""
    document, peaks = peak_memory(lambda: build_report(str(root), n_images=4, phrase_capacity=500))
    assert "approximate" in document and "<h2>Gallery (4 sampled images)</h2>" in document
    return peaks


def test_report_memory_does_not_grow_with_the_number_of_rows(tmp_path):
    """1,000 then 10,000 rows (each with image bytes): the peak of the Python objects and of pyarrow's
    buffers stays within 1.3 times (reading every row into a list, as the report once did, is ~10x)."""
    image = tiny_jpeg()
    small = write_output_folder(tmp_path / "small", shards=2, rows_per_shard=500, vocabulary=10**6, image=image)
    large = write_output_folder(tmp_path / "large", shards=20, rows_per_shard=500, vocabulary=10**6, image=image)
    build_report(str(small), n_images=4)  # imports and caches, outside the measurement
    small_peak, large_peak = report_peak(small), report_peak(large)
    assert large_peak[0] < 1.3 * small_peak[0], (small_peak, large_peak)  # Python objects
    assert large_peak[1] < 1.3 * small_peak[1], (small_peak, large_peak)  # pyarrow buffers


def test_phrase_tally_is_exact_below_its_capacity_and_keeps_the_frequent_phrases_above():
    rng = random.Random(3)
    stream = [(f"p{int(5000 ** rng.random())}", rng.random() < 0.5) for _ in range(40_000)]
    asked, boxed = Counter(p for p, _ in stream), Counter(p for p, b in stream if b)
    exact, capped = PhraseTally(capacity=10**6), PhraseTally(capacity=300)
    for tally in (exact, capped):
        for phrase, has_box in stream:
            tally.ask(phrase)
            if has_box:
                tally.box(phrase)
    assert not exact.approximate and exact.top_boxed(50) == boxed.most_common(50)
    assert exact.distinct() == (len(asked), len(set(asked) - set(boxed)), len(boxed))
    assert capped.approximate and len(capped.entries) <= 300
    assert capped.top_boxed(10) == boxed.most_common(10)  # the frequent ones: exact counts, in order
    assert (capped.asked, capped.boxed) == (len(stream), sum(boxed.values()))  # totals stay exact


def test_the_gallery_sample_is_uniform_and_seeded():
    def sample(seed: int, n: int = 5) -> list[int]:
        reservoir = Reservoir(n, seed)
        for i in range(40):
            reservoir.offer(i)
        return reservoir.items

    assert sample(1) == sample(1) != sample(2) and sample(1) == sorted(sample(1)) and len(set(sample(1))) == 5
    assert sample(0, n=50) == list(range(40))
    picked = Counter(i for seed in range(4000) for i in sample(seed))
    assert all(abs(picked[i] / 4000 - 5 / 40) < 0.03 for i in range(40)), picked


@pytest.mark.parametrize("seed", [0, 1])
def test_the_gallery_shows_the_sampled_rows_with_their_stored_image_bytes(tmp_path, seed):
    root = write_output_folder(tmp_path / "out", shards=2, rows_per_shard=30, image=tiny_jpeg())
    document = build_report(str(root), n_images=3, seed=seed)
    shown = re.findall(r'<div class="card"><img src="data:image/jpeg;base64,[^"]+" alt="([^"]+)">', document)
    keys = [row["key"] for row in OutputFolder(str(root)).rows(["key"])]
    assert len(shown) == 3 and set(shown) <= set(keys) and shown == sorted(shown, key=keys.index)
    assert "(image read from its input shard)" not in document
    assert build_report(str(root), n_images=3, seed=seed) == document  # the same sample for the same seed
