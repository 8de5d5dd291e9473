"""The captioning core: RGB images -> generated captions, with any transformers image-to-text model
(``AutoModelForImageTextToText`` + ``AutoProcessor``: BLIP, BLIP-2, Florence-2, ...), loaded with
``from_pretrained`` from an HF id, a local folder or a remote folder (as OWLv2 checkpoints are).

    python -m vesl.models.captioner tiny OUT_DIR   # a tiny random-weight BLIP checkpoint for tests
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from vesl.config import CaptionConfig
from vesl.models.checkpoint import checkpoint_path, one_line_errors
from vesl.models.devices import resolve_device
from vesl.models.tiny import RANDOM_WEIGHTS_FLAG

# Words of the tiny test captioner's vocabulary (random weights: it strings these together).
TINY_WORDS = (
    "a an the of on in with and at near next to two three dog dogs cat cats man woman people person child "
    "red blue green white black brown yellow table car bus street road tree trees grass sky water plate food "
    "bowl cup pizza horse bird boat train kitchen room bed chair couch window door wall building field beach "
    "standing sitting holding riding eating walking playing large small big little old young wooden"
).split()


class Captioner:
    def __init__(self, model, processor, device: str, config: CaptionConfig):
        self.model = model
        self.processor = processor
        self.device = device
        self.config = config

    @classmethod
    def from_config(cls, config: CaptionConfig) -> Captioner:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        device = resolve_device(config.device)
        with one_line_errors(config.checkpoint, "captioning"):
            path = checkpoint_path(config.checkpoint, "captioning")
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, config.dtype))
            processor = AutoProcessor.from_pretrained(path)
        return cls(model.to(device).eval(), processor, device, config)

    def caption(self, images: Sequence) -> list[str]:
        """RGB PIL images -> one caption each (generation settings from the config)."""
        import torch

        if not images:
            return []
        kwargs = {"images": list(images), "return_tensors": "pt"}
        if self.config.prompt:
            kwargs["text"] = [self.config.prompt] * len(images)
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, **self.config.generation_kwargs())
        if self.config.prompt and "input_ids" in inputs and not self.model.config.is_encoder_decoder:
            generated = generated[:, inputs["input_ids"].shape[1] :]  # decoder-only models echo the prompt
        texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def write_tiny_captioner(out_dir: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """A tiny random-weight BLIP captioner (config, safetensors, BERT-style tokenizer, processor)."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = {token: i for i, token in enumerate(specials + list(dict.fromkeys(TINY_WORDS)))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=64)
    layers = {"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "max_position_embeddings": 64,
            "bos_token_id": vocab["[DEC]"],
            "pad_token_id": vocab["[PAD]"],
            "sep_token_id": vocab["[SEP]"],
            "eos_token_id": vocab["[SEP]"],
            **layers,
        },
        vision_config={"hidden_size": 32, "image_size": image_size, "patch_size": 8, **layers},
        projection_dim=32,
        image_text_hidden_size=32,
    )
    setattr(config, RANDOM_WEIGHTS_FLAG, True)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "tiny":
        print(write_tiny_captioner(sys.argv[2]))
    else:
        print("usage: python -m vesl.models.captioner tiny OUT_DIR", file=sys.stderr)
        sys.exit(2)
