"""Word lists shipped as data files (vesl/text/assets/*.txt, each with its source in its header)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_word_list(name: str) -> frozenset[str]:
    text = resources.files("vesl.text").joinpath("assets", f"{name}.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def generic_words() -> frozenset[str]:
    """OWL-ST's COMMON_GENERIC_WORDS (61 words of web alt-text)."""
    return load_word_list("generic_words")


def stopwords_en() -> frozenset[str]:
    """CLOC's STOPWORDS_EN (NLTK's English list as printed in CLOC's listing, 127 words)."""
    return load_word_list("stopwords_en")


def abstract_nouns() -> frozenset[str]:
    """Heads of spaCy noun chunks dropped as abstract (GRIT's rule; VESL's list, see the file)."""
    return load_word_list("abstract_nouns")


def relational_nouns() -> frozenset[str]:
    """Position and kind nouns of idioms such as "in front of" and "a kind of" (VESL's list)."""
    return load_word_list("relational_nouns")


def partitive_nouns() -> frozenset[str]:
    """Heads of "X of Y" expressions kept whole as queries ("a group of friends", "the side of the road")."""
    return load_word_list("partitive_nouns")
