"""The phrase stage's core: captions -> ordered, capped lists of detector queries.

Modes: ``nltk`` (CLOC's listing), ``spacy`` (noun chunks), ``both`` (the two merged: sorted by
position in the caption, longer span first, NLTK before spaCy on ties; de-duplicated on
``normalize_phrase``; capped at ``max_phrases``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from vesl.config import PhraseConfig
from vesl.records import Phrase
from vesl.text import nltk_phrases, spacy_phrases

_WORDS = re.compile(r"\w+|[^\w\s]")
_PARSER_RANK = {nltk_phrases.PARSER_NAME: 0, spacy_phrases.PARSER_NAME: 1}


def normalize_phrase(text: str) -> str:
    """The de-duplication key: NFKC, case-folded, split into words and punctuation, single-spaced,
    so "A  Dog's bone" and "a dog 's bone" are the same phrase."""
    return " ".join(_WORDS.findall(unicodedata.normalize("NFKC", text).casefold()))


def merge_phrases(lists: Sequence[Sequence[Phrase]], max_phrases: int, dedupe: bool) -> list[Phrase]:
    merged = [p for phrases in lists for p in phrases]
    if len(lists) > 1:
        merged.sort(key=lambda p: (p.char_start, -(p.char_end - p.char_start), _PARSER_RANK.get(p.parser, 9)))
    if dedupe:
        seen: set[str] = set()
        unique = []
        for phrase in merged:
            key = normalize_phrase(phrase.text)
            if key and key not in seen:
                seen.add(key)
                unique.append(phrase)
        merged = unique
    return merged[:max_phrases]


class PhraseExtractor:
    """Loads its parsers in ``setup()`` (on the worker), then maps batches of captions to phrases."""

    def __init__(self, config: PhraseConfig):
        self.config = config
        self._nlp = None

    @property
    def uses_nltk(self) -> bool:
        return self.config.mode in ("nltk", "both")

    @property
    def uses_spacy(self) -> bool:
        return self.config.mode in ("spacy", "both")

    def setup(self) -> PhraseExtractor:
        if self.uses_nltk:
            nltk_phrases.check_nltk_data()
        if self.uses_spacy and self._nlp is None:
            self._nlp = spacy_phrases.load_spacy(self.config.spacy_model)
        return self

    def extract_many(self, captions: Sequence[str]) -> list[list[Phrase]]:
        cfg = self.config
        per_parser: list[list[list[Phrase]]] = []
        if self.uses_nltk:
            per_parser.append([nltk_phrases.cloc_noun_phrases(c, cfg.max_phrases) for c in captions])
        if self.uses_spacy:
            if self._nlp is None:
                self.setup()
            docs = spacy_phrases.parse_many(self._nlp, captions, cfg.spacy_batch_size)
            per_parser.append([spacy_phrases.noun_chunk_phrases(d, cfg.max_phrases) for d in docs])
        dedupe = cfg.dedupe_enabled()
        return [
            merge_phrases([lists[i] for lists in per_parser], cfg.max_phrases, dedupe) for i in range(len(captions))
        ]

    def extract(self, caption: str) -> list[Phrase]:
        return self.extract_many([caption])[0]
