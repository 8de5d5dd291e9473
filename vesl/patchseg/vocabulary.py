"""Phrases -> a class vocabulary, so VESL's open-vocabulary regions can become class targets
(patch-seg, Locality Alignment's benchmark, wants a fixed list of classes).

A vocabulary file holds one class per line, its name and then any aliases after commas (UTF-8; blank
lines and lines starting with ``#`` are ignored). Class ``i`` is the i-th name (1-based, file order); 0 means "unlabeled". Two are
bundled: ``coco_things`` (COCO's 80 categories in category-id order) and ``coco_stuff`` (COCO-Stuff's
182 classes in COCO-Stuff id order). ``write_frequent_heads`` makes one from an output's own phrases.

Matching by head noun (``Matcher``). A VESL phrase is a noun phrase ("two black cats", "the man's red
umbrella", "a group of people"); its head is the last word before the first connector (a preposition,
conjunction or relative word: "a group of people" -> "group", "a sink and a mirror" -> "sink"),
connectors leading the phrase skipped ("between two cars" -> "cars"). The head is compared by lemma,
the words before it as written (lower case, hyphens as spaces, possessive "'s" dropped): a class
matches when its words, last one lemmatized, are the last words of the phrase up to its head
("baseball bats" -> "baseball bat"). The longest matching class name (in words) wins; among equally
long ones the longer name, then a class's own name over another's alias, then the smaller index.
Aliases (a file line ``person, man, people``) are other names of a class; there are no other synonyms.

COCO-Stuff's hyphenated names read as phrases: "X-other" and "X-stuff" are matched as "X" (so "a
building" -> "building-other", and "door-stuff" beats the unused thing id "door" by the tie rule);
any other "A-B" as "B A" or "A B" ("a brick wall" -> "wall-brick", "ceiling tiles" -> "ceiling-tile").

The lemmatizer is a deterministic rule-based plural -> singular (``singular``): suffix rules plus
short lists of irregular and invariant nouns. Chosen over spaCy's tagger and lemmatizer because the
rules give a word the same lemma wherever it occurs (the class names and the phrases go through the
same function, whatever the context or the spaCy model version), need no model in the process that
exports or scores, and cost microseconds a phrase where a parse costs about a millisecond. The price:
a phrase that ends in a verb ("a white stove sits", which CLOC's grammar can give) gets the verb as
its head where spaCy's parse would find "stove", and a plural the rules get wrong keeps a form no
class has, so such regions mostly stay unlabeled. Results are cached per distinct phrase (an output
has millions of regions but far fewer distinct phrases).

Matching by embedding (``EmbeddingMatcher``): for phrases the head match leaves unlabeled, the
detector's own text tower (OWLv2's, as VESL runs it) embeds the class names once and each distinct
phrase in batches; the most similar class (cosine) is taken when its similarity reaches a threshold.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import numpy as np

from vesl.records import LabeledImage

UNLABELED = "unlabeled"
BUNDLED = ("coco_things", "coco_stuff")
MatchKind = Literal["head", "embedding"]

# -- vocabulary files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """Class names in index order (class i = ``names[i - 1]``; 0 = unlabeled), and per class the other
    names a phrase may use for it (``aliases``: "person" <- "man", "people"; a file line
    ``person, man, people``, ADE20k's own convention). Any length is representable; a consumer with a
    narrower label type (8-bit PNG) checks ``len()`` itself."""

    names: tuple[str, ...]
    aliases: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self):
        if not self.aliases:
            object.__setattr__(self, "aliases", tuple(() for _ in self.names))
        if len(self.aliases) != len(self.names):
            raise ValueError(f"{len(self.names)} class names but {len(self.aliases)} alias lists")
        if not self.names:
            raise ValueError("a vocabulary needs at least one class name")
        repeated = sorted(name for name, n in Counter(self.names).items() if n > 1)
        if repeated:
            raise ValueError(f"class names must be distinct (an index per name): {repeated}")
        if UNLABELED in self.names:
            raise ValueError(f"{UNLABELED!r} is class 0 and cannot be a class name")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def parse(cls, text: str) -> Vocabulary:
        """A vocabulary file's text: a class a line (its name, then any aliases after commas), blank
        lines and ``#`` comments skipped."""
        lines = (line.strip() for line in text.splitlines())
        entries = [[n.strip() for n in line.split(",")] for line in lines if line and not line.startswith("#")]
        return cls(tuple(e[0] for e in entries), tuple(tuple(n for n in e[1:] if n) for e in entries))

    def with_aliases_from(self, other: Vocabulary) -> Vocabulary:
        """These classes, each with the aliases ``other`` gives a class of the same name (e.g. a
        ground truth's category names with the bundled vocabulary's aliases)."""
        known = dict(zip(other.names, other.aliases))
        return Vocabulary(self.names, tuple(known.get(name, ()) for name in self.names))

    @classmethod
    def load(cls, path_or_url: str) -> Vocabulary:
        """A vocabulary file from a path or any fsspec URL (gs://, s3://, ...)."""
        import fsspec

        with fsspec.open(path_or_url, "r", encoding="utf-8") as f:
            return cls.parse(f.read())

    @classmethod
    def bundled(cls, name: str) -> Vocabulary:
        """One of the vocabularies shipped with VESL: ``coco_things`` or ``coco_stuff``."""
        if name not in BUNDLED:
            raise ValueError(f"no bundled vocabulary {name!r}; bundled: {', '.join(BUNDLED)}")
        vocabulary = cls.parse((resources.files("vesl.patchseg") / "vocabularies" / f"{name}.txt").read_text("utf-8"))
        # COCO-Stuff's thing classes are COCO's: their aliases are written once, in coco_things
        return vocabulary.with_aliases_from(cls.bundled("coco_things")) if name == "coco_stuff" else vocabulary

    def index_to_class(self) -> dict[int, str]:
        """{0: "unlabeled", 1: first name, ...}: what a label map's values mean."""
        return {0: UNLABELED, **{i: name for i, name in enumerate(self.names, start=1)}}


# -- lemmas and heads -----------------------------------------------------------------------------
_IRREGULAR = {
    "men": "man",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "geese": "goose",
    "mice": "mouse",
    "oxen": "ox",
    "dice": "die",
    "knives": "knife",
    "wives": "wife",
    "lives": "life",
    "leaves": "leaf",
    "loaves": "loaf",
    "halves": "half",
    "calves": "calf",
    "wolves": "wolf",
    "shelves": "shelf",
    "bookshelves": "bookshelf",
    "scarves": "scarf",
    "thieves": "thief",
    "elves": "elf",
    "hooves": "hoof",
    "buses": "bus",
    "busses": "bus",
    "gases": "gas",
    "lenses": "lens",
    "menus": "menu",
    "emus": "emu",
    "gnus": "gnu",
    "tutus": "tutu",
}
# Nouns whose plural is themselves, or that only exist in the plural.
_INVARIANT = frozenset(
    "people sheep deer fish moose bison cattle aircraft police species series news scissors pants jeans "
    "shorts trousers leggings tights pajamas overalls binoculars tongs pliers clothes sweatpants "
    "specimen abdomen omen stamen ramen".split()
)
# Singulars ending in -is (not -sis); other -is words are plurals of -i nouns ("skis", "taxis").
_IS_NOUNS = frozenset("tennis iris axis pelvis trellis chassis penis ibis epidermis marquis this his".split())
# Singulars ending in -ie (so "ties" -> "tie", not "ty").
_IE_NOUNS = frozenset(
    "tie pie lie die cookie movie brownie smoothie selfie hoodie beanie goalie veggie zombie hippie bootie "
    "birdie collie magpie necktie bowtie pixie rookie calorie genie auntie caddie foodie junkie roomie "
    "walkie talkie wheelie lingerie prairie".split()
)
# Singulars ending in -o that take -es.
_OES = frozenset(
    "tomatoes potatoes heroes echoes volcanoes mangoes mosquitoes torpedoes buffaloes dominoes tornadoes "
    "cargoes mottoes avocadoes".split()
)
# Singulars ending in -us (their plural adds -es).
_US_NOUNS = frozenset(
    "cactus octopus walrus campus virus circus bonus census hippopotamus platypus abacus citrus status "
    "apparatus asparagus hummus lotus fungus".split()
)
# Singulars ending in -che (their plural adds -s only).
_CHE_NOUNS = frozenset("mustaches moustaches caches niches quiches headaches toothaches avalanches cliches".split())


def singular(word: str) -> str:
    """The singular of a lower-case noun (deterministic rules, see the module docstring); a word that
    does not look plural is returned as it is."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word in _INVARIANT or len(word) <= 3:
        return word
    if word.endswith("men"):  # men, women, firemen
        return word[:-3] + "man"
    return _regular_singular(word) if word.endswith("s") else word


def _regular_singular(word: str) -> str:
    if word.endswith(("ss", "us", "sis")) or word in _IS_NOUNS:
        return word
    if word.endswith("ies"):
        return word[:-1] if word[:-1] in _IE_NOUNS or len(word) <= 4 else word[:-3] + "y"
    if word.endswith("uses") and word[:-2] in _US_NOUNS:
        return word[:-2]
    if word.endswith("oes"):
        return word[:-2] if word in _OES else word[:-1]
    if word.endswith(("sses", "xes", "zzes", "shes")) or (word.endswith("ches") and word not in _CHE_NOUNS):
        return word[:-2]
    return word[:-1]


# Words a noun phrase's head comes before: prepositions, conjunctions, relative words.
CONNECTORS = frozenset(
    "of in on at with without by for from to into onto near under over above below behind beside besides "
    "between inside outside next and or but nor while that which who whose where when as like during through "
    "across along around against atop among beneath underneath upon via than".split()
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def phrase_words(phrase: str) -> list[str]:
    """Lower-case words (hyphens as spaces, possessive "'s" dropped) of a phrase or class name."""
    text = phrase.lower().replace("\u2019", "'").replace("-", " ")
    return [w[:-2] if w.endswith("'s") else w.replace("'", "") for w in _WORD.findall(text)]


def head_words(phrase: str) -> tuple[str, ...]:
    """The phrase's words up to its head, the head lemmatized; () for a phrase without one."""
    words = phrase_words(phrase)
    start = 0
    while start < len(words) and words[start] in CONNECTORS:
        start += 1
    end = start
    while end < len(words) and words[end] not in CONNECTORS:
        end += 1
    if end == start:
        return ()
    return (*words[start : end - 1], singular(words[end - 1]))


def head(phrase: str) -> str | None:
    """The lemma of the phrase's head noun, or None."""
    words = head_words(phrase)
    return words[-1] if words else None


def name_forms(name: str) -> list[tuple[str, ...]]:
    """The word sequences a class name is matched as, last word lemmatized (COCO-Stuff's hyphenated
    names: see the module docstring). The first one is the name's query text for embeddings."""
    parts = [p.strip() for p in name.split("-")]
    if len(parts) == 2 and all(parts):
        first, second = parts
        orders = [first] if second in ("other", "stuff") else [f"{second} {first}", f"{first} {second}"]
    else:
        orders = [name]
    forms = []
    for text in orders:
        words = phrase_words(text)
        if words:
            forms.append((*words[:-1], singular(words[-1])))
    return forms


# -- matching -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    """The class a phrase was given (None: unlabeled) and how (``head``, ``embedding``, or None)."""

    class_index: int | None
    kind: MatchKind | None


UNMATCHED = Match(None, None)


def head_table(vocabulary: Vocabulary) -> dict[tuple[str, ...], int]:
    """Word sequence -> class index, from each class's name and aliases; where names share a form,
    the longer name, then a class's own name over an alias, then the smaller index keeps it."""
    table: dict[tuple[str, ...], tuple[int, bool, int]] = {}  # form -> (name length, a class's own name?, index)
    for index, (name, aliases) in enumerate(zip(vocabulary.names, vocabulary.aliases), start=1):
        for text in (name, *aliases):
            for form in name_forms(text):
                held = table.get(form)
                if held is None or (len(text), text == name) > held[:2]:
                    table[form] = (len(text), text == name, index)
    return {form: index for form, (*_, index) in table.items()}


class EmbeddingMatcher:
    """Phrases -> the class whose name embeds closest (cosine), when at least ``threshold``. ``embed``
    maps texts to L2-normalized rows ([n, d]); ``from_checkpoint`` uses OWLv2's text tower."""

    def __init__(
        self,
        vocabulary: Vocabulary,
        embed: Callable[[Sequence[str]], np.ndarray],
        threshold: float,
        batch_size: int = 256,
    ):
        self.vocabulary = vocabulary
        self.embed = embed
        self.threshold = threshold
        self.batch_size = batch_size
        forms = [name_forms(name) for name in vocabulary.names]
        queries = [" ".join(f[0]) if f else name for f, name in zip(forms, vocabulary.names)]
        self.class_embeddings = self._embed_all(queries)

    @classmethod
    def from_checkpoint(
        cls, vocabulary: Vocabulary, checkpoint: str, threshold: float, device: str = "cpu", batch_size: int = 256
    ) -> EmbeddingMatcher:
        """Embeddings from a checkpoint's OWLv2 text tower, computed as VESL's detector queries it."""
        return cls(vocabulary, owlv2_text_embedder(checkpoint, device), threshold, batch_size)

    def _embed_all(self, texts: Sequence[str]) -> np.ndarray:
        rows = [np.asarray(self.embed(texts[i : i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def best(self, phrases: Sequence[str]) -> list[int | None]:
        """Per phrase the best class index at or above the threshold, else None (batched)."""
        if not phrases:
            return []
        similarity = self._embed_all(phrases) @ self.class_embeddings.T
        best = similarity.argmax(axis=1)
        scores = similarity[np.arange(len(phrases)), best]
        return [int(b) + 1 if s >= self.threshold else None for b, s in zip(best, scores)]


def owlv2_text_embedder(checkpoint: str, device: str = "cpu") -> Callable[[Sequence[str]], np.ndarray]:
    """texts -> normalized OWLv2 query embeddings (``Owlv2Detector.text_embeddings``, no cache)."""
    import torch

    from vesl.models.checkpoint import load_checkpoint
    from vesl.models.devices import resolve_device
    from vesl.models.owlv2 import Owlv2Detector

    device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device=device)
    image_size = loaded.model.config.vision_config.image_size
    detector = Owlv2Detector(loaded.model, loaded.tokenizer, device, image_size, text_cache_size=0, compile_model=False)

    def embed(texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode():
            return detector.text_embeddings(list(texts)).float().cpu().numpy()

    return embed


def add_matching_arguments(parser) -> None:
    """The command-line options of the optional embedding match (``matcher_from_arguments``)."""
    parser.add_argument(
        "--match-embedding",
        metavar="CHECKPOINT",
        default=None,
        help="also match the phrases the head noun leaves unlabeled by the detector's text embedding "
        "(an OWLv2 checkpoint: HF id, folder or gs://; the one the output was made with)",
    )
    parser.add_argument(
        "--embedding-threshold",
        type=float,
        default=None,
        help="with --match-embedding: the least cosine similarity of a phrase to its class (required: "
        "no default is known to suit a trained checkpoint)",
    )


def matcher_from_arguments(parser, args, vocabulary: Vocabulary) -> Matcher:
    """The head-noun matcher, with the embedding match when ``--match-embedding`` asks for it (a missing
    threshold is a usage error before any work)."""
    if args.match_embedding is None:
        return Matcher(vocabulary)
    if args.embedding_threshold is None:
        parser.error("--match-embedding needs --embedding-threshold (e.g. 0.8)")
    embedding = EmbeddingMatcher.from_checkpoint(vocabulary, args.match_embedding, args.embedding_threshold)
    return Matcher(vocabulary, embedding)


class Matcher:
    """phrase -> Match: by head noun first, then (when given) by embedding; cached per distinct
    phrase (the cache is emptied when it reaches ``cache_size``, which bounds memory)."""

    def __init__(self, vocabulary: Vocabulary, embedding: EmbeddingMatcher | None = None, cache_size: int = 1 << 20):
        self.vocabulary = vocabulary
        self.embedding = embedding
        self.cache_size = cache_size
        self._table = head_table(vocabulary)
        self._longest = max((len(form) for form in self._table), default=0)
        self._cache: dict[str, Match] = {}

    def match_head(self, phrase: str) -> int | None:
        """The class the phrase's last words up to its head name (the longest), or None."""
        words = head_words(phrase)
        for n in range(min(len(words), self._longest), 0, -1):
            index = self._table.get(words[-n:])
            if index is not None:
                return index
        return None

    def match(self, phrase: str) -> Match:
        cached = self._cache.get(phrase)  # the per-region path: most phrases repeat
        return cached if cached is not None else self.match_many([phrase])[0]

    def match_many(self, phrases: Iterable[str]) -> list[Match]:
        """Matches for many phrases, the embeddings of the new ones the head match leaves computed
        in batches."""
        phrases = list(phrases)
        distinct = list(dict.fromkeys(phrases))
        new = [p for p in distinct if p not in self._cache]
        if len(self._cache) + len(new) > self.cache_size:
            self._cache.clear()
            new = distinct
        found = {p: self._head_match(p) for p in new}
        left = [p for p, m in found.items() if m.kind is None]
        if self.embedding is not None and left:
            for phrase, index in zip(left, self.embedding.best(left)):
                found[phrase] = UNMATCHED if index is None else Match(index, "embedding")
        self._cache.update(found)
        return [self._cache[p] for p in phrases]

    def _head_match(self, phrase: str) -> Match:
        index = self.match_head(phrase)
        return UNMATCHED if index is None else Match(index, "head")


def category_vocabulary(categories: Sequence[dict]) -> Vocabulary:
    """COCO-style categories (``{"id", "name"}``, a ground truth's) as a vocabulary, in their order: class
    i is the i-th category; a name the bundled COCO vocabulary knows gets its aliases ("man" -> person)."""
    names = Vocabulary(names=tuple(c["name"] for c in categories))
    return names.with_aliases_from(Vocabulary.bundled("coco_things"))


class CategoryMatcher:
    """phrase -> the id of the COCO-style category it names, or None: the one rule by which VESL's COCO
    exports and evaluations read a phrase as a category (``Matcher`` over ``category_vocabulary``)."""

    def __init__(self, categories: Sequence[dict]):
        # A name given twice keeps its first id, and "unlabeled" (class 0 of a vocabulary) names none: a
        # ground truth is read as it is, not refused (a results file may still use every id).
        first: dict[str, int] = {}
        for category in categories:
            first.setdefault(category["name"], category["id"])
        first.pop(UNLABELED, None)
        self.ids = list(first.values())
        self.matcher = Matcher(category_vocabulary([{"name": name} for name in first])) if first else None

    def category_id(self, phrase: str) -> int | None:
        index = self.matcher.match(phrase).class_index if self.matcher else None
        return None if index is None else self.ids[index - 1]


def matched_boxes(boxes, phrases: Sequence[str], matcher: Matcher) -> tuple[np.ndarray, np.ndarray, list[Match]]:
    """The regions whose phrase the matcher names a class: their boxes (``[K, 4]``) and class ids
    (``[K]``), and every phrase's match (for the counts). Unmatched regions are left out: they are not
    painted, so they stay unlabeled or under the boxes that are."""
    matches = matcher.match_many(phrases)
    kept = [i for i, m in enumerate(matches) if m.class_index is not None]
    named = np.asarray(boxes, np.float64).reshape(-1, 4)[kept]
    return named, np.array([matches[i].class_index for i in kept], np.int64), matches


@dataclass
class MatchCounts:
    """Regions counted per class name and per kind of match (head / embedding / unmatched): what the
    export and the evaluation print and store."""

    vocabulary: Vocabulary
    by_class: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)

    def add(self, match: Match, regions: int = 1) -> None:
        self.by_kind[match.kind or "unmatched"] += regions
        if match.class_index is not None:
            self.by_class[self.vocabulary.names[match.class_index - 1]] += regions

    @property
    def regions(self) -> int:
        return sum(self.by_kind.values())

    @property
    def unmatched(self) -> int:
        return self.by_kind["unmatched"]

    @property
    def matched(self) -> int:
        return self.regions - self.unmatched

    def as_dict(self) -> dict:
        """Plain JSON: region count, counts per kind (all three keys), per class name in index order."""
        order = {name: i for i, name in enumerate(self.vocabulary.names)}
        return {
            "regions": self.regions,
            "by_kind": {kind: self.by_kind[kind] for kind in ("head", "embedding", "unmatched")},
            "by_class": {name: self.by_class[name] for name in sorted(self.by_class, key=order.__getitem__)},
        }


# -- a vocabulary from an output's own phrases ----------------------------------------------------
_FOLD_AT = 1 << 20  # distinct phrases held before their counts are folded into the heads'


def frequent_heads(labeled_images: Iterable[LabeledImage], top: int) -> list[tuple[str, int]]:
    """The ``top`` most frequent region-phrase heads (lemmas) with their region counts, most frequent
    first, ties alphabetical. Streamed: each distinct phrase's head is found once per fold, and at
    most ``_FOLD_AT`` phrases are held."""
    heads: Counter = Counter()
    phrases: Counter = Counter()
    for item in labeled_images:
        phrases.update(region.phrase for region in item.regions)
        if len(phrases) >= _FOLD_AT:
            _fold(phrases, heads)
    _fold(phrases, heads)
    return sorted(heads.items(), key=lambda item: (-item[1], item[0]))[:top]


def _fold(phrases: Counter, heads: Counter) -> None:
    """Move per-phrase counts into per-head counts."""
    for phrase, n in phrases.items():
        lemma = head(phrase)
        if lemma is not None:
            heads[lemma] += n
    phrases.clear()


def write_frequent_heads(output_dir: str, dest: str, top: int) -> int:
    """Write the ``top`` most frequent heads of a VESL output as a vocabulary file (``dest``: a path or
    fsspec URL), so a vocabulary can come from the user's own data; returns the number of names."""
    import fsspec

    from vesl.export import iter_labeled

    heads = frequent_heads(iter_labeled(output_dir), top)
    header = (
        f"# The {len(heads)} most frequent phrase heads (lemmas) of the VESL output {output_dir},\n"
        "# most frequent first (ties alphabetical); written by vesl.patchseg.vocabulary.write_frequent_heads.\n"
    )
    with fsspec.open(dest, "w", encoding="utf-8") as f:
        f.write(header + "".join(f"{name}\n" for name, _ in heads))
    return len(heads)
