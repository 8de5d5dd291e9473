"""End to end on Beam's DirectRunner (two worker processes): real shards with real photos and
every kind of bad input, through the real stages and the tiny OWLv2 checkpoint, into Parquet,
TFRecord, rejects and summary.json; the counts must balance record by record."""

from __future__ import annotations

import glob
import json
import tarfile
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipelines.vesl import UsageError, format_summary, run
from tests import images
from vesl.io.shard_writers import RawSample, write_img2dataset_parquet, write_webdataset
from vesl.io.tfexample import decode_example
from vesl.io.tfrecord import read_tfrecord_file
from vesl.schema import SCHEMA_VERSION, TFKeys, from_parquet_row, from_tf_features

pytestmark = pytest.mark.slow

CAPTION = "a red square on a grey background next to a small dog"

# key -> ("written", (width, height)) | ("written_no_regions", None) | ("rejected", (stage, reason))
EXPECTED: dict[str, tuple[str, object]] = {
    "cmyk": ("written", (40, 30)),
    "gray": ("written", (40, 30)),
    "palette": ("written", (40, 30)),
    "alpha": ("written", (40, 30)),
    "gray16": ("written", (40, 30)),
    "exif_rotated": ("written", (60, 30)),
    "animated_gif": ("written", (40, 30)),
    "no_noun_phrase": ("written_no_regions", (40, 30)),
    "zero_bytes": ("rejected", ("decode", "empty_image")),
    "not_an_image": ("rejected", ("decode", "not_an_image")),
    "truncated_jpeg": ("rejected", ("decode", "corrupt_image")),
    "corrupt_png": ("rejected", ("decode", "corrupt_image")),
    "bomb": ("rejected", ("decode", "too_many_pixels")),
    "missing_caption": ("rejected", ("read", "missing_caption")),
    "empty_caption": ("rejected", ("read", "empty_caption")),
    "whitespace_caption": ("rejected", ("read", "empty_caption")),
    "latin1_caption": ("rejected", ("read", "caption_not_utf8")),
    "caption_100kb": ("rejected", ("read", "caption_too_long")),
    "failed_download": ("rejected", ("read", "failed_to_download")),  # img2dataset's status
}


def build_inputs(root: Path, photos: list[RawSample]) -> dict[str, int]:
    """Writes the input shards; returns how many records each key has in them."""
    root.mkdir()
    gray = images.grayscale_png()
    bad = [
        RawSample("cmyk", images.cmyk_jpeg(), CAPTION),
        RawSample("gray", gray, CAPTION, "png"),
        RawSample("palette", images.palette_png(transparent=True), CAPTION, "png"),
        RawSample("alpha", images.rgba_png(), CAPTION, "png"),
        RawSample("gray16", images.gray16_png(), CAPTION, "png"),
        RawSample("exif_rotated", images.exif_rotated_jpeg(60, 30), CAPTION),
        RawSample("animated_gif", images.animated_gif(), CAPTION, "gif"),
        RawSample("no_noun_phrase", gray, "it is what it is", "png"),
        RawSample("zero_bytes", b"", CAPTION),
        RawSample("not_an_image", b"<html><body>404</body></html>", CAPTION),
        RawSample("truncated_jpeg", images.truncated_jpeg(), CAPTION),
        RawSample("corrupt_png", images.corrupt_png(), CAPTION, "png"),
        RawSample("bomb", images.bomb_png(), CAPTION, "png"),
        RawSample("missing_caption", gray, None, "png"),
        RawSample("empty_caption", gray, "", "png"),
        RawSample("whitespace_caption", gray, " \n\t ", "png"),
        RawSample("latin1_caption", gray, "un caf\xe9 sur une table".encode("latin-1"), "png"),
        RawSample("caption_100kb", gray, "a small dog " * 9000, "png"),
        RawSample(photos[0].key, photos[0].image, "a duplicate key of a photo in shard 0"),
    ]
    write_webdataset(str(root / "part-00000.tar"), photos)
    write_webdataset(str(root / "part-00001.tar"), bad)
    write_img2dataset_parquet(str(root / "part-00002.parquet"), [*photos[1:], RawSample("failed_download", None, "x")])
    # A shard cut in the middle of its second record's image, and a shard that is not a tar at all.
    truncated = root / "part-00003.tar"
    write_webdataset(str(truncated), [RawSample(f"t{i}", photos[i].image, photos[i].caption) for i in range(3)])
    with tarfile.open(truncated) as tar:
        member = next(m for m in tar.getmembers() if m.name == "t1.jpg")
    truncated.write_bytes(truncated.read_bytes()[: member.offset_data + 100])
    (root / "part-00004.tar").write_bytes(b"garbage, not a tar archive " * 100)
    counts: dict[str, int] = {}
    for key in [s.key for s in photos] + [s.key for s in bad] + [s.key for s in photos[1:]] + ["failed_download"]:
        counts[key] = counts.get(key, 0) + 1
    counts["t0"] = counts["t1"] = 1  # t1 is cut by the truncation; t2 is never seen
    counts[""] = 1  # the unreadable shard's reject
    return counts


