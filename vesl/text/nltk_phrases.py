"""CLOC's noun-phrase listing (Appendix C, Listing 1) with character spans.

The listing: lower-case the caption; ``nltk.word_tokenize``; drop OWL-ST's generic web words;
``nltk.pos_tag``; ``RegexpParser("NP: {<DT>?<JJ.*>*<NN.*>+}")``; join each NP's words with spaces;
skip chunks made only of stopwords; keep the first 20. No de-duplication.

Sentences: ``word_tokenize`` splits sentences with NLTK's punkt model, then runs the Treebank
tokenizer on each. VESL does exactly that when punkt's data (``punkt_tab``, fetched by ``make setup``)
is installed: the same punkt tokenizer instance ``word_tokenize`` uses gives the sentence spans, and
``word_tokenize(sentence, preserve_line=True)`` the tokens. Without it (offline machines), VESL says so
once in the log and splits sentences at whitespace after ``.``, ``!`` or ``?``; that differs from the
listing only around abbreviations ("mr. carlucci" -> "mr" + "carlucci" instead of "mr." + "carlucci")
and other periods punkt does not take for a sentence end.

Spans: each token is located in the caption, so ``caption[char_start:char_end]`` is the phrase as
written; the phrase ``text`` stays the listing's space-joined lower-case words.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import cache

import nltk

from vesl.config import PhraseConfig
from vesl.records import Phrase
from vesl.text.wordlists import generic_words, stopwords_en

NP_GRAMMAR = "NP: {<DT>?<JJ.*>*<NN.*>+}"
SOURCE = "cloc"
# The Treebank tokenizer rewrites double quotes as `` and ''.
_QUOTE_FORMS = {"``": ('"', "``", "''"), "''": ('"', "''", "``")}
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
REQUIRED_NLTK_DATA = ("taggers/averaged_perceptron_tagger_eng/",)
PUNKT_DATA = "tokenizers/punkt_tab/english/"  # optional: the listing's sentence splitter
log = logging.getLogger("vesl")


class NltkDataMissing(RuntimeError):
    pass


def check_nltk_data() -> None:
    """Fail with one clear line when the tagger data cannot be found on NLTK's data path."""
    for resource in REQUIRED_NLTK_DATA:
        try:
            nltk.data.find(resource)
        except LookupError:
            raise NltkDataMissing(
                f"NLTK data {resource!r} not found (searched {nltk.data.path}); run "
                "`python -m nltk.downloader averaged_perceptron_tagger_eng` or set NLTK_DATA "
                "to a folder that holds it"
            ) from None


@cache
def _chunker() -> nltk.RegexpParser:
    return nltk.RegexpParser(NP_GRAMMAR)


def lower_with_offsets(text: str) -> tuple[str, list[int] | None]:
    """``text.lower()`` and, when lower-casing changed the length (e.g. 'İ'), the original index of
    every lower-cased character; None when indexes are unchanged."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered, None
    offsets: list[int] = []
    for i, ch in enumerate(text):
        offsets.extend([i] * len(ch.lower()))
    return lowered, offsets


@cache
def punkt_splitter():
    """The punkt tokenizer ``nltk.word_tokenize`` uses (the same cached instance), or None, said once in the
    log, when its data is not installed."""
    from nltk import tokenize

    try:
        return tokenize._get_punkt_tokenizer("english")
    except LookupError:
        log.warning(
            "NLTK punkt data (%s) not found: cloc phrases split sentences at whitespace after . ! ? instead "
            "(install it with `python -m nltk.downloader punkt_tab`; docs/phrases.md)",
            PUNKT_DATA,
        )
        return None


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: punkt's, as ``word_tokenize`` splits them, or the fallback split."""
    splitter = punkt_splitter()
    if splitter is not None:
        spans = list(splitter.span_tokenize(text))
    else:
        spans, start = [], 0
        for m in _SENTENCE_BREAK.finditer(text):
            spans.append((start, m.start()))
            start = m.end()
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if e > s]


def tokenize_with_spans(text: str) -> tuple[list[str], list[tuple[int, int] | None]]:
    """Treebank tokens of ``text`` with their (start, end) in ``text`` (None if not locatable)."""
    tokens: list[str] = []
    spans: list[tuple[int, int] | None] = []
    for s_start, s_end in sentence_spans(text):
        sentence = text[s_start:s_end]
        cursor = 0
        for token in nltk.word_tokenize(sentence, preserve_line=True):
            best = None
            for form in _QUOTE_FORMS.get(token, (token,)):
                i = sentence.find(form, cursor)
                if i >= 0 and (best is None or i < best[0]):
                    best = (i, i + len(form))
            tokens.append(token)
            if best is None:
                spans.append(None)
            else:
                spans.append((s_start + best[0], s_start + best[1]))
                cursor = best[1]
    return tokens, spans


