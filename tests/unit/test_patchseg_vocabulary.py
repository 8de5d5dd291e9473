"""Phrases -> a class vocabulary (issue 30): the bundled COCO vocabularies, head-noun matching on real
captions' phrases, the embedding fallback on a tiny OWLv2, the counts, and a vocabulary made from an
output's own phrases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.test_outputs import write_shard
from vesl.patchseg.vocabulary import (
    CategoryMatcher,
    EmbeddingMatcher,
    Match,
    MatchCounts,
    Matcher,
    Vocabulary,
    frequent_heads,
    head,
    singular,
    write_frequent_heads,
)
from vesl.records import ImageRecord, LabeledImage, Phrase, Region

COCO_CAPTIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "text" / "coco_captions_val2017.json"
COCO_INSTANCES = COCO_CAPTIONS.parents[1] / "coco_val2017" / "instances_val2017.json"
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)  # thing ids COCO never annotates


def vocab(*names: str) -> Vocabulary:
    return Vocabulary(tuple(names))


def matched(vocabulary: Vocabulary, phrase: str) -> str | None:
    index = Matcher(vocabulary).match(phrase).class_index
    return None if index is None else vocabulary.names[index - 1]


# -- vocabulary files -----------------------------------------------------------------------------
def test_the_bundled_vocabularies_are_coco_and_coco_stuff_in_id_order():
    things, stuff = Vocabulary.bundled("coco_things"), Vocabulary.bundled("coco_stuff")
    assert (len(things), len(stuff)) == (80, 182)
    classes = stuff.index_to_class()
    assert (classes[0], classes[1], classes[12], classes[91], classes[92], classes[182]) == (
        "unlabeled", "person", "street sign", "hair brush", "banner", "wood",
    )  # fmt: skip
    # COCO's 80 categories are COCO-Stuff's first 91 ids without the 11 unused ones, in the same order.
    assert [classes[i] for i in (105, 145, 171, 181)] == ["clothes", "playingfield", "wall-brick", "window-other"]
    assert things.names == tuple(classes[i] for i in range(1, 92) if i not in COCO_UNUSED_IDS)
    assert things.index_to_class()[80] == "toothbrush"


@pytest.mark.skipif(not COCO_INSTANCES.exists(), reason="the shared COCO annotations are not here")
def test_coco_things_are_the_categories_of_coco_annotations_in_id_order():
    categories = json.loads(COCO_INSTANCES.read_text(encoding="utf-8"))["categories"]
    ids_and_names = sorted((c["id"], c["name"]) for c in categories)
    assert Vocabulary.bundled("coco_things").names == tuple(name for _, name in ids_and_names)
    assert Vocabulary.bundled("coco_stuff").index_to_class().items() >= dict(ids_and_names).items()


def test_a_vocabulary_file_skips_comments_and_blank_lines_and_loads_through_fsspec():
    import fsspec

    with fsspec.open("memory://vocab/mine.txt", "w", encoding="utf-8") as f:
        f.write("# my classes\n\ncat\n  traffic light  \n#dog\ncafé\n")
    vocabulary = Vocabulary.load("memory://vocab/mine.txt")
    assert vocabulary.names == ("cat", "traffic light", "café") and len(vocabulary) == 3
    assert vocabulary.index_to_class() == {0: "unlabeled", 1: "cat", 2: "traffic light", 3: "café"}


def test_more_than_255_classes_are_representable_but_names_must_be_distinct():
    assert len(Vocabulary(tuple(f"class{i}" for i in range(300)))) == 300
    for names in [(), ("cat", "dog", "cat"), ("unlabeled",)]:
        with pytest.raises(ValueError):
            Vocabulary(names)
    with pytest.raises(ValueError, match="bundled"):
        Vocabulary.bundled("ade20k")


# -- lemmas and heads -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "lemma"),
    [
        ("cats", "cat"), ("buses", "bus"), ("bus", "bus"), ("glasses", "glass"), ("benches", "bench"),
        ("boxes", "box"), ("puppies", "puppy"), ("ties", "tie"), ("cookies", "cookie"), ("knives", "knife"),
        ("leaves", "leaf"), ("gloves", "glove"), ("shoes", "shoe"), ("tomatoes", "tomato"), ("houses", "house"),
        ("men", "man"), ("women", "woman"), ("firemen", "fireman"), ("feet", "foot"), ("people", "people"),
        ("sheep", "sheep"), ("skis", "ski"), ("tennis", "tennis"), ("scissors", "scissors"), ("clothes", "clothes"),
        ("cactuses", "cactus"), ("grass", "grass"), ("mustaches", "mustache"),
    ],
)  # fmt: skip
def test_plurals_become_singulars(word, lemma):
    assert singular(word) == lemma


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("two black cats", "cat"), ("the man's red umbrella", "umbrella"), ("a group of people", "group"),
        ("between two cars", "car"), ("a sink and a mirror", "sink"), ("A Hot-Dog", "dog"), ("the bus's", "bus"),
        ("the boss\u2019s", "boss"), ("of", None), ("", None),
    ],
)  # fmt: skip
def test_the_head_is_the_last_word_before_a_connector(phrase, expected):
    assert head(phrase) == expected


# -- matching by head noun ------------------------------------------------------------------------
def test_a_head_matches_a_class_in_singular_or_plural_and_multi_word_names_by_the_last_words():
    things = Vocabulary.bundled("coco_things")
    cases = {
        "two black cats": "cat", "a traffic light": "traffic light", "baseball bats": "baseball bat",
        "the buses": "bus", "a ski": "skis", "some hot dogs": "hot dog", "wine glasses": "wine glass",
        "the man's red umbrella": "umbrella", "a pair of scissors": None, "a group of people": None,
        "people": "person", "a bus stop": None, "a cow's": "cow", "a cat on a bed": "cat",
    }  # fmt: skip
    assert {phrase: matched(things, phrase) for phrase in cases} == cases
    assert matched(vocab("people", "person"), "a group of people") is None
    assert matched(vocab("people", "person"), "two people") == "people"


def test_the_longest_matching_name_wins_and_ties_go_to_the_longer_name():
    vocabulary = vocab("light", "traffic light", "red traffic light", "table", "dining table")
    assert matched(vocabulary, "a red traffic light") == "red traffic light"
    assert matched(vocabulary, "a green traffic light") == "traffic light"
    assert matched(vocabulary, "the lights") == "light"
    assert matched(vocabulary, "a wooden dining table") == "dining table"
    assert matched(vocabulary, "a coffee table") == "table"
    assert matched(vocabulary, "a traffic cone") is None
    stuff = Vocabulary.bundled("coco_stuff")
    assert matched(stuff, "a door") == "door-stuff"  # the unused thing id 71 "door" loses the tie
    cases = {"a brick wall": "wall-brick", "ceiling tiles": "ceiling-tile", "a tall building": "building-other"}
    assert {phrase: matched(stuff, phrase) for phrase in cases} == cases


@pytest.fixture(scope="module")
def coco_phrases() -> list[str]:
    """The phrases VESL's default lister gives for 400 real COCO captions."""
    if not COCO_CAPTIONS.exists():
        pytest.skip("the shared COCO captions are not here")
    from vesl.config import PhraseConfig
    from vesl.text.phrases import PhraseExtractor

    captions = [a["caption"] for a in json.loads(COCO_CAPTIONS.read_text(encoding="utf-8"))["annotations"][:400]]
    return [p.text for phrases in PhraseExtractor(PhraseConfig()).setup().extract_many(captions) for p in phrases]


