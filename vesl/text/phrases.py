"""The phrase stage's core: captions -> ordered, capped lists of detector queries.

Modes (``PhraseConfig.mode``):
- ``cloc``: CLOC's listing with NLTK (``nltk_phrases``); order and duplicates as the listing.
- ``spacy``: spaCy noun chunks, GRIT-style (``spacy_phrases``), optionally referring expressions.
- ``ngrams``: OWL-ST's word N-grams (``ngrams``).
- ``both`` (default): CLOC's grammar and spaCy's noun chunks, merged: sorted by position in the
  caption, longer span first, CLOC before spaCy on ties; de-duplicated on ``normalize_phrase``;
  capped. With ``shared_parse`` (default) one spaCy parse feeds both (CLOC's grammar then runs on
  spaCy's tokens and tags); without it the CLOC side is the NLTK listing exactly.
Every mode first cleans the caption (HTML entities, tags, URLs: ``normalize``); spans always index
the caption as stored, and ``normalize_phrase(caption[start:end]) == normalize_phrase(text)`` for
every phrase of the cloc, spacy and both modes.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence

from vesl.config import PHRASE_MODE_ALIASES, PhraseConfig
from vesl.records import Phrase
from vesl.text import ngrams, nltk_phrases, spacy_phrases
from vesl.text.normalize import CleanText, clean_caption

_WORDS = re.compile(r"\w+|[^\w\s]")
_SOURCE_RANK = {nltk_phrases.SOURCE: 0, spacy_phrases.SOURCE: 1, ngrams.SOURCE: 2}


def normalize_phrase(text: str) -> str:
    """The comparison key of phrases: HTML entities unescaped, NFKC, case-folded, split into words and
    punctuation, single-spaced ("A  Dog&#39;s bone" == "a dog 's bone" == "a dog ' s bone")."""
    return " ".join(_WORDS.findall(unicodedata.normalize("NFKC", html.unescape(text)).casefold()))


def first_of_each(phrases: Sequence[Phrase]) -> list[Phrase]:
    """Phrases in order, keeping the first of those with the same ``normalize_phrase`` key."""
    seen: set[str] = set()
    unique = []
    for phrase in phrases:
        key = normalize_phrase(phrase.text)
        if key and key not in seen:
            seen.add(key)
            unique.append(phrase)
    return unique


def drop_nested_heads(phrases: Sequence[Phrase], inner: str, outer: str) -> list[Phrase]:
    """Drop ``inner``-source phrases that end where a longer ``outer``-source phrase containing them
    ends: the same head noun, less specific ("dogs" inside "two dogs", "dog" inside "his dog")."""
    outer_spans = [(p.char_start, p.char_end) for p in phrases if p.parser == outer]
    return [
        p for p in phrases if p.parser != inner or not any(s < p.char_start and e == p.char_end for s, e in outer_spans)
    ]


def merge_phrases(lists: Sequence[Sequence[Phrase]], max_phrases: int, dedupe: bool) -> list[Phrase]:
    merged = [p for phrases in lists for p in phrases]
    if len(lists) > 1:
        merged = drop_nested_heads(merged, inner=nltk_phrases.SOURCE, outer=spacy_phrases.SOURCE)
        merged.sort(key=lambda p: (p.char_start, -(p.char_end - p.char_start), _SOURCE_RANK.get(p.parser, 9)))
    return (first_of_each(merged) if dedupe else merged)[:max_phrases]


def merge_caption_sources(
    generated: Sequence[Phrase], alt: Sequence[Phrase], max_phrases: int, dedupe: bool = True
) -> list[Phrase]:
    """Phrases of a generated caption and of the alt-text as one query list: the generated caption's
    first (CLOC's main source), then the alt-text's, de-duplicated across the two on
    ``normalize_phrase``, capped. Each phrase keeps its ``caption_source``."""
    merged = [*generated, *alt]
    return (first_of_each(merged) if dedupe else merged)[:max_phrases]


def _to_caption(phrases: list[Phrase], clean: CleanText) -> list[Phrase]:
    if clean.starts is None:
        return phrases
    out = []
    for p in phrases:
        start, end = clean.span(p.char_start, p.char_end) if p.char_start >= 0 else (-1, -1)
        out.append(Phrase(p.text, start, end, p.parser))
    return out


class PhraseExtractor:
    """Loads its parsers in ``setup()`` (on the worker), then maps batches of captions to phrases."""

    def __init__(self, config: PhraseConfig):
        self.config = config
        self.mode = PHRASE_MODE_ALIASES.get(config.mode, config.mode)
        self._nlp = None
        self._cache: OrderedDict[str, list[Phrase]] = OrderedDict()

    @property
    def uses_nltk_tagger(self) -> bool:
        return self.mode == "cloc" or (self.mode == "both" and not self.config.shared_parse)

    @property
    def uses_spacy(self) -> bool:
        return self.mode in ("spacy", "both")

    def setup(self) -> PhraseExtractor:
        if self.uses_nltk_tagger:
            nltk_phrases.check_nltk_data()
        if self.uses_spacy and self._nlp is None:
            self._nlp = spacy_phrases.load_spacy(self.config.spacy_model, fast_pos=self.config.spacy_fast_pos)
        return self

    def extract_many(self, captions: Sequence[str]) -> list[list[Phrase]]:
        results: list[list[Phrase] | None] = [self._cache.get(c) for c in captions]
        missing = list(dict.fromkeys(c for c, r in zip(captions, results) if r is None))
        if missing:
            fresh = dict(zip(missing, self._extract_uncached(missing)))
            for caption, phrases in fresh.items():
                self._remember(caption, phrases)
            results = [r if r is not None else fresh[c] for c, r in zip(captions, results)]
        return [list(r) for r in results]  # type: ignore[arg-type]

    def extract(self, caption: str) -> list[Phrase]:
        return self.extract_many([caption])[0]

    def extract_for_records(self, alt: Sequence[str], generated: Sequence[str | None], use: str) -> list[list[Phrase]]:
        """Phrases from the alt-text, the generated captions, or both (``use``), tagged by source."""
        import dataclasses

        alt_lists = self.extract_many(alt) if use in ("alt", "both") else [[] for _ in alt]
        gen_lists = (
            [
                [dataclasses.replace(p, caption_source="generated") for p in ps]
                for ps in self.extract_many([g or "" for g in generated])
            ]
            if use in ("generated", "both")
            else [[] for _ in alt]
        )
        dedupe = self.config.dedupe_enabled() or use == "both"
        return [merge_caption_sources(g, a, self.config.max_phrases, dedupe) for g, a in zip(gen_lists, alt_lists)]

    def _remember(self, caption: str, phrases: list[Phrase]) -> None:
        if self.config.cache_size <= 0:
            return
        self._cache[caption] = phrases
        if len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def _extract_uncached(self, captions: Sequence[str]) -> list[list[Phrase]]:
        cfg = self.config
        cleaned = [clean_caption(c) if cfg.clean_captions else CleanText(c, None, None) for c in captions]
        texts = [c.text for c in cleaned]
        per_source: list[list[list[Phrase]]] = []
        if self.mode == "ngrams":
            per_source.append([ngrams.owlst_ngrams(t, cfg.max_phrases, cfg.max_ngram_len) for t in texts])
        if self.uses_nltk_tagger:
            per_source.append([nltk_phrases.cloc_noun_phrases(t, cfg.max_phrases) for t in texts])
        if self.uses_spacy:
            if self._nlp is None:
                self.setup()
            docs = list(spacy_phrases.parse_many(self._nlp, texts, cfg.spacy_batch_size))
            tables = [spacy_phrases.TokenTable(d) for d in docs]
            if self.mode == "both" and cfg.shared_parse:
                per_source.append(
                    [
                        spacy_phrases.cloc_grammar_phrases(
                            d, cfg.max_phrases, table=t, drop_abstract=cfg.drop_abstract_nouns
                        )
                        for d, t in zip(docs, tables)
                    ]
                )
            per_source.append(
                [
                    spacy_phrases.noun_chunk_phrases(
                        d, cfg.max_phrases, cfg.drop_abstract_nouns, cfg.referring_expressions, table=t
                    )
                    for d, t in zip(docs, tables)
                ]
            )
        dedupe = cfg.dedupe_enabled()
        return [
            _to_caption(merge_phrases([lists[i] for lists in per_source], cfg.max_phrases, dedupe), cleaned[i])
            for i in range(len(captions))
        ]
