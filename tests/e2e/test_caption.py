"""The optional captioning stage: generated captions reach the output next to the alt-text, phrases
say which caption they come from, bad images and failed batches become rejects, counts balance."""

from __future__ import annotations

import glob

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.vesl import run
from tests import images
from vesl.config import CaptionConfig, DetectConfig, PhraseConfig, build_config
from vesl.io.shard_writers import RawSample, write_webdataset
from vesl.models.captioner import Captioner
from vesl.records import ImageRecord, Phrase
from vesl.schema import from_parquet_row
from vesl.text.phrases import PhraseExtractor, merge_caption_sources, normalize_phrase
from vesl.transforms import RECORDS, REJECTS
from vesl.transforms.caption import CaptionerModelHandler, CaptionImages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def captioned(tmp_path_factory, tiny_checkpoint, tiny_captioner, photo_samples):
    root = tmp_path_factory.mktemp("caption")
    samples = [*photo_samples, RawSample("corrupt", images.truncated_jpeg(), "a dog on a beach")]
    write_webdataset(str(root / "part-0.tar"), samples)
    out = root / "out"
    summary = run(
        [
            "--input",
            str(root / "*.tar"),
            "--output",
            str(out),
            "--checkpoint",
            tiny_checkpoint,
            "--image_size",
            "64",
            "--preset",
            "cloc-full",
            "--captioner_checkpoint",
            tiny_captioner,
            "--caption_max_new_tokens",
            "10",
            "--caption_num_beams",
            "2",
            "--score_threshold",
            "0",
            "--runner",
            "FnApiRunner",
        ]
    )
    rows = [r for f in glob.glob(str(out / "parquet" / "*.parquet")) for r in pq.read_table(f).to_pylist()]
    return summary, rows


def test_generated_and_alt_captions_are_both_kept_and_parsed(captioned, photo_samples):
    summary, rows = captioned
    counts = summary["counts"]
    assert counts["balanced"] and counts["written"] == len(photo_samples) == len(rows)
    assert counts["rejected_by_stage"] == {"caption": {"corrupt_image": 1}}
    for row in rows:
        labeled, provenance = from_parquet_row(row)
        record = labeled.record
        assert record.generated_caption and record.caption == {s.key: s.caption for s in photo_samples}[record.key]
        sources = {p.caption_source for p in record.phrases}
        assert sources == {"alt", "generated"}
        for p in record.phrases:
            text = record.generated_caption if p.caption_source == "generated" else record.caption
            assert normalize_phrase(text[p.char_start : p.char_end]) == normalize_phrase(p.text)
        for region in labeled.regions:
            assert region.caption_source == record.phrases[region.query_index].caption_source
        assert "num_beams=2" in provenance.captioner and "random weights" in provenance.captioner


def test_a_failing_captioner_batch_becomes_rejects(tiny_captioner, photo_samples, monkeypatch):
    def explode(self, batch, model, inference_args=None):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(CaptionerModelHandler, "run_inference", explode)
    records = [ImageRecord(s.key, "s", i, s.caption, s.image) for i, s in enumerate(photo_samples)]
    records.append(ImageRecord("bad", "s", 9, "a cat", b"not an image"))
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        out = (
            p
            | beam.Create(records)
            | CaptionImages(CaptionConfig(checkpoint=tiny_captioner, batch_size=2), DetectConfig())
        )
        assert_that(
            out[REJECTS] | beam.Map(lambda r: (r.key, r.stage, r.reason)),
            equal_to(
                [(s.key, "caption", "captioner_error") for s in photo_samples] + [("bad", "caption", "not_an_image")]
            ),
            label="rejects",
        )
        assert_that(out[RECORDS], equal_to([]), label="none captioned")


def test_generation_settings_are_applied(tiny_captioner, photo_samples):
    from PIL import Image

    image = Image.new("RGB", (40, 30), (120, 30, 30))
    short = Captioner.from_config(CaptionConfig(checkpoint=tiny_captioner, max_new_tokens=3, num_beams=1))
    long = Captioner.from_config(CaptionConfig(checkpoint=tiny_captioner, max_new_tokens=12, num_beams=1))
    assert len(short.caption([image])[0].split()) <= 3 < len(long.caption([image])[0].split())
    assert long.caption([]) == []


def test_caption_sources_merge():
    generated = [Phrase("a red car", 0, 9, "cloc", "generated"), Phrase("a tree", 14, 20, "spacy", "generated")]
    alt = [Phrase("A red car", 0, 9, "spacy", "alt"), Phrase("the road", 13, 21, "cloc", "alt")]
    merged = merge_caption_sources(generated, alt, max_phrases=20)
    assert [(p.text, p.caption_source) for p in merged] == [
        ("a red car", "generated"),
        ("a tree", "generated"),
        ("the road", "alt"),
    ]
    assert len(merge_caption_sources(generated, alt, max_phrases=2)) == 2
    extractor = PhraseExtractor(PhraseConfig()).setup()
    only_alt = extractor.extract_for_records(["a dog on the grass"], ["a cat on a sofa"], "alt")[0]
    only_gen = extractor.extract_for_records(["a dog on the grass"], ["a cat on a sofa"], "generated")[0]
    assert {p.caption_source for p in only_alt} == {"alt"} and {p.caption_source for p in only_gen} == {"generated"}
    assert extractor.extract_for_records(["a dog"], [None], "generated") == [[]]


def test_presets_and_a_missing_captioner(tmp_path, tiny_checkpoint):
    assert build_config("cloc-full").caption.enabled and not build_config("cloc").caption.enabled
    (tmp_path / "a.tar").write_bytes(b"")
    from vesl.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="cannot load captioning checkpoint"):
        run(
            [
                "--input",
                str(tmp_path / "a.tar"),
                "--output",
                str(tmp_path / "o"),
                "--checkpoint",
                tiny_checkpoint,
                "--preset",
                "cloc-full",
                "--captioner_checkpoint",
                str(tmp_path / "nowhere"),
            ]
        )
