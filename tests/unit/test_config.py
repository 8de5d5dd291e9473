"""Config: presets as data, overrides, validation, options mapping."""

from __future__ import annotations

import pytest

from vesl.config import OFF, build_config, preset_names
from vesl.options import VeslOptions, config_from_options


def test_presets_exist_and_differ():
    assert preset_names() == ["cloc", "cloc-full", "grit", "owlst"]
    cloc, owlst, grit = build_config("cloc"), build_config("owlst"), build_config("grit")
    assert cloc.filter.score_threshold == 0.1 and cloc.detect.image_size == 448 and cloc.phrases.max_phrases == 20
    assert cloc.filter.nms_iou is None and cloc.filter.keep_image_min_score is None
    assert owlst.filter.keep_image_min_score == 0.3
    assert grit.phrases.mode == "spacy" and grit.filter.nms_iou == 0.5 and grit.filter.drop_images_without_regions
    assert owlst.phrases.mode == "ngrams" and owlst.phrases.max_phrases == 300 and owlst.detect.query_buckets[-1] == 300
    assert len({cloc.digest(), owlst.digest(), grit.digest()}) == 3


def test_overrides_and_off():
    cfg = build_config(
        "grit", {"filter": {"nms_iou": OFF, "score_threshold": 0.3}, "detect": {"query_buckets": [2, 4]}}
    )
    assert cfg.filter.nms_iou is None and cfg.filter.score_threshold == 0.3 and cfg.detect.query_buckets == (2, 4)
    assert build_config("grit", {"filter": {"nms_iou": None}}).filter.nms_iou == 0.5  # None = not given


@pytest.mark.parametrize(
    "overrides",
    [
        {"phrases": {"mode": "bogus"}},
        {"filter": {"score_threshold": 1.5}},
        {"detect": {"query_buckets": [8, 4]}},
        {"write": {"parquet": False, "tfrecord": False}},
        {"filter": {"no_such_field": 1}},
        {"nosection": {}},
    ],
)
def test_invalid_configs_are_refused(overrides):
    with pytest.raises(ValueError):
        build_config("cloc", overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="known presets: cloc, cloc-full, grit, owlst"):
        build_config("nope")


def test_command_line_options_map_to_config():
    options = VeslOptions(
        [
            "--preset",
            "grit",
            "--nms_iou",
            "off",
            "--max_phrases",
            "5",
            "--write_image_bytes",
            "true",
            "--query_buckets",
            "2,5",
            "--runner",
            "FnApiRunner",
        ]
    )
    cfg = config_from_options(options)
    assert cfg.preset == "grit" and cfg.filter.nms_iou is None and cfg.phrases.max_phrases == 5
    assert cfg.write.write_image_bytes is True and cfg.detect.query_buckets == (2, 5)
    assert cfg.filter.score_threshold == 0.65  # untouched preset value


# Each preset's recipe values, as the papers state them (README "Presets"). A change to a preset
# file must change this table too, on purpose.
PAPER_VALUES = {
    # CLOC (Chen et al., ICML 2025), VESL: OWLv2 CLIP L/14 at 448 px, <= 20 phrase queries, boxes with
    # score > 0.1, no NMS / cap / image rule stated.
    "cloc": {
        ("detect", "checkpoint"): "google/owlv2-large-patch14-finetuned",
        ("detect", "image_size"): 448,
        ("phrases", "mode"): "both",
        ("phrases", "max_phrases"): 20,
        ("filter", "score_threshold"): 0.1,
        ("filter", "nms_iou"): None,
        ("filter", "max_regions_per_image"): None,
        ("filter", "keep_image_min_score"): None,
        ("filter", "drop_images_without_regions"): False,
        ("caption", "enabled"): False,
    },
    # CLOC with visually enriched captions: the same detection, captions generated and merged.
    "cloc-full": {
        ("detect", "image_size"): 448,
        ("phrases", "max_phrases"): 20,
        ("filter", "score_threshold"): 0.1,
        ("caption", "enabled"): True,
        ("caption", "use"): "both",
    },
    # OWL-ST (Minderer et al., NeurIPS 2023): word N-grams up to 10 words, up to 300 queries, boxes
    # with score 0.1, images kept only with a box of at least 0.3.
    "owlst": {
        ("phrases", "mode"): "ngrams",
        ("phrases", "max_ngram_len"): 10,
        ("phrases", "max_phrases"): 300,
        ("filter", "score_threshold"): 0.1,
        ("filter", "keep_image_min_score"): 0.3,
        ("detect", "image_size"): 448,
    },
    # GRIT (Kosmos-2, Peng et al., 2023): spaCy noun chunks without abstract nouns, NMS at 0.5, boxes
    # with score > 0.65, images without a box dropped.
    "grit": {
        ("phrases", "mode"): "spacy",
        ("phrases", "drop_abstract_nouns"): True,
        ("filter", "score_threshold"): 0.65,
        ("filter", "nms_iou"): 0.5,
        ("filter", "drop_images_without_regions"): True,
    },
}


@pytest.mark.parametrize("preset", sorted(PAPER_VALUES))
def test_preset_values_are_the_papers(preset):
    config = build_config(preset)
    found = {(section, field): getattr(getattr(config, section), field) for section, field in PAPER_VALUES[preset]}
    assert found == PAPER_VALUES[preset]