@pytest.fixture(scope="module")
def run_output(tmp_path_factory, tiny_checkpoint, photo_samples):
    root = tmp_path_factory.mktemp("e2e")
    counts = build_inputs(root / "input", photo_samples)
    out = root / "out"
    argv = [
        "--input",
        str(root / "input" / "*"),
        "--output",
        str(out),
        "--checkpoint",
        tiny_checkpoint,
        "--image_size",
        "64",
        "--batch_size",
        "4",
        "--query_buckets",
        "2,4,8,20",
        "--max_candidates",
        "5",
        # Random weights score arbitrarily: keep every candidate above 0 (at most 5 per image).
        "--score_threshold",
        "0",
        "--write_image_bytes",
        "true",
        # Beam's DirectRunner with two worker processes, as users run it locally.
        "--runner",
        "DirectRunner",
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
    ]
    summary = run(argv)
    return summary, out, counts, photo_samples


def parquet_rows(out: Path) -> list[dict]:
    return [row for f in sorted(glob.glob(str(out / "parquet" / "*.parquet"))) for row in pq.read_table(f).to_pylist()]


def rejects(out: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(glob.glob(str(out / "rejects" / "*.jsonl"))) for line in open(f)]


def test_every_record_is_written_or_rejected_exactly_once(run_output):
    summary, out, counts, _photos = run_output
    rows, rej = parquet_rows(out), rejects(out)
    c = summary["counts"]
    assert c["balanced"] and c["read"] == sum(counts.values()) == c["written"] + c["rejected"]
    assert c["written"] == len(rows) and c["rejected"] == len(rej)
    seen: dict[str, int] = {}
    for key in [r["key"] for r in rows] + [r["key"] for r in rej]:
        seen[key] = seen.get(key, 0) + 1
    assert seen == counts


def test_each_bad_input_is_handled_as_documented(run_output):
    summary, out, _, photos = run_output
    rows = {r["key"]: r for r in parquet_rows(out)}
    rej = {}
    for r in rejects(out):
        rej.setdefault(r["key"], []).append(r)
    for key, (outcome, detail) in EXPECTED.items():
        if outcome == "rejected":
            assert [(r["stage"], r["reason"]) for r in rej[key]] == [detail], key
            assert rej[key][0]["shard"].endswith((".tar", ".parquet")) and rej[key][0]["detail"], key
        else:
            row = rows[key]
            assert (row["width"], row["height"]) == detail, key
            assert bool(row["phrases"]) is (outcome == "written"), key
            if outcome == "written_no_regions":
                assert row["regions"] == [], key
    assert rows["no_noun_phrase"]["phrases"] == [] and summary["counts"]["written_without_phrases"] == 1
    # The duplicate in shard 1 loses to the photo read first (shard 0); the parquet copies of the
    # other photos lose to shard 0 too.
    dup = [r for r in rej[photos[0].key]]
    assert len(dup) == 1 and dup[0]["reason"] == "duplicate_key" and "part-00001.tar" in dup[0]["shard"]
    assert rows[photos[0].key]["source_shard"].endswith("part-00000.tar")
    assert [r["reason"] for r in rej["t1"]] == ["truncated_shard"] and "t0" in rows
    shard_reject = rej[""][0]
    assert shard_reject["reason"] == "unreadable_shard" and shard_reject["shard"].endswith("part-00004.tar")


def test_regions_reference_phrases_and_boxes_follow_the_convention(run_output):
    summary, out, _, _ = run_output
    rows = parquet_rows(out)
    assert summary["counts"]["regions"] == sum(len(r["regions"]) for r in rows) > 0
    for row in rows:
        labeled, provenance = from_parquet_row(row)
        assert provenance.weights == "random weights" and provenance.schema_version == SCHEMA_VERSION
        assert len(labeled.regions) <= (5 if labeled.record.phrases else 0) and len(labeled.record.phrases) <= 20
        for region in labeled.regions:
            phrase = labeled.record.phrases[region.query_index]
            assert (region.phrase, region.char_start, region.char_end) == (
                phrase.text,
                phrase.char_start,
                phrase.char_end,
            )
            x0, y0, x1, y1 = region.box
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and region.score > 0.0
        assert labeled.record.image_bytes  # --write_image_bytes


