"""Write a tiny random-weight OWLv2 checkpoint folder (for tests and offline demos).

    python -m vesl.models.tiny OUT_DIR [--seed 0] [--image-size 64]

The folder is a normal transformers checkpoint (config.json, model.safetensors, CLIP tokenizer
files, preprocessor/processor config) loaded by the same ``from_pretrained`` path as real ones.
Its config carries ``vesl_random_weights: true`` so every output made with it says "random weights".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RANDOM_WEIGHTS_FLAG = "vesl_random_weights"


def tiny_config(image_size: int = 64, patch_size: int = 8):
    from transformers import Owlv2Config

    text = dict(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)
    setattr(config, RANDOM_WEIGHTS_FLAG, True)
    return config


def spread_class_scores(model):
    """A random class head puts most logits far from 0, so scores saturate at exactly 0 or 1 and
    rankings are full of ties. Scale its logit scale and shift down so scores spread over (0, 1) like a
    trained model's; comparisons of two code paths (the equality check) are then meaningful. Changes
    no shape and no FLOP."""
    import torch

    with torch.no_grad():
        head = model.class_head
        head.logit_scale.weight.mul_(0.01)
        head.logit_scale.bias.fill_(0.0)
        head.logit_shift.weight.mul_(0.5)
        head.logit_shift.bias.fill_(-1.0)
    return model


def write_tiny_checkpoint(out_dir: str | Path, seed: int = 0, image_size: int = 64) -> Path:
    import torch
    from transformers import Owlv2ForObjectDetection

    from vesl.models.clip_tokenizer import build_clip_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = spread_class_scores(Owlv2ForObjectDetection(tiny_config(image_size=image_size)).eval())
    model.save_pretrained(out, safe_serialization=True)
    build_clip_tokenizer().save_pretrained(out)
    image_processor = {
        "image_processor_type": "Owlv2ImageProcessor",
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(image_processor, indent=2))
    (out / "README.md").write_text(
        "# Tiny random-weight OWLv2 (VESL test checkpoint)\n\nRandom weights: its boxes mean nothing. "
        "Written by `python -m vesl.models.tiny`; same architecture family and file layout as "
        "google/owlv2-*, so it loads through the same from_pretrained path.\n"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    print(write_tiny_checkpoint(args.out_dir, seed=args.seed, image_size=args.image_size))


if __name__ == "__main__":
    main()
