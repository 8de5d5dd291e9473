"""The phrase stage: CLOC's listing (golden), spaCy chunks, OWL-ST N-grams, the merge, spans, odd text."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesl.config import PhraseConfig
from vesl.records import Phrase
from vesl.text.ngrams import owlst_ngrams
from vesl.text.nltk_phrases import cloc_noun_phrases, tokenize_with_spans
from vesl.text.normalize import clean_caption
from vesl.text.phrases import PhraseExtractor, merge_phrases, normalize_phrase
from vesl.text.spacy_phrases import load_spacy
from vesl.text.wordlists import abstract_nouns, generic_words, stopwords_en


def texts(phrases):
    return [p.text for p in phrases]


def test_word_lists_are_the_published_ones():
    assert len(generic_words()) == 61 and {"shutterstock", "wallpaper", "photo", "png"} <= generic_words()
    assert len(stopwords_en()) == 127 and {"a", "the", "yourselves"} <= stopwords_en()
    assert {"time", "love", "freedom"} <= abstract_nouns() and "dog" not in abstract_nouns()


# -- cloc: CLOC's listing, pinned ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a red motorcycle standing in a garage", ["a red motorcycle", "a garage"]),
        # "photo" is removed BEFORE tagging, so "facial" is tagged as a noun: the listing's behaviour.
        ("A facial photo of a tabby cat", ["a facial", "a tabby cat"]),
        ("a black-and-white silhouette of a horse", ["a black-and-white silhouette", "a horse"]),
        ("Stock Photo - a dog and a dog on the beach", ["a dog", "a dog", "the beach"]),  # duplicates kept
        ("it is what it is", []),
        ("", []),
    ],
)
def test_cloc_listing_golden(caption, expected):
    assert texts(cloc_noun_phrases(caption)) == expected


def test_cloc_mode_keeps_duplicates_unless_dedupe_is_on():
    caption = "a dog and a dog on the beach"
    assert texts(PhraseExtractor(PhraseConfig(mode="cloc")).setup().extract(caption)) == ["a dog", "a dog", "the beach"]
    deduped = PhraseExtractor(PhraseConfig(mode="cloc", dedupe=True)).setup().extract(caption)
    assert texts(deduped) == ["a dog", "the beach"]
    assert PhraseExtractor(PhraseConfig(mode="nltk")).mode == "cloc"  # the old name still works


def test_cloc_listing_lowercases_and_caps_at_max():
    caption = ", ".join(f"the big {w}" for w in ["cat", "dog", "tree", "car", "house"])
    phrases = cloc_noun_phrases(caption.upper(), max_phrases=3)
    assert texts(phrases) == ["the big cat", "the big dog", "the big tree"]


def test_sentences_are_split_so_periods_do_not_stick_to_words():
    tokens, _ = tokenize_with_spans("a dog. a cat.")
    assert "dog" in tokens and "dog." not in tokens


@pytest.fixture
def with_punkt(monkeypatch):
    """A punkt model in place of NLTK's english one (its data is not reachable here): the same class that
    ``word_tokenize`` loads, with abbreviations, patched where ``word_tokenize`` looks it up."""
    from nltk import tokenize
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    from vesl.text import nltk_phrases

    params = PunktParameters()
    params.abbrev_types = {"mr", "dr", "st", "u.s"}
    splitter = PunktSentenceTokenizer(params)
    monkeypatch.setattr(tokenize, "_get_punkt_tokenizer", lambda language="english": splitter)
    nltk_phrases.punkt_splitter.cache_clear()
    yield splitter
    nltk_phrases.punkt_splitter.cache_clear()


@pytest.fixture
def without_punkt(monkeypatch):
    from nltk import tokenize

    from vesl.text import nltk_phrases

    def missing(language="english"):
        raise LookupError("Resource punkt_tab not found.")

    monkeypatch.setattr(tokenize, "_get_punkt_tokenizer", missing)
    nltk_phrases.punkt_splitter.cache_clear()
    yield
    nltk_phrases.punkt_splitter.cache_clear()


ABBREVIATED = [
    "mr. carlucci and dr. smith stand on st. mark's square. a dog sleeps!",
    "a u.s. flag on a pole? two men. mr. bean's car",
]


@pytest.mark.parametrize("caption", ABBREVIATED)
def test_cloc_tokens_are_word_tokenize_with_punkt(with_punkt, caption):
    import nltk

    tokens, spans = tokenize_with_spans(caption)
    assert tokens == nltk.word_tokenize(caption)  # the listing's own call, on the same punkt model
    assert all(caption[a:b] == t for t, (a, b) in zip(tokens, spans))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["mr.", "dr.", "u.s.", "a", "dog", "Two", ".", "!", "?", "st.", "'s", ","]), max_size=25)
)
def test_cloc_tokens_equal_word_tokenize_on_any_sentence_breaks(words):
    import nltk
    from nltk import tokenize
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    from vesl.text import nltk_phrases

    params = PunktParameters()
    params.abbrev_types = {"mr", "dr", "st", "u.s"}
    splitter = PunktSentenceTokenizer(params)
    original = tokenize._get_punkt_tokenizer
    tokenize._get_punkt_tokenizer = lambda language="english": splitter
    nltk_phrases.punkt_splitter.cache_clear()
    try:
        text = " ".join(words)
        assert tokenize_with_spans(text)[0] == nltk.word_tokenize(text)
    finally:
        tokenize._get_punkt_tokenizer = original
        nltk_phrases.punkt_splitter.cache_clear()


def test_abbreviations_keep_their_period_with_punkt(with_punkt):
    caption = "Mr. Carlucci walks a dog"
    assert texts(cloc_noun_phrases(caption))[0] == "mr. carlucci"


def test_without_punkt_cloc_falls_back_and_says_so_once(without_punkt, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="vesl"):
        first = cloc_noun_phrases("Mr. Carlucci walks a dog. A cat sleeps.")
        cloc_noun_phrases("Dr. Who")
    assert "carlucci" in texts(first) and "mr. carlucci" not in texts(first)
    notes = [r.message for r in caplog.records if "punkt" in r.message]
    assert len(notes) == 1 and "split sentences at whitespace" in notes[0]


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


# -- ngrams: OWL-ST's listing ----------------------------------------------------------------------
def test_owlst_ngrams_order_filters_and_cap():
    # OWL-ST's Figure 1 style: start position first, then length; generic words gone; no all-stopword grams.
    assert texts(owlst_ngrams("Monarch on a Zinnia stock photo")) == [
        "monarch", "monarch on", "monarch on a", "monarch on a zinnia", "on a zinnia", "a zinnia", "zinnia",
    ]  # fmt: skip
    caption = " ".join(f"w{i}" for i in range(40))
    grams = owlst_ngrams(caption)
    assert len(grams) == 300 and max(len(g.text.split()) for g in grams) == 10
    # Worked by hand: every start, then every length; "a" alone is all stopwords; repeats stay.
    assert texts(owlst_ngrams("a dog a dog", max_phrases=50)) == [
        "a dog", "a dog a", "a dog a dog", "dog", "dog a", "dog a dog", "a dog", "dog",
    ]  # fmt: skip
    assert texts(owlst_ngrams("a dog a dog", max_phrases=3)) == ["a dog", "a dog a", "a dog a dog"]
    assert texts(owlst_ngrams("dog dog")) == ["dog", "dog dog", "dog"]  # repeats kept, as in the listing


def test_ngram_spans_cover_their_words():
    caption = "Cute Dog, wallpaper HD on grass"
    for g in owlst_ngrams(caption):
        assert caption[g.char_start : g.char_end].lower().startswith(g.text.split()[0])
        assert caption[g.char_start : g.char_end].lower().endswith(g.text.split()[-1])


# -- spaCy ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nlp():
    return load_spacy("auto")


def test_fast_pos_gives_the_official_noun_chunks(nlp):
    official = load_spacy("auto", fast_pos=False)
    captions = [
        "Two young children play with a brown dog in the park.",
        "Something on the table that looks like a cat, and everyone is watching it.",
        "There is a man who is riding a horse while those people stand by.",
        "A plate of food with broccoli, rice and some meat on it",
        "The kitchen has white cabinets and a stainless steel refrigerator.",
    ]
    for fast, ref in zip(nlp.pipe(captions), official.pipe(captions)):
        assert [c.text for c in fast.noun_chunks] == [c.text for c in ref.noun_chunks]
        assert [t.pos_ for t in fast if t.pos_ in ("NOUN", "PROPN", "PRON")] == [
            t.pos_ for t in ref if t.pos_ in ("NOUN", "PROPN", "PRON")
        ]


BLAS_CAPTIONS = [
    "Two young children play with a brown dog in the park.",
    "A man riding a wave on top of a surfboard.",
    "a group of friends sitting around a table eating pizza and drinking beer",
    "The kitchen has white cabinets and a stainless steel refrigerator.",
    "A red motorcycle standing in a garage next to an old bicycle",
    "Something on the table that looks like a cat, and everyone is watching it.",
    "Mr. Carlucci's office, seen from the street at night; two taxis wait outside.",
    "black-and-white photo of a 1950s diner with chrome stools",
    "A giraffe eats leaves from a tall tree while a zebra grazes nearby.",
    "Close up of a plate with broccoli, rice and some meat on it",
]


def test_numpy_blas_parses_exactly_as_blis():
    """The speed path (numpy's BLAS, one thread) and spaCy's default (blis) give the same parse; checked on
    all 25,014 COCO val2017 captions when the switch was made (docs/phrases.md), here on a few."""
    from vesl.text.spacy_phrases import parse_many, uses_numpy_blas

    assert uses_numpy_blas("auto")  # numpy's wheels bring OpenBLAS, which threadpoolctl can limit
    fast, default = load_spacy("auto", blas="auto"), load_spacy("auto", blas="blis")
    assert fast.get_pipe("tok2vec").model.ops.use_blis is False
    assert default.get_pipe("tok2vec").model.ops.use_blis is True
    parse = lambda doc: [(t.tag_, t.pos_, t.dep_, t.head.i) for t in doc]  # noqa: E731
    assert [parse(d) for d in parse_many(fast, BLAS_CAPTIONS)] == [parse(d) for d in parse_many(default, BLAS_CAPTIONS)]


def test_parses_hold_numpys_blas_to_one_thread():
    from threadpoolctl import ThreadpoolController

    from vesl.text.spacy_phrases import parse_many

    controller = ThreadpoolController()
    seen = []

    class Recording:
        _vesl_numpy_blas = True

        def pipe(self, captions, batch_size):
            seen.append(controller.select(user_api="blas").info()[0]["num_threads"])
            return iter(())

    with controller.limit(limits=2, user_api="blas"):
        parse_many(Recording(), ["a dog"])
        after = controller.select(user_api="blas").info()[0]["num_threads"]
    assert seen == [1] and after == 2  # limited during the parse only


def test_spacy_mode_spans_and_filters():
    extractor = PhraseExtractor(PhraseConfig(mode="spacy")).setup()
    caption = "Two young children play with a brown dog in the park at that time; stock photo. It is fun."
    phrases = extractor.extract(caption)
    assert all(caption[p.char_start : p.char_end] == p.text for p in phrases)
    got = [p.text.lower() for p in phrases]
    assert "two young children" in got and "a brown dog" in got and "the park" in got
    assert "stock photo" not in got and "that time" not in got and "it" not in got  # generic, abstract, pronoun
    keep_abstract = PhraseExtractor(PhraseConfig(mode="spacy", drop_abstract_nouns=False)).setup()
    assert "that time" in [p.text for p in keep_abstract.extract(caption)]


def test_referring_expressions_grow_through_the_subtree_but_not_conjuncts():
    extractor = PhraseExtractor(PhraseConfig(mode="spacy", referring_expressions=True)).setup()
    caption = "a dog in a field of flowers"
    assert texts(extractor.extract(caption)) == ["a dog in a field of flowers"]  # GRIT's own example
    conj = extractor.extract("a cat and a dog")
    assert texts(conj) == ["a cat", "a dog"]


# -- both (default) and the merge -----------------------------------------------------------------
def test_merge_orders_by_position_dedupes_and_caps():
    cloc = [Phrase("a dog", 10, 15, "cloc"), Phrase("a cat", 0, 5, "cloc")]
    spacy = [Phrase("A cat", 0, 5, "spacy"), Phrase("the big dog park", 10, 26, "spacy")]
    merged = merge_phrases([cloc, spacy], max_phrases=20, dedupe=True)
    assert [(p.text, p.parser) for p in merged] == [("a cat", "cloc"), ("the big dog park", "spacy"), ("a dog", "cloc")]
    assert len(merge_phrases([cloc, spacy], max_phrases=2, dedupe=False)) == 2


@pytest.fixture(scope="module")
def both_extractor():
    return PhraseExtractor(PhraseConfig(mode="both")).setup()


@pytest.mark.parametrize("shared_parse", [True, False])
def test_both_mode_merges_sources(shared_parse):
    extractor = PhraseExtractor(PhraseConfig(mode="both", shared_parse=shared_parse)).setup()
    caption = "A red motorcycle standing in a garage next to it"
    phrases = extractor.extract(caption)
    keys = [normalize_phrase(p.text) for p in phrases]
    assert {"a red motorcycle", "a garage"} <= set(keys) and len(set(keys)) == len(keys) and "it" not in keys
    assert {p.parser for p in phrases} <= {"cloc", "spacy"}
    assert [p.char_start for p in phrases] == sorted(p.char_start for p in phrases)
    for p in phrases:
        assert normalize_phrase(caption[p.char_start : p.char_end]) == normalize_phrase(p.text)


def test_extract_many_matches_extract_and_caches(both_extractor):
    captions = ["a cat on a mat", "", "two dogs and a ball", "it is", "a cat on a mat"]
    batched = both_extractor.extract_many(captions)
    # One caption at a time through an extractor without a cache: parsed afresh, not read back.
    uncached = PhraseExtractor(PhraseConfig(mode="both", cache_size=0)).setup()
    assert batched == [uncached.extract(c) for c in captions]
    assert [normalize_phrase(p.text) for p in batched[2]] == ["two dogs", "a ball"]
    assert "a cat on a mat" in both_extractor._cache and not uncached._cache


def test_mode_default_dedupe():
    assert PhraseConfig(mode="cloc").dedupe_enabled() is False
    assert PhraseConfig(mode="ngrams").dedupe_enabled() is False
    assert PhraseConfig(mode="both").dedupe_enabled() is True
    assert PhraseConfig(mode="cloc", dedupe=True).dedupe_enabled() is True


# -- odd text ------------------------------------------------------------------------------------
ODD = {
    "html": "Tom &amp; Jerry&#39;s red car &lt;3 <br/> on the road",
    "url": "a red car https://cdn.example.com/img/red-car.jpg?w=640 on the road www.example.org",
    "emoji": "a happy dog 🐶🎉 with a red ball ⚽ on the grass",
    "non_english": "un chien rouge sur la plage — 一只狗在海滩上 — собака на пляже",
    "empty": "",
    "spaces": "   \n\t ",
    "punct": "!!! ??? ... ---",
}


@pytest.mark.parametrize("mode", ["cloc", "spacy", "ngrams", "both"])
@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_captions_behave(mode, name):
    caption = ODD[name]
    phrases = PhraseExtractor(PhraseConfig(mode=mode)).setup().extract(caption)
    assert len(phrases) <= 20
    for p in phrases:
        assert 0 <= p.char_start < p.char_end <= len(caption), (p, caption)
        if mode != "ngrams":
            assert normalize_phrase(caption[p.char_start : p.char_end]) == normalize_phrase(p.text), p
        assert "http" not in p.text and "www" not in p.text and "<br" not in p.text
    if name in ("empty", "spaces", "punct"):
        assert phrases == []
    if name == "html" and mode in ("cloc", "both"):
        assert "red car" in " ".join(texts(phrases)).lower()


def test_html_entities_are_unescaped_with_spans_on_the_stored_caption():
    caption = ODD["html"]
    cleaned = clean_caption(caption)
    assert cleaned.text.startswith("Tom & Jerry's red car <3")
    i = cleaned.text.index("Jerry's")
    assert caption[slice(*cleaned.span(i, i + len("Jerry's")))] == "Jerry&#39;s"


def test_a_10000_word_caption_is_handled_quickly():
    import time

    caption = " ".join(["a big brown dog chases a small red ball across the green park"] * 770)
    assert len(caption.split()) > 10_000
    for mode in ("cloc", "spacy", "ngrams", "both"):
        start = time.perf_counter()
        phrases = PhraseExtractor(PhraseConfig(mode=mode)).setup().extract(caption)
        assert 0 < len(phrases) <= 20, mode
        assert time.perf_counter() - start < 60  # a sanity bound, not a benchmark


# -- the command ---------------------------------------------------------------------------------
def test_phrases_command_reads_stdin_writes_json_lines():
    captions = "a red motorcycle in a garage\n\nTom &amp; Jerry on a sofa\n"
    result = subprocess.run(
        [sys.executable, "-m", "vesl.phrases", "--mode", "both"],
        input=captions,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["caption"] for line in lines] == ["a red motorcycle in a garage", "", "Tom &amp; Jerry on a sofa"]
    first = lines[0]["phrases"][0]
    assert set(first) == {"text", "start", "end", "source"} and first["source"] in ("cloc", "spacy")
    for line in lines:
        for p in line["phrases"]:
            assert normalize_phrase(line["caption"][p["start"] : p["end"]]) == normalize_phrase(p["text"])


PTB_TAGS = [
    "DT",
    "JJ",
    "JJR",
    "JJS",
    "NN",
    "NNS",
    "NNP",
    "NNPS",
    "VB",
    "VBZ",
    "IN",
    "CC",
    "CD",
    "PRP$",
    ",",
    ".",
    "``",
    "POS",
    "RB",
    "PDT",
    "WDT",
    "HYPH",
    "NFP",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PTB_TAGS), max_size=40))
def test_fast_np_matcher_equals_nltk_regexp_parser(tags):
    from vesl.text.nltk_phrases import np_chunk_ranges

    assert np_chunk_ranges(tags, fast=True) == np_chunk_ranges(tags, fast=False)


def test_both_mode_does_not_swallow_a_participle_the_tagger_calls_a_noun(both_extractor):
    phrases = both_extractor.extract("A red motorcycle standing in a garage")
    assert "a red motorcycle standing" not in [p.text.lower() for p in phrases]
    assert {normalize_phrase(p.text) for p in phrases} == {"a red motorcycle", "a garage"}
