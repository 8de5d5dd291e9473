"""End to end at the presets' own thresholds (not --score_threshold 0): the detector's pre-filter and
the filter stage keep exactly the boxes scoring above the preset's threshold, filter-stage rejects
go through the writers, and one caption that makes the parser raise costs that record alone."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.vesl import run
from vesl.io.shard_writers import RawSample, write_webdataset

pytestmark = pytest.mark.slow
# spaCy refuses texts over nlp.max_length (1,000,000 characters: error E088): a real parser error.
LONG_CAPTION = "a dog on a mat " * 70_000


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photo_samples) -> Path:
    root = tmp_path_factory.mktemp("defaults")
    image = photo_samples[0].image
    samples = [
        *photo_samples,
        RawSample("no_phrase", image, "it is what it is"),
        RawSample("long", image, LONG_CAPTION),
    ]
    write_webdataset(str(root / "part-0.tar"), samples)
    return root


def run_with(inputs: Path, out: Path, checkpoint: str, *extra: str) -> dict:
    return run(
        [
            *("--input", str(inputs / "*.tar"), "--output", str(out), "--checkpoint", checkpoint),
            *("--image_size", "64", "--max_candidates", "1000", "--max_caption_chars", "2000000"),
            *("--runner", "FnApiRunner", "--progress", "false", *extra),
        ]
    )


def regions(out: Path) -> dict[str, list[tuple]]:
    rows = pq.read_table(next((out / "parquet").glob("*.parquet"))).to_pylist()
    return {r["key"]: sorted((g["score"], g["phrase"], tuple(g["box"])) for g in r["regions"]) for r in rows}


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for f in (out / "rejects").glob("*.jsonl") for line in f.read_text().splitlines()]


def test_cloc_default_keeps_exactly_the_boxes_above_0_1(inputs, tmp_path, tiny_checkpoint):
    everything = run_with(inputs, tmp_path / "all", tiny_checkpoint, "--score_threshold", "0")
    default = run_with(inputs, tmp_path / "cloc", tiny_checkpoint)
    assert default["config"]["filter"]["score_threshold"] == 0.1
    for summary in (everything, default):
        counts = summary["counts"]
        assert counts["balanced"] and counts["read"] == 5 and counts["written"] == 4
        assert counts["rejected_by_stage"] == {"phrases": {"parser_error": 1}}
    (parser_error,) = rejects(tmp_path / "cloc")
    assert parser_error["key"] == "long" and "E088" in parser_error["detail"]
    unfiltered, kept = regions(tmp_path / "all"), regions(tmp_path / "cloc")
    assert kept == {key: [r for r in found if r[0] > 0.1] for key, found in unfiltered.items()}
    dropped = sum(len(found) for found in unfiltered.values()) - sum(len(found) for found in kept.values())
    assert dropped > 0 and kept["no_phrase"] == [] and any(kept.values())  # the rule did some work


def test_grit_default_rejects_images_without_boxes_through_the_writers(inputs, tmp_path, tiny_checkpoint):
    summary = run_with(inputs, tmp_path / "grit", tiny_checkpoint, "--preset", "grit")
    counts = summary["counts"]
    assert summary["config"]["filter"]["score_threshold"] == 0.65 and counts["balanced"]
    assert counts["rejected_by_stage"]["phrases"] == {"parser_error": 1}
    assert counts["rejected_by_stage"]["filter"]["no_regions"] >= 1  # "it is what it is" has no chunk
    filtered = {r["key"] for r in rejects(tmp_path / "grit") if r["stage"] == "filter"}
    assert "no_phrase" in filtered
    kept = regions(tmp_path / "grit")
    assert not filtered & set(kept) and all(r[0] > 0.65 for found in kept.values() for r in found)
    assert all(found for found in kept.values())  # GRIT keeps no image without a box
