"""Resume knows its inputs: each committed shard records what its input was (size and checksum or
modification time, from the listing); a rerun redoes a committed shard whose input changed, keeps one
whose input is gone (counted in the summary), processes a new one, and says so in one line each."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pipelines.vesl import run
from vesl.io.outputs import OutputFolder
from vesl.io.shard_writers import RawSample, write_webdataset

pytestmark = pytest.mark.slow


def args(inputs: Path, out: Path, checkpoint: str, listing: str) -> list[str]:
    return [
        *("--input", str(inputs), "--output", str(out), "--checkpoint", checkpoint, "--image_size", "64"),
        *("--batch_size", "4", "--runner", "FnApiRunner", "--list_shards", listing),
    ]


def shard(path: Path, photos, tag: str) -> None:
    write_webdataset(
        str(path),
        [RawSample(f"{path.stem}-{i}", p.image, f"{tag} photo {i}: {p.caption}") for i, p in enumerate(photos)],
    )


def captions(out: Path) -> dict[str, str]:
    return {row["key"]: row["caption"] for row in OutputFolder(str(out)).rows(["key", "caption"])}


@pytest.mark.parametrize("listing", ["driver", "workers"])
def test_a_rerun_redoes_changed_inputs_keeps_gone_ones_and_adds_new_ones(
    tmp_path, tiny_checkpoint, photo_samples, caplog, listing
):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        shard(inputs / f"{name}.tar", photo_samples, "first")
    first = run(args(inputs, out, tiny_checkpoint, listing))
    assert first["counts"]["written"] == 3 * len(photo_samples) and first["input_shards_gone"] == 0
    stats = [json.loads(p.read_text()) for p in (out / "stats").glob("*.json")]
    assert all(s["input_identity"].startswith("size=") for s in stats)  # what each input was, recorded

    time.sleep(0.01)  # a distinct modification time even on coarse clocks
    shard(inputs / "b.tar", photo_samples, "second")  # rewritten: other captions, same name
    os.utime(inputs / "c.tar")  # touched: same bytes, a new modification time
    (inputs / "a.tar").unlink()  # gone
    shard(inputs / "d.tar", photo_samples, "first")  # new
    caplog.clear()
    second = run(args(inputs, out, tiny_checkpoint, listing))

    counts = second["counts"]
    assert counts["balanced"] and second["input_shards"] == 4 and second["input_shards_gone"] == 1
    assert counts["written"] == 4 * len(photo_samples)  # a's rows are kept, b and c redone, d added
    seen = captions(out)
    assert sorted(k.split("-")[0] for k in seen) == sorted(["a", "b", "c", "d"] * len(photo_samples))
    assert all(seen[k].startswith("second") for k in seen if k.startswith("b-"))  # the new b, not the old one
    assert all(seen[k].startswith("first") for k in seen if not k.startswith("b-"))
    said = " ".join(r.getMessage() for r in caplog.records)
    if listing == "driver":
        assert "2 committed shards are redone: the input changed since commit" in said
        assert "1 committed shard is kept though the input is gone" in said
    assert "b.tar" in said and "c.tar" in said and "a.tar" in said
