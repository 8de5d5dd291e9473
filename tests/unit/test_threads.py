"""PyTorch's thread budget per worker process (vesl.threads) and where the model stages apply it."""

from __future__ import annotations

import pytest
import torch

from pipelines.vesl import UsageError, run
from vesl.config import DetectConfig
from vesl.models.handler import DetectorModelHandler
from vesl.threads import cpu_threads_per_process, parse_cpu_threads


@pytest.mark.parametrize(
    ("runner", "mode", "workers", "experiments", "cores", "expected"),
    [
        ("FnApiRunner", None, None, None, 8, None),  # one process: PyTorch's default
        ("DirectRunner", "in_memory", 4, None, 8, None),
        ("DirectRunner", "multi_processing", 2, None, 2, 1),  # the case measured in docs/benchmarks.md
        ("DirectRunner", "multi_processing", 2, None, 8, 4),
        ("DirectRunner", "multi_processing", 3, None, 8, 2),
        ("DirectRunner", "multi_processing", 16, None, 8, 1),  # never 0
        ("DirectRunner", "multi_processing", 0, None, 8, 1),  # 0: a worker per core
        ("DirectRunner", "multi_threading", 4, None, 8, 2),  # threads share one pool
        ("apache_beam.runners.direct.direct_runner.DirectRunner", "multi_processing", 2, None, 8, 4),
        ("DataflowRunner", None, None, None, 8, 1),  # one SDK process per vCPU
        ("DataflowRunner", None, None, ["no_use_multiple_sdk_containers"], 8, None),
        ("PrismRunner", None, None, None, 8, None),
    ],
)
def test_threads_per_process(runner, mode, workers, experiments, cores, expected):
    assert cpu_threads_per_process(runner, mode, workers, experiments, cores) == expected


def test_parse_cpu_threads():
    assert parse_cpu_threads("auto") is None and parse_cpu_threads(None) is None and parse_cpu_threads("3") == 3
    for bad in ("0", "-2"):
        with pytest.raises(ValueError, match="cpu_threads"):
            parse_cpu_threads(bad)


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_detectors_handler_holds_pytorch_to_its_threads(tiny_checkpoint, restore_torch_threads):
    torch.set_num_threads(2)
    config = DetectConfig(checkpoint=tiny_checkpoint, image_size=64, device="cpu")
    DetectorModelHandler(config, 0.1).load_model()
    assert torch.get_num_threads() == 2  # None: left as it was
    DetectorModelHandler(config, 0.1, cpu_threads=1).load_model()
    assert torch.get_num_threads() == 1


def test_every_batch_is_run_with_the_handlers_threads(tiny_checkpoint, restore_torch_threads):
    """Set again before each batch: a count set only at model load did not hold in Beam's worker
    processes (docs/benchmarks.md, "Local parallelism": 23.1 CPU-ms an image against 5.20)."""
    import numpy as np

    from vesl.records import DetectorInput, ImageRecord, Phrase

    config = DetectConfig(checkpoint=tiny_checkpoint, image_size=64, device="cpu", query_buckets=(4,))
    handler = DetectorModelHandler(config, 0.0, cpu_threads=1)
    model = handler.load_model()
    torch.set_num_threads(2)  # what another thread of the harness, or another library, left
    record = ImageRecord("k", "s", 0, "a cat", b"", phrases=(Phrase("a cat", 0, 5, "cloc"),))
    batch = [DetectorInput(record, np.zeros((64, 64, 3), np.uint8), 64, 48)]
    results = list(handler.run_inference(batch, model))
    assert len(results) == 1 and torch.get_num_threads() == 1


def test_a_bad_cpu_threads_is_a_usage_error(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"")
    with pytest.raises(UsageError, match="cpu_threads"):
        run(["--input", str(tmp_path / "a.tar"), "--output", str(tmp_path / "o"), "--cpu_threads", "0"])


def test_the_launcher_resolves_auto_from_the_runners_options():
    from apache_beam.options.pipeline_options import PipelineOptions

    from vesl.launch import resolve_cpu_threads

    mp = ["--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    assert resolve_cpu_threads(PipelineOptions(mp)) == cpu_threads_per_process("DirectRunner", "multi_processing", 2)
    assert resolve_cpu_threads(PipelineOptions([])) is None  # the default local runner: one process
    assert resolve_cpu_threads(PipelineOptions([*mp, "--cpu_threads", "5"])) == 5  # a count wins
    assert resolve_cpu_threads(PipelineOptions(["--runner", "DataflowRunner"])) == 1
