"""Stage transforms under Beam's TestPipeline (FnApiRunner)."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from vesl.config import DetectConfig, ReadConfig
from vesl.io.shard_writers import RawSample, write_webdataset
from vesl.models.handler import DetectorModelHandler
from vesl.records import ImageRecord, InputShard, Phrase
from vesl.transforms import RECORDS, REJECTS
from vesl.transforms.dedup import FindDuplicateKeys
from vesl.transforms.detect import DetectRegions
from vesl.transforms.read import ReadShards


def pipeline():
    return test_pipeline.TestPipeline(runner="FnApiRunner")


def record(key, shard, index, phrases=()):
    return ImageRecord(key, shard, index, "a cat", b"", phrases=phrases)


def test_duplicate_keys_are_found_from_keys_and_rejected_at_read(tmp_path):
    """First by shard path, then index: the lowest index (s1 record 0) sits in the later shard and
    loses to s0 record 2, and the losing copies are rejected by the shard that reads them."""
    sample = lambda key: RawSample(key, b"\xff\xd8 not really a jpeg", "a cat")  # noqa: E731
    s0 = write_webdataset(str(tmp_path / "s0.tar"), [sample(k) for k in ("x", "y", "a", "z", "b0")])
    s1 = write_webdataset(str(tmp_path / "s1.tar"), [sample(k) for k in ("a", "b")])
    s2 = write_webdataset(str(tmp_path / "s2.tar"), [sample(k) for k in ("a",)])
    shards = [InputShard(path, "webdataset") for path in (s1, s0, s2)]
    with pipeline() as p:
        inputs = p | beam.Create(shards)
        read = (inputs, inputs | FindDuplicateKeys(ReadConfig())) | ReadShards(ReadConfig())
        name = lambda path: Path(path).stem  # noqa: E731
        assert_that(
            read[RECORDS] | "kept" >> beam.Map(lambda r: (r.key, name(r.shard), r.index)),
            equal_to([("x", "s0", 0), ("y", "s0", 1), ("a", "s0", 2), ("z", "s0", 3), ("b0", "s0", 4), ("b", "s1", 1)]),
            label="kept",
        )
        assert_that(
            read[REJECTS] | "dups" >> beam.Map(lambda r: (r.key, name(r.shard), r.index, r.stage, r.reason, r.detail)),
            equal_to(
                [
                    ("a", "s1", 0, "dedup", "duplicate_key", f"key already read from {s0} record 2"),
                    ("a", "s2", 0, "dedup", "duplicate_key", f"key already read from {s0} record 2"),
                ]
            ),
            label="dups",
        )


def test_a_failing_model_batch_becomes_rejects_not_a_crash(tiny_checkpoint, photo_samples, monkeypatch):
    def explode(self, batch, model, inference_args=None):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(DetectorModelHandler, "run_inference", explode)
    phrases = (Phrase("a cat", 0, 5, "cloc"),)
    records = [ImageRecord(s.key, "s", i, s.caption, s.image, phrases=phrases) for i, s in enumerate(photo_samples)]
    records.append(ImageRecord("no_phrases", "s", 9, "it is", photo_samples[0].image))
    config = DetectConfig(checkpoint=tiny_checkpoint, image_size=64, batch_size=2)
    with pipeline() as p:
        out = p | beam.Create(records) | DetectRegions(config, min_score=0.1, keep_image_bytes=False)
        assert_that(
            out[REJECTS] | "rej" >> beam.Map(lambda r: (r.key, r.stage, r.reason, "simulated" in r.detail)),
            equal_to([(s.key, "detect", "inference_error", True) for s in photo_samples]),
            label="rej",
        )
        assert_that(
            out[RECORDS] | "ok" >> beam.Map(lambda pair: (pair[0].key, len(pair[1]))),
            equal_to([("no_phrases", 0)]),
            label="ok",
        )


@pytest.mark.parametrize("share", [False, True])
def test_handler_batching_and_sharing_settings(share):
    handler = DetectorModelHandler(DetectConfig(batch_size=16, share_model_across_processes=share), min_score=0.1)
    assert handler.batch_elements_kwargs()["max_batch_size"] == 16
    assert handler.share_model_across_processes() is share


def test_decoding_on_the_device_keeps_every_record_accounted_for(tiny_checkpoint, photo_samples):
    """image_decoder=nvimgcodec (its CPU backend here): JPEGs travel encoded to the model handler; one
    whose data breaks after a valid header fails there, on the device and on the CPU fallback, and is
    rejected at the decode stage; other formats take the CPU path; counts balance."""
    pytest.importorskip("nvidia.nvimgcodec")
    from tests import images

    phrases = (Phrase("a cat", 0, 5, "cloc"),)
    good = [ImageRecord(s.key, "s", i, s.caption, s.image, phrases=phrases) for i, s in enumerate(photo_samples)]
    truncated = photo_samples[0].image[: len(photo_samples[0].image) // 3]
    bad = [
        ImageRecord("truncated_jpeg", "s", 10, "a cat", truncated, phrases=phrases),
        ImageRecord("garbage", "s", 11, "a cat", b"<html>not found</html>", phrases=phrases),
    ]
    png = ImageRecord("png", "s", 12, "a cat", images.grayscale_png(), phrases=phrases)
    config = DetectConfig(
        checkpoint=tiny_checkpoint, image_size=64, batch_size=4, options={"image_decoder": "nvimgcodec"}
    )
    with pipeline() as p:
        out = p | beam.Create([*good, *bad, png]) | DetectRegions(config, min_score=0.0, keep_image_bytes=False)
        assert_that(
            out[REJECTS] | "rej" >> beam.Map(lambda r: (r.key, r.stage, r.reason)),
            equal_to([("truncated_jpeg", "decode", "corrupt_image"), ("garbage", "decode", "not_an_image")]),
            label="rej",
        )
        assert_that(
            out[RECORDS] | "ok" >> beam.Map(lambda pair: (pair[0].key, pair[0].image_format, len(pair[1]) > 0)),
            equal_to([(r.key, "JPEG", True) for r in good] + [("png", "PNG", True)]),
            label="ok",
        )


def test_read_shards_counts_as_beam_counters_and_progress_files(tmp_path):
    """On Dataflow the progress counts are Beam counters; locally they also land in progress files."""
    from apache_beam.metrics.metric import MetricsFilter

    from tests.conftest import IMG2DATASET
    from vesl import progress
    from vesl.config import ReadConfig
    from vesl.context import WorkerSettings
    from vesl.io.inputs import discover_inputs
    from vesl.transforms import CHECKS
    from vesl.transforms.read import ReadShards

    shards = discover_inputs([str(IMG2DATASET / "webdataset")]).shards
    p = pipeline()
    inputs = p | beam.Create(shards)
    read = (inputs, p | "NoDuplicates" >> beam.Create([])) | ReadShards(
        ReadConfig(), WorkerSettings(progress_dir=str(tmp_path))
    )
    assert_that(read[CHECKS] | beam.Map(lambda c: (c.tried, c.problems)), equal_to([(5, ()), (5, ()), (3, ())]))
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("vesl"))["counters"]
    }
    assert counters["shards_read"] == 3 and counters["records_read"] + counters["records_rejected_at_read"] == 13
    assert progress.read_counts(str(tmp_path)) == {progress.SHARDS_READ: 3, progress.RECORDS_READ: 13}


def test_heavy_stages_put_what_they_loaded_out_of_the_collectors_reach():
    """After setup, a full collection no longer rescans the modules and models the worker keeps
    (gc.freeze): the phrase stage's setup leaves them frozen."""
    import gc

    from vesl.config import PhraseConfig
    from vesl.transforms.phrases import ExtractPhrasesFn

    gc.unfreeze()
    try:
        fn = ExtractPhrasesFn(PhraseConfig(mode="cloc"))
        fn.setup()
        assert gc.get_freeze_count() > 10_000
        assert gc.get_count()[0] < 100  # collected just before freezing
    finally:
        gc.unfreeze()
