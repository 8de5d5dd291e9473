"""Captioning-stage throughput: images per second through VESL's Captioner (processor + generate +
decode), random weights of a real architecture (or the tiny test one). Prints JSON.

    python -m bench.caption [--arch blip-large|tiny] [--batch 32] [--dtype bfloat16] [--images 256]
        [--max-new-tokens 60] [--num-beams 3]

Random weights generate arbitrary tokens, so every caption runs to ``--max-new-tokens`` unless the
model emits its end token: the figure is the cost of generating that many tokens per image (a trained
captioner stops earlier on short captions, so this is the slow end).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BLIP_LARGE = {  # Salesforce/blip-image-captioning-large: ViT-L/16 at 384 px + BERT-base decoder
    "vision": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 16,
    },
    "text": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "vocab_size": 30524,
        "max_position_embeddings": 512,
    },
}


def write_random_blip_large(out: Path) -> Path:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(BLIP_LARGE["text"]["vocab_size"] - 6)])}
    text = {**BLIP_LARGE["text"], "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3}
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=BLIP_LARGE["vision"])).eval()
    model.save_pretrained(out)
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=512)
    BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 384, "width": 384}), tokenizer=tokenizer
    ).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="blip-large", choices=["blip-large", "tiny"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--num-beams", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from vesl.config import CaptionConfig
    from vesl.models.captioner import Captioner, write_tiny_captioner

    folder = Path(tempfile.mkdtemp(prefix="vesl-captioner-"))
    (write_tiny_captioner if args.arch == "tiny" else write_random_blip_large)(folder)
    config = CaptionConfig(
        enabled=True,
        checkpoint=str(folder),
        batch_size=args.batch,
        dtype=args.dtype,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
    )
    captioner = Captioner.from_config(config)
    photos = sorted((ROOT / "sample" / "photos").glob("*.*g"))
    images = [Image.open(p).convert("RGB") for p in photos]
    batch = [images[i % len(images)] for i in range(args.batch)]
    captioner.caption(batch[:2])  # warm-up
    steps = max(1, args.images // args.batch)
    cuda = captioner.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = 0
    for _ in range(steps):
        tokens += sum(len(c.split()) for c in captioner.caption(batch))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "bench": "caption",
        "date": date.today().isoformat(),
        "arch": args.arch,
        "params_m": round(sum(p.numel() for p in captioner.model.parameters()) / 1e6, 1),
        "batch": args.batch,
        "dtype": args.dtype,
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "img_per_s": round(steps * args.batch / seconds, 2),
        "words_per_caption": round(tokens / (steps * args.batch), 1),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "cpus": os.cpu_count(),
    }
    if cuda:
        result["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
