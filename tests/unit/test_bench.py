"""Benchmarks run in tests (tiny inputs) so they cannot rot; no timing is asserted."""

from __future__ import annotations

import json

import pytest

from bench import phrases


def test_phrase_bench_prints_json(capsys):
    phrases.main(["--limit", "40", "--modes", "cloc,both"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["mode"] for r in lines] == ["cloc", "both"]
    assert all(r["captions"] == 40 and r["captions_per_s"] > 0 for r in lines)


def test_phrase_quality_bench_scores_spans(tmp_path, capsys):
    from bench import phrase_quality

    conll = tmp_path / "mini.txt"
    conll.write_text(
        "The DT B-NP\nred JJ I-NP\ncar NN I-NP\nstopped VBD B-VP\nnear IN B-PP\ntwo CD B-NP\ndogs NNS I-NP\n. . O\n\n"
        "He PRP B-NP\nsaw VBD B-VP\na DT B-NP\ncat NN I-NP\n. . O\n"
    )
    sentences = phrase_quality.read_conll(str(conll))
    assert [s.text for s in sentences] == ["The red car stopped near two dogs .", "He saw a cat ."]
    assert sentences[0].gold == {(0, 11), (25, 33)} and sentences[1].gold == {(0, 2), (7, 12)}
    assert sentences[1].nominal == {(7, 12)}
    phrase_quality.main(["--conll", str(conll), "--modes", "cloc,spacy"])
    results = {r["mode"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    # CLOC's grammar has no <CD>: "two dogs" is missed, "dogs" is a false positive.
    assert results["cloc"]["conll"]["all_np"] == {"precision": 0.6667, "recall": 0.5, "f1": 0.5714}
    assert results["spacy"]["conll"]["nominal_np"]["recall"] == 1.0


def test_detect_bench_runs_on_cpu_with_the_tiny_architecture(capsys):
    from bench import detect

    results = detect.main(
        [
            "--arch",
            "tiny",
            "--image-size",
            "64",
            "--batch",
            "2",
            "--images",
            "4",
            "--workers",
            "1",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--equality-images",
            "4",
        ]
    )
    by_mode = {r["mode"]: r for r in results}
    assert set(by_mode) == {"e2e", "model", "equality"}
    assert by_mode["e2e"]["img_per_s"] > 0 and by_mode["e2e"]["images_timed"] == 4
    assert by_mode["model"]["img_per_s"] > 0
    assert by_mode["equality"]["passed"] is True  # float32 SDPA + caches against float32 eager
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_detect_bench_measures_both_backends_side_by_side(capsys):
    """--backends torch,jax: the same random weights through both; the jax lines add its load and per-bucket
    compile times; every line has its backend's own peak memory."""
    import pytest

    pytest.importorskip("jax", reason="JAX is not installed (make test installs requirements/jax.txt)")
    from bench import detect

    args = "--arch tiny --image-size 64 --batch 2 --images 4 --workers 1 --dtype float32 --device cpu"
    results = detect.main([*args.split(), "--equality-images", "4", "--backends", "torch,jax", "--jax-device", "cpu"])
    by = {(r["backend"], r["mode"]): r for r in results}
    assert set(by) == {(b, m) for b in ("torch", "jax") for m in ("e2e", "model", "equality")} | {("jax", "load")}
    assert set(by["jax", "load"]["compile_s"]) >= {"image-1", "image-2", "head-2-20", "text-8"}
    assert by["jax", "equality"]["passed"] is True and by["jax", "equality"]["reference_boxes"] > 0
    assert by["jax", "e2e"]["regions_per_image"] == by["torch", "e2e"]["regions_per_image"]
    assert all(r["peak_rss_mb"] > 0 for r in results)


def test_detect_bench_times_the_jax_model_alone(capsys):
    """--backends jax --modes model without the torch backend first in the same process."""
    import pytest

    pytest.importorskip("jax", reason="JAX is not installed (make test installs requirements/jax.txt)")
    from bench import detect

    args = "--arch tiny --image-size 64 --batch 2 --images 2 --dtype float32 --device cpu --modes model"
    results = detect.main([*args.split(), "--backends", "jax", "--jax-device", "cpu"])
    assert [r["mode"] for r in results if r["backend"] == "jax"] == ["load", "model"]
    assert results[-1]["img_per_s"] > 0


def test_detect_bench_decodes_on_the_device_when_asked(capsys):
    """--image-decoder nvimgcodec (CPU backend here): e2e and the equality check run through the
    device decoder; the equality reference still decodes with Pillow."""
    import pytest

    pytest.importorskip("nvidia.nvimgcodec")
    from bench import detect

    args = "--arch tiny --image-size 64 --batch 2 --images 4 --workers 1 --dtype float32 --device cpu"
    results = detect.main(
        [*args.split(), "--equality-images", "4", "--modes", "e2e,equality", "--image-decoder", "nvimgcodec"]
    )
    by_mode = {r["mode"]: r for r in results}
    assert by_mode["e2e"]["image_decoder"] == "nvimgcodec" and by_mode["e2e"]["decoder_fallbacks"] == 0
    assert by_mode["e2e"]["images_timed"] == 4
    assert by_mode["equality"]["reference_boxes"] > 0 and by_mode["equality"]["max_score_diff"] <= 0.02


def test_compiled_detector_passes_the_equality_check_with_padded_partial_batches(capsys):
    """torch.compile (inductor on CPU) of the image tower, fp32: the last equality batch has 3 of 4
    images and runs padded to the 4-image bucket; the result still equals the eager reference."""
    from bench import detect

    args = "--arch tiny --image-size 64 --batch 4 --images 4 --workers 1 --dtype float32 --device cpu --compile"
    (result,) = detect.main([*args.split(), "--modes", "equality", "--equality-images", "7"])
    assert result["compile"] is True and result["images"] == 7
    assert result["reference_boxes"] > 0 and result["passed"] is True, result


def test_caption_bench_runs_on_cpu_with_the_tiny_captioner(capsys):
    from bench import caption

    result = caption.main(
        [
            "--arch",
            "tiny",
            "--batch",
            "2",
            "--images",
            "4",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--max-new-tokens",
            "5",
            "--num-beams",
            "1",
        ]
    )
    assert result["img_per_s"] > 0 and result["words_per_caption"] <= 5
    assert json.loads(capsys.readouterr().out)["arch"] == "tiny"


def test_listing_bench_lists_every_shard_both_ways(tmp_path, capsys):
    from bench import listing

    listing.main(["--shards", "300", "--work", str(tmp_path)])
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["driver_listed"] == row["workers_listed"] == 300
    assert row["graph_bytes_driver"] > 0 and row["graph_bytes_workers"] > 0


@pytest.mark.slow  # two pipeline runs (~40 s)
def test_scale_bench_measures_again_in_a_reused_work_folder(tmp_path, capsys):
    """A second run over the same --work folder must process its images again, not resume the first
    run's committed output (which measured nothing: found on 2026-12-02)."""
    from bench import scale
    from tests.conftest import PHOTOS

    captions = tmp_path / "captions.txt"
    captions.write_text("a cat on a sofa\na red motorcycle in a garage\n")
    argv = ["--sizes", "6", "--per-shard", "3", "--photos", str(PHOTOS), "--captions", str(captions)]
    argv += ["--work", str(tmp_path / "work"), "--decoder", "pil"]
    for extra in ([], ["--stages"]):
        scale.main(argv + extra)
        lines = capsys.readouterr().out.splitlines()
        row = json.loads(lines[0])
        # the VM's speed of the day, before and after the runs, to compare host figures across days
        assert [v > 0 for v in json.loads(lines[-1])["yardstick"]["phrases_both_captions_per_s"]] == [True, True]
        assert row["images"] == row["written"] + row["rejected"] == 6
        assert row["device_cpu_s"] > 0  # the detector ran: the images were processed, not kept as committed
        assert abs(row["user_s"] + row["system_s"] - row["cpu_s"]) < 0.02
    # --stages: the stages, the collector and the live threads of the run itself
    assert row["stage_cpu_s"]["ExtractPhrasesFn"] > 0 and row["thread_cpu_s"]["MainThread"] > 0
    assert row["collector"]["gen0_collections"] > 0


def test_beam_overhead_bench_prints_json(capsys):
    from bench import beam_overhead

    beam_overhead.main(["--elements", "200", "--steps", "2"])
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(row["fused_step_us"]) == {"int", "record"}
    arrow = row["encode_us"].pop("parquet_row_in_arrow_batch")
    assert arrow["build_batch"] > 0 and arrow["ipc_round_trip"] > 0
    assert all(v > 0 for v in row["encode_us"].values())


def test_patch_targets_bench_prints_json_for_each_grid(tmp_path, capsys):
    from bench import patch_targets

    # a missing instances file: seeded random boxes (the bench checks both ways agree before timing)
    assert (
        patch_targets.main(["--instances", str(tmp_path / "none.json"), "--grids", "28/14,56/8", "--repeat", "1"]) == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["grid"] for line in lines] == ["28/14", "56/8"]
    assert all(line["direct_union_ms_per_image"] > 0 and line["images"] == 50 for line in lines)


def test_bf16_fidelity_bench_compares_both_backends_on_each_variant(capsys):
    """One line per (box head scale, size, backend); the scaled variant really is another model (its box
    head's raw outputs spread ~50x less); misses are classified and add up to the unmatched boxes (boxes
    under one input pixel are neither)."""
    pytest.importorskip("jax", reason="JAX is not installed (make test installs requirements/jax.txt)")
    from bench import bf16_fidelity

    rows = bf16_fidelity.main(["--sizes", "32/interpolate", "--images", "4", "--box-head-scales", "1,0.02"])
    assert [(r["box_head_scale"], r["backend"]) for r in rows] == [
        (1.0, "torch"),
        (1.0, "jax"),
        (0.02, "torch"),
        (0.02, "jax"),
    ]
    assert rows[0]["box_head_raw_std"] > 20 * rows[2]["box_head_raw_std"]
    for row in rows:
        assert row["reference_boxes"] > 0 and 0 < row["matched_fraction"] <= 1
        assert sum(row["misses"].values()) <= row["reference_boxes"] - row["matched_boxes"]
        if row["backend"] == "torch":  # bf16 moves the raw box outputs, by far less than their size
            assert 0 < row["box_head_raw_relative_error"] < 0.1
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert {r["dtype"] for r in rows} == {"bfloat16"}
