"""The whole pipeline with ``--detector_backend jax`` on the bundled sample shards: the counts balance,
every written row equals the torch run's (the same regions, labels, boxes and scores within 1e-4), and
the run records its backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.vesl import run
from vesl.io.outputs import OutputFolder
from vesl.sample import build_sample

pytestmark = pytest.mark.slow
pytest.importorskip("jax", reason="JAX is not installed (make test installs requirements/jax.txt; see its warning)")


def labeled_rows(out) -> dict[str, dict]:
    return {row["key"]: row for row in OutputFolder(str(out)).rows()}


def test_the_jax_backend_writes_the_torch_backends_rows(tmp_path, tiny_checkpoint):
    build_sample(tmp_path / "input")
    common = [
        *("--input", str(tmp_path / "input" / "*"), "--checkpoint", tiny_checkpoint, "--image_size", "64"),
        *("--batch_size", "4", "--query_buckets", "4,8,12,16,20", "--runner", "FnApiRunner"),
    ]
    torch_summary = run([*common, "--output", str(tmp_path / "torch")])
    jax_summary = run([*common, "--output", str(tmp_path / "jax"), "--detector_backend", "jax", "--device", "cpu"])
    assert jax_summary["counts"]["balanced"] and jax_summary["counts"] == torch_summary["counts"]
    assert jax_summary["detector"] == {"backend": "jax", "numerics": "jax, float32"}
    assert json.loads((tmp_path / "jax" / "_config.json").read_text())["config"]["detect"]["backend"] == "jax"
    torch_rows, jax_rows = labeled_rows(tmp_path / "torch"), labeled_rows(tmp_path / "jax")
    assert sorted(jax_rows) == sorted(torch_rows) and sum(len(r["regions"]) for r in jax_rows.values()) > 20
    worst = 0.0
    for key, expected in torch_rows.items():
        got = jax_rows[key]
        assert got["phrases"] == expected["phrases"]
        assert len(got["regions"]) == len(expected["regions"]), key
        by_place = sorted(got["regions"], key=lambda r: (r["query_index"], r["box"]))
        for want, have in zip(sorted(expected["regions"], key=lambda r: (r["query_index"], r["box"])), by_place):
            assert (want["phrase"], want["query_index"]) == (have["phrase"], have["query_index"])
            worst = max(worst, float(np.abs(np.subtract(want["box"], have["box"])).max()))
            worst = max(worst, abs(want["score"] - have["score"]), abs(want["objectness"] - have["objectness"]))
    assert worst <= 1e-4, worst
