"""The phrase stage: CLOC's listing (golden), spaCy chunks, the merge, spans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesl.config import PhraseConfig
from vesl.records import Phrase
from vesl.text.nltk_phrases import cloc_noun_phrases, tokenize_with_spans
from vesl.text.phrases import PhraseExtractor, merge_phrases, normalize_phrase
from vesl.text.wordlists import generic_words, stopwords_en


def texts(phrases):
    return [p.text for p in phrases]


def test_word_lists_are_the_published_ones():
    assert len(generic_words()) == 61 and {"shutterstock", "wallpaper", "photo", "png"} <= generic_words()
    assert len(stopwords_en()) == 127 and {"a", "the", "yourselves"} <= stopwords_en()


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a red motorcycle standing in a garage", ["a red motorcycle", "a garage"]),
        ("A facial photo of a tabby cat", ["a facial", "a tabby cat"]),  # "photo" is removed before tagging
        ("a black-and-white silhouette of a horse", ["a black-and-white silhouette", "a horse"]),
        ("Stock Photo - a dog and a dog on the beach", ["a dog", "a dog", "the beach"]),  # duplicates kept
        ("it is what it is", []),
        ("", []),
    ],
)
def test_cloc_listing_golden(caption, expected):
    assert texts(cloc_noun_phrases(caption)) == expected


def test_cloc_listing_lowercases_and_caps_at_max():
    caption = ", ".join(f"the big {w}" for w in ["cat", "dog", "tree", "car", "house"])
    phrases = cloc_noun_phrases(caption.upper(), max_phrases=3)
    assert texts(phrases) == ["the big cat", "the big dog", "the big tree"]


def test_spans_point_into_the_original_caption():
    caption = 'İstanbul\'s "Blue" Mosque. A DOG on the beach!'
    for p in cloc_noun_phrases(caption):
        assert 0 <= p.char_start < p.char_end <= len(caption)
        assert normalize_phrase(caption[p.char_start : p.char_end]) == normalize_phrase(p.text)


def test_sentences_are_split_so_periods_do_not_stick_to_words():
    tokens, _ = tokenize_with_spans("a dog. a cat.")
    assert "dog" in tokens and "dog." not in tokens


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120))
def test_listing_spans_property(caption):
    for p in cloc_noun_phrases(caption):
        assert p.text
        if p.char_start >= 0:
            assert 0 <= p.char_start < p.char_end <= len(caption)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "red", "dog", "the", "big", "car", "on", "grass", ".", ",", "'s", '"']), max_size=25)
)
def test_tokens_are_located_in_order(words):
    text = " ".join(words)
    tokens, spans = tokenize_with_spans(text)
    located = [s for s in spans if s is not None]
    assert located == sorted(located)
    for token, span in zip(tokens, spans):
        if span is not None and token not in ("``", "''"):
            assert text[span[0] : span[1]] == token


def test_normalize_phrase_merges_spacing_and_case():
    assert normalize_phrase("A  Dog's bone") == normalize_phrase("a dog 's bone") == "a dog ' s bone"


def test_merge_orders_by_position_dedupes_and_caps():
    nltk = [Phrase("a dog", 10, 15, "nltk"), Phrase("a cat", 0, 5, "nltk")]
    spacy = [Phrase("A cat", 0, 5, "spacy"), Phrase("the big dog park", 10, 26, "spacy")]
    merged = merge_phrases([nltk, spacy], max_phrases=20, dedupe=True)
    assert [(p.text, p.parser) for p in merged] == [("a cat", "nltk"), ("the big dog park", "spacy"), ("a dog", "nltk")]
    assert len(merge_phrases([nltk, spacy], max_phrases=2, dedupe=False)) == 2


@pytest.fixture(scope="module")
def both_extractor():
    return PhraseExtractor(PhraseConfig(mode="both")).setup()


def test_both_mode_merges_parsers(both_extractor):
    caption = "A red motorcycle standing in a garage next to it"
    phrases = both_extractor.extract(caption)
    assert {normalize_phrase(p.text) for p in phrases} >= {"a red motorcycle", "a garage"}
    assert len({normalize_phrase(p.text) for p in phrases}) == len(phrases)
    assert all(p.parser in ("nltk", "spacy") for p in phrases)
    assert not any(normalize_phrase(p.text) == "it" for p in phrases)  # pronoun chunks are skipped
    starts = [p.char_start for p in phrases]
    assert starts == sorted(starts)


def test_spacy_mode_spans_are_exact_substrings():
    extractor = PhraseExtractor(PhraseConfig(mode="spacy")).setup()
    caption = "Two young children play with a brown dog in the park; stock photo."
    phrases = extractor.extract(caption)
    assert phrases and all(caption[p.char_start : p.char_end] == p.text for p in phrases)
    assert "stock photo" not in [p.text.lower() for p in phrases]  # all-generic chunks are skipped


def test_extract_many_matches_extract(both_extractor):
    captions = ["a cat on a mat", "", "two dogs and a ball", "it is"]
    assert both_extractor.extract_many(captions) == [both_extractor.extract(c) for c in captions]


def test_mode_default_dedupe():
    assert PhraseConfig(mode="nltk").dedupe_enabled() is False
    assert PhraseConfig(mode="both").dedupe_enabled() is True
    assert PhraseConfig(mode="nltk", dedupe=True).dedupe_enabled() is True