# NP_GRAMMAR as a regular expression over one letter per tag: D = DT, J = JJ*, N = NN*, x = other.
_FAST_NP = re.compile(r"D?J*N+")


def _tag_letter(tag: str) -> str:
    if tag == "DT":
        return "D"
    if tag.startswith("JJ"):
        return "J"
    return "N" if tag.startswith("NN") else "x"


def np_chunk_ranges(tags: Sequence[str], fast: bool = False) -> list[tuple[int, int]]:
    """(first, last) token indexes of the NP chunks of ``NP_GRAMMAR``. ``fast`` matches the grammar
    with one regular expression instead of NLTK's RegexpParser: the same leftmost, greedy,
    non-overlapping matches (a property test checks they agree), without building a tree."""
    if fast:
        letters = "".join(map(_tag_letter, tags))
        return [(m.start(), m.end() - 1) for m in _FAST_NP.finditer(letters)]
    tree = _chunker().parse([(str(i), tag) for i, tag in enumerate(tags)])
    ranges, position = [], 0
    for node in tree:
        if isinstance(node, nltk.Tree):
            if node.label() == "NP":
                ranges.append((position, position + len(node) - 1))
            position += len(node)
        else:
            position += 1
    return ranges


def chunk_tagged(
    tagged: Sequence[tuple[str, str]],
    spans: Sequence[tuple[int, int] | None],
    max_phrases: int,
    source: str,
    fast: bool = False,
) -> list[Phrase]:
    """The listing's chunking on (word, tag) pairs whose character spans are known: NP chunks by
    ``NP_GRAMMAR``, all-stopword chunks skipped, words joined by spaces, first ``max_phrases``."""
    if not tagged:
        return []
    stop = stopwords_en()
    phrases: list[Phrase] = []
    for first, last in np_chunk_ranges([tag for _, tag in tagged], fast):
        words = [word for word, _ in tagged[first : last + 1]]
        if set(words) <= stop:
            continue
        start = next((spans[i] for i in range(first, last + 1) if spans[i] is not None), None)
        end = next((spans[i] for i in range(last, first - 1, -1) if spans[i] is not None), None)
        if start is None or end is None:
            char_start = char_end = -1  # no token could be located: the phrase keeps no span
        else:
            char_start, char_end = start[0], end[1]
        phrases.append(Phrase(" ".join(words), char_start, char_end, source))
        if len(phrases) == max_phrases:
            break
    return phrases


def cloc_noun_phrases(caption: str, max_phrases: int = PhraseConfig.max_phrases) -> list[Phrase]:
    """CLOC's ``find_noun_phrases(caption)``, returning spans too. Order and duplicates as the listing."""
    lowered, offsets = lower_with_offsets(caption)
    tokens, spans = tokenize_with_spans(lowered)
    if offsets is not None:  # lower-casing changed lengths: map spans back to the caption
        spans = [None if s is None else (offsets[s[0]], offsets[s[1] - 1] + 1) for s in spans]
    generic = generic_words()
    kept = [(tok, span) for tok, span in zip(tokens, spans) if tok not in generic]
    if not kept:
        return []
    tagged = nltk.pos_tag([tok for tok, _ in kept])
    return chunk_tagged(tagged, [span for _, span in kept], max_phrases, SOURCE)


if __name__ == "__main__":
    # `python -m vesl.text.nltk_phrases`: check the required NLTK data, one line either way;
    # `--punkt`: check the optional punkt data (exit 1 when it is missing).
    import sys

    if "--punkt" in sys.argv[1:]:
        try:
            nltk.data.find(PUNKT_DATA)
        except LookupError:
            print(
                f"vesl: NLTK punkt data ({PUNKT_DATA}) not found: cloc phrases split sentences at whitespace "
                "after . ! ? instead (docs/phrases.md)",
                file=sys.stderr,
            )
            sys.exit(1)
        print("vesl: NLTK punkt data found")
        sys.exit(0)
    try:
        check_nltk_data()
    except NltkDataMissing as exc:
        print(f"vesl: {exc}", file=sys.stderr)
        sys.exit(1)
    print("vesl: NLTK data found")
