"""OWL-ST's N-gram queries (Minderer et al. 2023, Appendix A.2, ``_get_ngrams``), with spans.

The listing: lower-case; split on whitespace; drop generic web words; ``nltk.everygrams(words,
max_len=10)`` (start position first, then length); skip N-grams made only of stopwords; stop at 300.
No de-duplication (repeats count towards the cap). An N-gram can bridge a removed generic word; its
span then covers it. One addition: N-grams with no letter or digit at all ("!!!", "--") are skipped
like all-stopword ones.
"""

from __future__ import annotations

import re

import nltk

from vesl.config import PhraseConfig
from vesl.records import Phrase
from vesl.text.wordlists import generic_words, stopwords_en

SOURCE = "ngram"
MAX_NGRAM_LEN = PhraseConfig.max_ngram_len
MAX_NUM_QUERIES = 300
_WORD = re.compile(r"\S+")


def owlst_ngrams(caption: str, max_phrases: int = MAX_NUM_QUERIES, max_len: int = MAX_NGRAM_LEN) -> list[Phrase]:
    lowered = caption.lower()
    if len(lowered) != len(caption):  # rare: lower-casing changed lengths; split the caption itself
        lowered = caption
    generic, stop = generic_words(), stopwords_en()
    words = [(m.group(0).lower(), m.start(), m.end()) for m in _WORD.finditer(lowered)]
    words = [w for w in words if w[0] not in generic]
    phrases: list[Phrase] = []
    for gram in nltk.everygrams(words, max_len=max_len):
        tokens = [w for w, _, _ in gram]
        if set(tokens) <= stop or not any(ch.isalnum() for t in tokens for ch in t):
            continue
        phrases.append(Phrase(" ".join(tokens), gram[0][1], gram[-1][2], SOURCE))
        if len(phrases) == max_phrases:
            break
    return phrases