def test_real_phrases_ending_in_a_coco_name_or_its_plural_match_that_name_or_a_longer_one(coco_phrases):
    things = Vocabulary.bundled("coco_things")
    matcher = Matcher(things)
    checked = 0
    for phrase in coco_phrases:
        text = " ".join(phrase.lower().split())
        if any(f" {word} " in f" {text} " for word in ("of", "and", "with", "on", "in")):
            continue
        endings = [name for name in things.names if any(text == f or text.endswith(" " + f) for f in (name, name + "s"))]  # fmt: skip
        if not endings:
            continue
        got = matcher.match(phrase)
        assert got.kind == "head", phrase
        name = things.names[got.class_index - 1]
        assert name in endings or all(len(name.split()) > len(e.split()) for e in endings), phrase
        checked += 1
    assert checked > 200  # the property was checked on many real phrases


def test_counts_balance_over_real_phrases(coco_phrases):
    vocabulary = Vocabulary.bundled("coco_stuff")
    matcher, counts = Matcher(vocabulary), MatchCounts(vocabulary)
    for match in matcher.match_many(coco_phrases):
        counts.add(match)
    as_dict = json.loads(json.dumps(counts.as_dict()))
    assert as_dict["regions"] == len(coco_phrases) == sum(as_dict["by_kind"].values())
    assert sum(as_dict["by_class"].values()) == as_dict["by_kind"]["head"] > len(coco_phrases) // 3
    assert as_dict["by_kind"]["embedding"] == 0 and as_dict["by_kind"]["unmatched"] > 0
    order = [vocabulary.names.index(name) for name in as_dict["by_class"]]
    assert order == sorted(order)  # in class index order


