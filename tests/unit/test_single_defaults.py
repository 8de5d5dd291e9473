"""Each default is declared once, in the config: the functions and command lines that take the same
setting read their defaults from it (a default copied by hand drifts when the config changes)."""

from __future__ import annotations

import inspect

from vesl.config import DetectConfig, PhraseConfig


def default(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_phrase_listers_take_the_phrase_configs_defaults():
    from vesl.text import ngrams, nltk_phrases, spacy_phrases

    assert default(nltk_phrases.cloc_noun_phrases, "max_phrases") == PhraseConfig.max_phrases
    assert default(spacy_phrases.parse_many, "batch_size") == PhraseConfig.spacy_batch_size
    listers = [
        f for _, f in inspect.getmembers(spacy_phrases, inspect.isfunction) if f.__module__ == spacy_phrases.__name__
    ]
    with_max = [f for f in listers if "max_phrases" in inspect.signature(f).parameters]
    assert with_max and all(default(f, "max_phrases") == PhraseConfig.max_phrases for f in with_max)
    assert default(ngrams.owlst_ngrams, "max_len") == PhraseConfig.max_ngram_len


def test_image_readers_take_the_pixel_cap_of_the_detect_config():
    from vesl.training.torch_dataset import VeslRegionDataset

    assert default(VeslRegionDataset.__init__, "max_image_pixels") == DetectConfig.max_image_pixels


def test_the_phrases_command_line_takes_the_phrase_configs_defaults(monkeypatch):
    import vesl.phrases

    seen = {}

    class Extractor:
        def __init__(self, config, **kwargs):
            seen["config"] = config
            raise SystemExit(0)

    monkeypatch.setattr(vesl.phrases, "PhraseExtractor", Extractor)
    try:
        vesl.phrases.main([])
    except SystemExit:
        pass
    config = seen["config"]
    assert config.mode == PhraseConfig.mode and config.max_phrases == PhraseConfig.max_phrases
