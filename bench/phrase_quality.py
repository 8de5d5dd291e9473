"""Noun-phrase quality against human chunks, and phrase statistics of real captions. Prints JSON.

    python -m bench.phrase_quality [--conll ../shared/data/text/conll2000/train.txt] \
        [--coco ../shared/data/text/coco_captions_val2017.json] [--annotated tests/fixtures/phrases/annotated_captions.jsonl] \
        [--limit N] [--modes cloc,spacy,ngrams,both]

CoNLL-2000: each sentence's tokens are joined by single spaces; a gold NP is the character span of a
B-NP/I-NP run. Exact-match precision, recall and F1 over spans, per mode, with no cap on phrases per
sentence (the parsers are measured, not the cap). ``nominal`` scores count only gold NPs that contain a
noun (NN*), the kind a detector can ground (CoNLL also chunks pronouns, numbers and "which").
COCO: phrases per caption, words per phrase, the most frequent phrases, share of captions with none.
Annotated captions (``tests/fixtures/phrases``, annotated by hand for this purpose; its README gives the
rules): the visual phrases of each caption; a predicted phrase matches a gold one of the same caption when
their normalized texts are equal (lower case, spaces collapsed), each gold phrase matched once; at the
default cap of 20 phrases, as a run uses them.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass

from vesl.config import PhraseConfig
from vesl.text.phrases import PhraseExtractor, normalize_phrase


@dataclass
class Sentence:
    text: str
    gold: set[tuple[int, int]]
    nominal: set[tuple[int, int]]
    tokens: list[tuple[str, str, int, int]]  # word, tag, start, end


def read_conll(path: str, limit: int | None = None) -> list[Sentence]:
    sentences: list[Sentence] = []
    rows: list[tuple[str, str, str]] = []

    def close() -> None:
        words, position, tokens = [], 0, []
        for word, tag, _ in rows:
            tokens.append((word, tag, position, position + len(word)))
            words.append(word)
            position += len(word) + 1
        gold, nominal, run = set(), set(), []
        for (_word, _tag, chunk), token in zip(rows, tokens):
            if run and chunk != "I-NP":
                span = (run[0][2], run[-1][3])
                gold.add(span)
                if any(t[1].startswith("NN") for t in run):
                    nominal.add(span)
                run = []
            if chunk in ("B-NP", "I-NP"):
                run.append(token)
        if run:
            gold.add((run[0][2], run[-1][3]))
            if any(t[1].startswith("NN") for t in run):
                nominal.add((run[0][2], run[-1][3]))
        sentences.append(Sentence(" ".join(words), gold, nominal, tokens))

    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(tuple(line.split()))  # type: ignore[arg-type]
            elif rows:
                close()
                rows = []
                if limit and len(sentences) >= limit:
                    break
    if rows:
        close()
    return sentences


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}


def evaluate_conll(extractor: PhraseExtractor, sentences: list[Sentence]) -> dict:
    predictions = extractor.extract_many([s.text for s in sentences])
    tp = n_pred = n_gold = tp_nom = n_nom = 0
    missed: Counter[str] = Counter()
    for sentence, phrases in zip(sentences, predictions):
        spans = {(p.char_start, p.char_end) for p in phrases}
        n_pred += len(spans)
        n_gold += len(sentence.gold)
        tp += len(spans & sentence.gold)
        n_nom += len(sentence.nominal)
        tp_nom += len(spans & sentence.nominal)
        for start, end in sentence.nominal - spans:
            tags = [t[1] for t in sentence.tokens if t[2] >= start and t[3] <= end]
            missed[_miss_kind(tags, sentence.text[start:end])] += 1
    return {
        "all_np": prf(tp, n_pred, n_gold),
        "nominal_np": {"recall": round(tp_nom / n_nom, 4) if n_nom else 0.0},
        "predicted": n_pred,
        "gold": n_gold,
        "missed_nominal_by_kind": dict(missed.most_common()),
    }


def _miss_kind(tags: list[str], text: str) -> str:
    if "POS" in tags:
        return "possessive ('s inside the NP)"
    if "CD" in tags:
        return "number (CD) inside the NP"
    if any(t in ("PRP$", "WP$") for t in tags):
        return "possessive pronoun (his, its)"
    if "-" in text:
        return "hyphenated word"
    if any(t.startswith("VB") for t in tags):
        return "participle/verb inside the NP"
    if any(t in ("$", "#") for t in tags):
        return "currency sign"
    if any(t.startswith("RB") or t in ("PDT", "CC") for t in tags):
        return "adverb/predeterminer/conjunction inside the NP"
    return "other (tagging or boundary)"


def read_annotated(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluate_annotated(extractor: PhraseExtractor, rows: list[dict]) -> dict:
    """Precision and recall of the extractor's phrases against each caption's hand-annotated phrases."""
    predictions = extractor.extract_many([row["caption"] for row in rows])
    tp = n_pred = n_gold = 0
    misses, extras = [], []
    for row, phrases in zip(rows, predictions):
        gold = Counter(normalize_phrase(g) for g in row["phrases"])
        predicted = Counter(normalize_phrase(p.text) for p in phrases)
        matched = gold & predicted
        tp += sum(matched.values())
        n_gold += sum(gold.values())
        n_pred += sum(predicted.values())
        misses += [(row["caption"], g) for g in (gold - matched).elements()]
        extras += [(row["caption"], x) for x in (predicted - matched).elements()]
    return {
        "captions": len(rows),
        "gold": n_gold,
        "predicted": n_pred,
        **prf(tp, n_pred, n_gold),
        "missed": misses,
        "extra": extras,
    }


def coco_statistics(extractor: PhraseExtractor, captions: list[str]) -> dict:
    phrases = extractor.extract_many(captions)
    counts = Counter(len(p) for p in phrases)
    lengths = Counter(min(len(x.text.split()), 6) for ps in phrases for x in ps)
    frequent = Counter(normalize_phrase(x.text) for ps in phrases for x in ps)
    total = sum(len(p) for p in phrases)
    return {
        "captions": len(captions),
        "phrases_per_caption": round(total / len(captions), 3),
        "share_without_phrase": round(counts[0] / len(captions), 4),
        "phrases_per_caption_histogram": {str(k): counts[k] for k in sorted(counts)},
        "words_per_phrase_histogram": {("6+" if k == 6 else str(k)): lengths[k] for k in sorted(lengths)},
        "top_phrases": frequent.most_common(25),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conll")
    parser.add_argument("--coco")
    parser.add_argument("--annotated", help="hand-annotated captions (JSON lines: caption, phrases)")
    parser.add_argument("--limit", type=int, default=None, help="sentences / captions to use")
    parser.add_argument("--modes", default="cloc,spacy,ngrams,both")
    args = parser.parse_args(argv)
    sentences = read_conll(args.conll, args.limit) if args.conll else None
    captions = None
    if args.coco:
        with open(args.coco, encoding="utf-8") as f:
            captions = [a["caption"] for a in json.load(f)["annotations"]][: args.limit]
    for mode in args.modes.split(","):
        cap = 300 if mode == "ngrams" else 1000
        extractor = PhraseExtractor(PhraseConfig(mode=mode, max_phrases=cap, cache_size=0)).setup()
        out: dict = {"bench": "phrase_quality", "mode": mode}
        if sentences is not None:
            out["conll_sentences"] = len(sentences)
            out["conll"] = evaluate_conll(extractor, sentences)
        default = PhraseExtractor(PhraseConfig(mode=mode, max_phrases=300 if mode == "ngrams" else 20)).setup()
        if captions is not None:
            out["coco"] = coco_statistics(default, captions)
        if args.annotated:
            out["annotated"] = evaluate_annotated(default, read_annotated(args.annotated))
        print(json.dumps(out))


if __name__ == "__main__":
    main()