def test_matches_are_cached_per_distinct_phrase_within_the_cache_size():
    matcher = Matcher(vocab("cat"), cache_size=2)
    assert matcher.match_many(["a cat", "a dog", "a cat"]) == [Match(1, "head"), Match(None, None), Match(1, "head")]
    assert matcher.match("cats") == Match(1, "head") and len(matcher._cache) <= 2


# -- matching by the detector's text embedding ----------------------------------------------------
def test_embeddings_match_a_class_name_to_itself_and_a_threshold_above_one_to_nothing(tiny_checkpoint):
    vocabulary = Vocabulary.bundled("coco_stuff")
    near = EmbeddingMatcher.from_checkpoint(vocabulary, tiny_checkpoint, threshold=0.999, batch_size=7)
    queries = ["traffic light", "hair drier", "brick wall", "building"]  # the last two: wall-brick, building-other
    expected = [vocabulary.names.index(name) + 1 for name in ("traffic light", "hair drier", "wall-brick", "building-other")]  # fmt: skip
    assert near.best(queries) == expected
    never = EmbeddingMatcher(vocabulary, near.embed, threshold=1.01)
    assert never.best(queries) == [None] * 4 and never.best([]) == []


def test_the_embedding_is_tried_only_where_the_head_match_leaves_a_phrase_unlabeled(tiny_checkpoint):
    vocabulary = Vocabulary.bundled("coco_things")
    embedded: list[str] = []
    always = EmbeddingMatcher.from_checkpoint(vocabulary, tiny_checkpoint, threshold=-1.0)
    inner = always.embed
    always.embed = lambda texts: embedded.extend(texts) or inner(texts)
    matcher = Matcher(vocabulary, always)
    got = matcher.match_many(["two cats", "a group of people", "a bathroom", "a group of people"])
    assert [m.kind for m in got] == ["head", "embedding", "embedding", "embedding"]
    assert got[0] == Match(vocabulary.names.index("cat") + 1, "head") and got[1] == got[3]
    assert embedded == ["a group of people", "a bathroom"]  # each distinct unmatched phrase, once, in one batch


# -- a vocabulary from an output's own phrases ----------------------------------------------------
def labeled(key: str, phrases: list[str]) -> LabeledImage:
    caption = ", ".join(phrases)
    spans = [Phrase(p, caption.index(p), caption.index(p) + len(p), "spacy") for p in phrases]
    regions = tuple(Region(p.text, p.char_start, p.char_end, "spacy", i, (0.1, 0.1, 0.5, 0.5), 0.5, 0.5) for i, p in enumerate(spans))  # fmt: skip
    return LabeledImage(ImageRecord(key, "s", 0, caption, b"", None, tuple(spans), 100, 100), regions)


