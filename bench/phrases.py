"""Phrase-stage throughput: captions per second per core, per mode. Prints one JSON line per run.

    python -m bench.phrases [--captions FILE] [--limit N] [--modes cloc,spacy,ngrams,both]
                            [--long] [--processes 1,2] [--blas auto|blis|numpy]

FILE: COCO-style captions JSON ({"annotations": [{"caption": ...}]}) or one caption per line;
without it, the bundled sample captions are repeated (a smoke run, not a measurement to quote).
--long joins the captions of one image four at a time (~40 words, CLOC's re-caption length).
The cache of repeated captions is off (cache_size 0), so repeats are parsed again: the figures are
parsing speed, not cache hits. ``--blas``: which BLAS runs spaCy's model (``vesl.text.spacy_phrases``:
auto = numpy's, held to one thread, when possible; blis = spaCy's default). With several processes each parses its own slice; captions/s per core
is the total divided by the processes.
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


def time_phrases(mode: str, captions: list[str], blas: str = "auto") -> tuple[float, int]:
    """Seconds to extract the phrases of ``captions`` in ``mode`` (cache off, after a warm-up), and
    how many phrases came out."""
    from vesl.text import spacy_phrases

    spacy_phrases.DEFAULT_BLAS = blas
    extractor = PhraseExtractor(PhraseConfig(mode=mode, cache_size=0)).setup()
    extractor.extract_many(captions[:50])  # warm-up: lazy loads
    start = time.perf_counter()
    phrases = extractor.extract_many(captions)
    return time.perf_counter() - start, sum(map(len, phrases))


def _run_star(args):
    return time_phrases(*args)


def load_captions(path: str | None, limit: int, long: bool = False) -> tuple[list[str], str]:
    if path is None:
        manifest = Path(__file__).resolve().parent.parent / "sample" / "photos" / "manifest.jsonl"
        captions = [json.loads(line)["captions"][0] for line in manifest.read_text().splitlines()]
        return (captions * (limit // len(captions) + 1))[:limit], "bundled sample captions (repeated)"
    text = Path(path).read_text()
    if path.endswith(".json"):
        annotations = json.loads(text)["annotations"]
        if long:
            by_image: dict[int, list[str]] = {}
            for a in annotations:
                by_image.setdefault(a["image_id"], []).append(a["caption"].strip())
            captions = [" ".join(c[:4]) for c in by_image.values() if len(c) >= 4]
            return captions[:limit], f"{path} (4 captions of an image joined)"
        captions = [a["caption"] for a in annotations]
    else:
        captions = [line for line in text.splitlines() if line.strip()]
    return captions[:limit], path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--modes", default="cloc,spacy,ngrams,both")
    parser.add_argument("--long", action="store_true")
    parser.add_argument("--processes", default="1", help="comma-separated process counts")
    parser.add_argument("--blas", default="auto", choices=("auto", "blis", "numpy"))
    args = parser.parse_args(argv)
    captions, source = load_captions(args.captions, args.limit, args.long)
    words = sum(len(c.split()) for c in captions) / max(1, len(captions))
    for processes in (int(p) for p in args.processes.split(",")):
        for mode in args.modes.split(","):
            if processes == 1:
                seconds, n_phrases = time_phrases(mode, captions, args.blas)
            else:
                import multiprocessing

                slices = [(mode, captions[i::processes], args.blas) for i in range(processes)]
                with multiprocessing.get_context("spawn").Pool(processes) as pool:
                    results = pool.map(_run_star, slices)
                seconds, n_phrases = max(r[0] for r in results), sum(r[1] for r in results)
            total = len(captions) / seconds
            print(
                json.dumps(
                    {
                        "bench": "phrases",
                        "date": date.today().isoformat(),
                        "mode": mode,
                        "captions": len(captions),
                        "words_per_caption": round(words, 1),
                        "source": source,
                        "processes": processes,
                        "blas": args.blas,
                        "captions_per_s": round(total, 1),
                        "captions_per_s_per_core": round(total / processes, 1),
                        "phrases_per_caption": round(n_phrases / len(captions), 2),
                        "cpu": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(),
                    }
                )
            )


if __name__ == "__main__":
    main()
