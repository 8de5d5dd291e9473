"""The scaling test (issue 15): 2,000 images in 4 shards, with duplicate keys across shards, through
the real command line on the FnApiRunner; counts exact, and no element that goes into any
GroupByKey (a shuffle on Dataflow) carries an image, a record or anything image-sized."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scale import write_shards
from pipelines.vesl import run
from tests.grouping_probe import ProbedPipeline, read_probes

pytestmark = pytest.mark.slow

FIXTURE_PHOTOS = Path(__file__).parents[1] / "fixtures" / "photos"
CAPTIONS = ["a tabby cat on a sofa", "a red motorcycle in a garage", "a rocket standing on a launchpad", "it is"]
IMAGES, PER_SHARD, REPEATED = 2000, 500, 25
RECORD_TYPES = {"ImageRecord", "DetectorInput", "LabeledImage", "Detections", "ndarray"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Four shards of 500; a fifth repeats the first 25 keys of shard 00000 (they must lose)."""
    root = tmp_path_factory.mktemp("scale")
    photos = [p.read_bytes() for p in sorted(FIXTURE_PHOTOS.glob("*.jpg"))]
    write_shards(root / "in", IMAGES, PER_SHARD, photos, CAPTIONS)
    repeated = write_shards(root / "again", REPEATED, PER_SHARD, photos, CAPTIONS)
    repeated[0].rename(root / "in" / "99999.tar")
    return root / "in"


def probed_run(shards: Path, out: Path, checkpoint: str, *extra: str) -> tuple[dict, dict, list[str]]:
    probes = out.parent / f"{out.name}-probes"
    probes.mkdir()
    pipeline = ProbedPipeline(str(probes))
    argv = ["--input", str(shards), "--output", str(out), "--checkpoint", checkpoint, "--image_size", "64"]
    argv += ["--runner", "FnApiRunner", "--progress", "false", *extra]
    summary = run(argv, test_pipeline=pipeline)
    return summary, read_probes(str(probes)), pipeline.groupings


def test_two_thousand_images_balance_and_nothing_image_sized_is_grouped(shards, tmp_path, tiny_checkpoint):
    summary, probes, groupings = probed_run(shards, tmp_path / "out", tiny_checkpoint)
    counts = summary["counts"]
    assert counts["read"] == IMAGES + REPEATED and counts["balanced"]
    assert counts["rejected_by_stage"] == {"dedup": {"duplicate_key": REPEATED}}
    assert counts["written"] == IMAGES
    assert set(probes) <= set(groupings) and len(groupings) >= 5
    keys = next(label for label in probes if label.endswith("FindDuplicateKeys/GroupKeys"))
    assert probes[keys]["elements"] == IMAGES + REPEATED  # every record's key went through it, keys only
    for label, seen in probes.items():
        assert not seen["jpeg"], f"{label} groups image bytes"
        assert not RECORD_TYPES & set(seen["types"]), f"{label} groups {sorted(seen['types'])}"
        assert seen["max_pickled"] < 16_384, f"{label}: an element of {seen['max_pickled']} bytes"
    written = {line for f in (tmp_path / "out" / "rejects").glob("*.jsonl") for line in f.read_text().splitlines()}
    assert {json.loads(line)["shard"].rsplit("/", 1)[-1] for line in written} == {"99999.tar"}


def test_the_probe_sees_image_bytes_when_the_output_rows_carry_them(shards, tmp_path, tiny_checkpoint):
    """The control: with --write_image_bytes the write grouping's rows hold the JPEGs, and the probe
    says so (so the test above can fail)."""
    _, probes, _ = probed_run(shards, tmp_path / "out", tiny_checkpoint, "--write_image_bytes", "true")
    carrying = sorted(label for label, seen in probes.items() if seen["jpeg"])
    assert carrying and all("WriteShardOutputs" in label for label in carrying), carrying