def test_frequent_heads_count_regions_by_head_lemma_most_frequent_first_ties_alphabetical():
    items = [labeled("a", ["a zebra", "two cats", "the dogs", "a group of people"]), labeled("b", ["a dog", "a cat"])]
    assert frequent_heads(items, top=10) == [("cat", 2), ("dog", 2), ("group", 1), ("zebra", 1)]
    assert frequent_heads(items, top=2) == [("cat", 2), ("dog", 2)]


def test_write_frequent_heads_round_trips_through_vocabulary_load(tmp_path):
    items = [labeled(f"k{i}", ["two cats", "a dog", "a traffic light"][: 1 + i % 3]) for i in range(6)]
    write_shard(tmp_path / "out", "/in/s.tar", items, [], row_group=1000)
    dest = tmp_path / "mine.txt"
    assert write_frequent_heads(str(tmp_path / "out"), str(dest), top=2) == 2
    assert dest.read_text(encoding="utf-8").startswith("# The 2 most frequent phrase heads")
    vocabulary = Vocabulary.load(str(dest))
    assert vocabulary.names == ("cat", "dog")
    assert matched(vocabulary, "a black cat") == "cat"


def test_aliases_name_a_class_too_and_a_class_own_name_beats_another_class_alias():
    vocabulary = Vocabulary.parse("# name, then aliases\nperson, man, people\ndining table, table\ntable\n")
    assert vocabulary.names == ("person", "dining table", "table")
    assert vocabulary.aliases == (("man", "people"), ("table",), ())
    cases = {"two men": "person", "a young woman": None, "people": "person", "a table": "table"}
    assert {phrase: matched(vocabulary, phrase) for phrase in cases} == cases
    things, stuff = Vocabulary.bundled("coco_things"), Vocabulary.bundled("coco_stuff")
    coco = {"a skier": "person", "the sofa": "couch", "a wooden table": "dining table", "a jet": "airplane"}
    assert {phrase: matched(things, phrase) for phrase in coco} == coco
    assert matched(stuff, "a wooden table") == "table" and matched(stuff, "a skier") == "person"
    assert stuff.index_to_class()[1] == "person"  # names, not aliases, are what the classes are called
    gt_names = Vocabulary(("dog", "person")).with_aliases_from(things)
    assert gt_names.aliases[0] == ("puppy",) and "man" in gt_names.aliases[1]


def test_a_category_matcher_gives_the_ground_truths_ids_by_head_noun_with_cocos_aliases():
    """COCO exports and evaluations read phrases as categories by this one rule: ids (not positions) of
    the ground truth's categories, longest name first, plurals, COCO's aliases for COCO's names only."""
    categories = [{"id": 18, "name": "dog"}, {"id": 10, "name": "traffic light"}, {"id": 1, "name": "person"}]
    categories.append({"id": 77, "name": "light"})
    matcher = CategoryMatcher(categories)
    assert matcher.category_id("two puppies") == 18  # an alias of COCO's dog
    assert matcher.category_id("two black dogs") == 18 and matcher.category_id("a dog on a leash") == 18
    assert matcher.category_id("a traffic light") == 10 and matcher.category_id("the lights") == 77
    assert matcher.category_id("a young man") == 1 and matcher.category_id("some people") == 1
    assert matcher.category_id("a catalogue") is None and matcher.category_id("a leash") is None


def test_a_category_matcher_reads_any_ground_truths_categories_without_refusing_them():
    """Bad input: a name given twice keeps its first id, "unlabeled" and empty or odd phrases name none,
    no categories at all match nothing (a Vocabulary would refuse each of these)."""
    matcher = CategoryMatcher([{"id": 5, "name": "dog"}, {"id": 9, "name": "dog"}, {"id": 0, "name": "unlabeled"}])
    assert matcher.category_id("a dog") == 5 and matcher.category_id("the unlabeled") is None
    assert [matcher.category_id(p) for p in ("", "   ", "!!", "\u0000", "犬")] == [None] * 5
    assert CategoryMatcher([]).category_id("a dog") is None
