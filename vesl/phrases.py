"""Caption -> phrases from the command line (one caption per stdin line, one JSON object per line out).

    python -m vesl.phrases --mode cloc|spacy|ngrams|both [--max-phrases 20] < captions.txt

Each output line: {"caption": ..., "phrases": [{"text", "start", "end", "source"}]}; ``start``/``end``
index the caption, and ``normalize_phrase(caption[start:end]) == normalize_phrase(text)`` (see
``vesl.text.phrases``; for ngrams the span also covers removed generic words).
"""

from __future__ import annotations

import argparse
import json
import sys

from vesl.config import PHRASE_MODES, PhraseConfig
from vesl.text.ngrams import MAX_NUM_QUERIES
from vesl.text.phrases import PhraseExtractor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default=PhraseConfig.mode, choices=[*PHRASE_MODES, "nltk"])
    parser.add_argument(
        "--max-phrases",
        type=int,
        default=None,
        help=f"default {PhraseConfig.max_phrases} ({MAX_NUM_QUERIES} for ngrams)",
    )
    parser.add_argument("--dedupe", choices=["on", "off"], default=None)
    parser.add_argument("--referring-expressions", action="store_true")
    parser.add_argument("--batch", type=int, default=PhraseConfig.spacy_batch_size, help="captions parsed together")
    args = parser.parse_args(argv)
    max_phrases = args.max_phrases or (MAX_NUM_QUERIES if args.mode == "ngrams" else PhraseConfig.max_phrases)
    dedupe = None if args.dedupe is None else args.dedupe == "on"
    extractor = PhraseExtractor(
        PhraseConfig(
            mode=args.mode, max_phrases=max_phrases, dedupe=dedupe, referring_expressions=args.referring_expressions
        )
    ).setup()
    batch: list[str] = []

    def flush() -> None:
        for caption, phrases in zip(batch, extractor.extract_many(batch)):
            record = {
                "caption": caption,
                "phrases": [
                    {"text": p.text, "start": p.char_start, "end": p.char_end, "source": p.parser} for p in phrases
                ],
            }
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        batch.clear()

    for line in sys.stdin:
        batch.append(line.rstrip("\n").rstrip("\r"))
        if len(batch) >= args.batch:
            flush()
    flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
