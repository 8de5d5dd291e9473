"""Fixtures the end-to-end fault tests share (tests/runs.py builds them): per test module, the six-shard
input with a poisoned seventh shard, and the snapshot of a clean run over it."""

from __future__ import annotations

import pytest

from pipelines.vesl import run
from tests.runs import argv, build_inputs, snapshot


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photo_samples, request):
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "input"
    build_inputs(root, photo_samples)
    return root


@pytest.fixture(scope="module")
def clean(inputs, tiny_checkpoint):
    out = inputs.parent / "clean"
    run(argv(inputs, out, tiny_checkpoint, "--runner", "FnApiRunner"))
    return snapshot(out)