def test_parquet_is_self_describing_and_opens_in_duckdb(run_output):
    summary, out, _, _ = run_output
    files = sorted(glob.glob(str(out / "parquet" / "*.parquet")), key=lambda f: -pq.ParquetFile(f).metadata.num_rows)
    metadata = pq.read_schema(files[0]).metadata  # files[0]: the one with most rows
    assert metadata[b"vesl.schema_version"] == SCHEMA_VERSION.encode()
    assert json.loads(metadata[b"vesl.config"])["detect"]["image_size"] == 64
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"
    ((n_rows, n_regions),) = duckdb.sql(
        f"select count(*), sum(len(regions)) from read_parquet('{out}/parquet/*.parquet')"
    ).fetchall()
    assert n_rows == summary["counts"]["written"] and n_regions == summary["counts"]["regions"]


def test_tfrecords_pass_crc_and_match_parquet(run_output):
    _, out, _, _ = run_output
    examples = [
        decode_example(r)
        for f in sorted(glob.glob(str(out / "tfrecord" / "*.tfrecord")))
        for r in read_tfrecord_file(f, verify_crc=True)
    ]
    by_key = {from_tf_features(e)[0].record.key: e for e in examples}
    rows = {r["key"]: r for r in parquet_rows(out)}
    assert by_key.keys() == rows.keys()
    for key, example in by_key.items():
        labeled, _ = from_tf_features(example)
        expected, _ = from_parquet_row(rows[key])
        assert labeled.regions == expected.regions and labeled.record.phrases == expected.record.phrases
        assert example[TFKeys.ENCODED][1][0] == rows[key]["image"]
        assert example[TFKeys.WIDTH] == ("int64", [rows[key]["width"]])


def test_summary_file_and_text(run_output):
    summary, out, _, _ = run_output
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary and summary["config"]["preset"] == "cloc"
    text = format_summary(summary)
    assert "balanced" in text and "rejected at decode" in text


def test_output_with_another_config_needs_overwrite(run_output, tiny_checkpoint):
    _, out, _, _ = run_output
    with pytest.raises(UsageError, match="another configuration"):
        run(["--input", str(out.parent / "input" / "*"), "--output", str(out), "--checkpoint", tiny_checkpoint])


def test_one_file_set_per_input_shard_and_no_temporary_files_left(run_output):
    summary, out, _, _ = run_output
    ids = sorted(p.stem for p in (out / "stats").glob("*.json"))
    assert len(ids) == summary["counts"]["shards"] == summary["input_shards"] == 5
    for fmt, suffix in (("parquet", ".parquet"), ("tfrecord", ".tfrecord"), ("rejects", ".jsonl")):
        assert sorted(p.name[: -len(suffix)] for p in (out / fmt).iterdir()) == ids, fmt
    assert not (out / "_temporary").exists()


def test_missing_inputs_and_bad_checkpoint_fail_before_running(tmp_path, tiny_checkpoint):
    with pytest.raises(UsageError, match="no input matches"):
        run(["--input", str(tmp_path / "nothing-*.tar"), "--output", str(tmp_path / "o")])
    (tmp_path / "a.tar").write_bytes(b"")
    from vesl.models.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="cannot load OWLv2 checkpoint"):
        run(["--input", str(tmp_path / "a.tar"), "--output", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "no")])


def test_a_local_gpu_run_without_a_gpu_fails_loudly(tmp_path, tiny_checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "a.tar").write_bytes(b"")
    with pytest.raises(UsageError, match="no CUDA GPU"):
        run(
            [
                "--input",
                str(tmp_path / "a.tar"),
                "--output",
                str(tmp_path / "o"),
                "--checkpoint",
                tiny_checkpoint,
                "--device",
                "cuda",
                "--runner",
                "FnApiRunner",
            ]
        )


def test_asking_for_the_device_decoder_without_it_installed_fails_before_any_work(
    tmp_path, tiny_checkpoint, monkeypatch
):
    monkeypatch.setattr("vesl.vision.device_decode.nvimgcodec_installed", lambda: False)
    (tmp_path / "a.tar").write_bytes(b"")
    with pytest.raises(UsageError, match="pip install nvidia-nvimgcodec"):
        run(
            [
                *("--input", str(tmp_path / "a.tar"), "--output", str(tmp_path / "o")),
                *("--checkpoint", tiny_checkpoint, "--image_decoder", "nvimgcodec", "--runner", "FnApiRunner"),
            ]
        )
    assert not (tmp_path / "o").exists()
