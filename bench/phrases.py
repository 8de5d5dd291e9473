"""Phrase-stage throughput: captions per second on one process, per mode. Prints one JSON line per mode.

    python -m bench.phrases [--captions FILE] [--limit N] [--modes nltk,spacy,both]

FILE: COCO-style captions JSON ({"annotations": [{"caption": ...}]}) or one caption per line;
without it, the bundled sample captions are repeated (a smoke run, not a measurement to quote).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

from vesl.config import PhraseConfig
from vesl.text.phrases import PhraseExtractor


def load_captions(path: str | None, limit: int) -> tuple[list[str], str]:
    if path is None:
        manifest = Path(__file__).resolve().parent.parent / "sample" / "photos" / "manifest.jsonl"
        captions = [json.loads(line)["captions"][0] for line in manifest.read_text().splitlines()]
        return (captions * (limit // len(captions) + 1))[:limit], "bundled sample captions (repeated)"
    text = Path(path).read_text()
    if path.endswith(".json"):
        captions = [a["caption"] for a in json.loads(text)["annotations"]]
    else:
        captions = [line for line in text.splitlines() if line.strip()]
    return captions[:limit], path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--modes", default="nltk,spacy,both")
    args = parser.parse_args(argv)
    captions, source = load_captions(args.captions, args.limit)
    for mode in args.modes.split(","):
        extractor = PhraseExtractor(PhraseConfig(mode=mode)).setup()
        extractor.extract_many(captions[:50])  # warm-up: lazy loads, caches
        start = time.perf_counter()
        phrases = extractor.extract_many(captions)
        seconds = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "bench": "phrases",
                    "date": date.today().isoformat(),
                    "mode": mode,
                    "captions": len(captions),
                    "source": source,
                    "processes": 1,
                    "captions_per_s": round(len(captions) / seconds, 1),
                    "phrases_per_caption": round(sum(map(len, phrases)) / len(captions), 2),
                    "cpu": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(),
                }
            )
        )


if __name__ == "__main__":
    main()
