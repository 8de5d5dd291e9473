"""OWLv2 architectures by name, for random-weight benchmarks (the FLOPs of a checkpoint without its
weights). Values are those of the google/owlv2-* checkpoints' configs."""

from __future__ import annotations

ARCHITECTURES: dict[str, dict] = {
    # google/owlv2-base-patch16(-ensemble|-finetuned): CLIP B/16 at 960 px
    "owlv2-b16": {
        "text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
        "vision": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 960,
            "patch_size": 16,
        },
        "projection_dim": 512,
    },
    # google/owlv2-large-patch14(-ensemble|-finetuned): CLIP L/14 at 1008 px
    "owlv2-l14": {
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        "vision": {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 1008,
            "patch_size": 14,
        },
        "projection_dim": 768,
    },
}


def architecture_config(name: str):
    """An Owlv2Config of a named architecture (``tiny`` is the test checkpoint's)."""
    from transformers import Owlv2Config

    if name == "tiny":
        from vesl.models.tiny import tiny_config

        return tiny_config()
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: tiny, {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    text = {**arch["text"], "max_position_embeddings": 16, "vocab_size": 49408}
    return Owlv2Config(text_config=text, vision_config=arch["vision"], projection_dim=arch["projection_dim"])


def random_model(name: str, dtype: str = "float32", attn_implementation: str = "sdpa", seed: int = 0):
    """Random weights of an architecture (class-head scores spread, see ``spread_class_scores``);
    the same seed gives the same weights whatever the dtype or attention kernel."""
    import torch
    from transformers import Owlv2ForObjectDetection

    from vesl.models.tiny import spread_class_scores

    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection._from_config(
        architecture_config(name), attn_implementation=attn_implementation, dtype=getattr(torch, dtype)
    )
    return spread_class_scores(model).eval()
