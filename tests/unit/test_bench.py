"""Benchmarks run in tests (tiny inputs) so they cannot rot; no timing is asserted."""

from __future__ import annotations

import json

from bench import phrases


def test_phrase_bench_prints_json(capsys):
    phrases.main(["--limit", "40", "--modes", "nltk,both"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["mode"] for r in lines] == ["nltk", "both"]
    assert all(r["captions"] == 40 and r["captions_per_s"] > 0 for r in lines)
