"""A CLIP tokenizer built offline from the vendored BPE vocabulary.

``vesl/assets/clip/bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's BPE merge list as shipped by
open-clip-torch 3.3.0 (MIT, ``LICENSE-open_clip`` beside it). The vocabulary is derived from it
exactly as CLIP's ``SimpleTokenizer`` does: 256 byte symbols, the same with ``</w>``, one entry per
merge, then the two special tokens (49,408 entries).
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib import resources

CLIP_MAX_LENGTH = 16  # OWLv2's text length
_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@cache
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    raw = resources.files("vesl").joinpath("assets", "clip", "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _N_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab_list)}, merges  # type: ignore[return-value]


def build_clip_tokenizer():
    """transformers' CLIPTokenizer with OWLv2's settings (pad token "!", 16 tokens)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CLIP_MAX_LENGTH, pad_token="!")
