"""OWLv2's forward in JAX: ``Owlv2ForObjectDetection`` (both towers, the box, class and objectness heads,
the box bias) as pure functions of the Hugging Face checkpoint's own tensors, read from its safetensors
files (no conversion, any OWLv2 size). XLA compiles it for TPUs, GPUs or the CPU.

Numerics follow the torch backend (``vesl.models.owlv2``) step for step, with the pitfalls of a JAX
port avoided on purpose (NOTES.md section 8): both towers use their config's activation (quick_gelu
for OWLv2) while the box and objectness heads use the exact, erf GELU (``jax.nn.gelu`` defaults to the
tanh approximation); the position table for the run's image size is the torch path's own, computed
once on the host at load (``position_table``: truncated, or torch's bicubic interpolation, which
``jax.image.resize`` does not reproduce); padded queries are masked out of the class logits.

Layer norms and softmax run in float32 whatever the model dtype; the encoder layers are one
``lax.scan`` over stacked weights, so a 24-layer tower compiles one layer body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vesl.models.owlv2 import CLIP_MEAN, CLIP_STD

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
LAYER_KEYS = {  # HF name in each encoder layer -> ours (weights are transposed to [in, out])
    "layer_norm1.weight": "ln1_g",
    "layer_norm1.bias": "ln1_b",
    "self_attn.q_proj.weight": "q_w",
    "self_attn.q_proj.bias": "q_b",
    "self_attn.k_proj.weight": "k_w",
    "self_attn.k_proj.bias": "k_b",
    "self_attn.v_proj.weight": "v_w",
    "self_attn.v_proj.bias": "v_b",
    "self_attn.out_proj.weight": "o_w",
    "self_attn.out_proj.bias": "o_b",
    "layer_norm2.weight": "ln2_g",
    "layer_norm2.bias": "ln2_b",
    "mlp.fc1.weight": "fc1_w",
    "mlp.fc1.bias": "fc1_b",
    "mlp.fc2.weight": "fc2_w",
    "mlp.fc2.bias": "fc2_b",
}


@dataclass(frozen=True)
class TowerShape:
    """What a tower's forward needs of its config (static under jit)."""

    heads: int
    eps: float
    act: str


@dataclass(frozen=True)
class Owlv2Shape:
    """The static facts of a checkpoint and a run: tower shapes, patch size, the detector grid."""

    vision: TowerShape
    text: TowerShape
    patch: int
    image_size: int
    native_size: int
    text_length: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


# -- loading ------------------------------------------------------------------------------------
def read_safetensors(folder: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint folder (``model.safetensors`` or its shards), as numpy, names as saved."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    )
    tensors: dict[str, np.ndarray] = {}
    for name in files:
        with safe_open(str(folder / name), framework="flax") as f:  # bf16 included (numpy has none)
            for key in f.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                tensors[key] = np.asarray(f.get_tensor(key).astype(jnp.float32))
    return tensors


def _linear(tensors: dict[str, np.ndarray], name: str, bias: bool = True) -> dict[str, np.ndarray]:
    out = {"w": tensors[f"{name}.weight"].T}
    if bias:
        out["b"] = tensors[f"{name}.bias"]
    return out


def _norm(tensors: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    return {"g": tensors[f"{name}.weight"], "b": tensors[f"{name}.bias"]}


def _layers(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The encoder's layers stacked on a leading axis (for ``lax.scan``), linear weights as [in, out]."""
    count = 1 + max(int(k[len(prefix) :].split(".")[0]) for k in tensors if k.startswith(prefix))
    stacked = {}
    for hf, ours in LAYER_KEYS.items():
        values = [tensors[f"{prefix}{i}.{hf}"] for i in range(count)]
        stacked[ours] = np.stack([v.T if ours.endswith("_w") else v for v in values])
    return stacked


def params_from_tensors(tensors: dict[str, np.ndarray], position_table: np.ndarray, box_bias: np.ndarray) -> dict:
    """The checkpoint's tensors arranged for the forward below (float32 numpy; cast at device transfer)."""
    vision, text = "owlv2.vision_model.", "owlv2.text_model."
    patch = tensors[f"{vision}embeddings.patch_embedding.weight"]  # [D, C, p, p]
    return {
        "vision": {
            "patch_w": patch.reshape(patch.shape[0], -1).T,  # [(c, kh, kw), D]: the conv as one matmul
            "class": tensors[f"{vision}embeddings.class_embedding"],
            "pos": position_table,
            "pre_ln": _norm(tensors, f"{vision}pre_layernorm"),
            "layers": _layers(tensors, f"{vision}encoder.layers."),
            "post_ln": _norm(tensors, f"{vision}post_layernorm"),
        },
        "text": {
            "tok": tensors[f"{text}embeddings.token_embedding.weight"],
            "pos": tensors[f"{text}embeddings.position_embedding.weight"],
            "layers": _layers(tensors, f"{text}encoder.layers."),
            "final_ln": _norm(tensors, f"{text}final_layer_norm"),
            "proj": tensors["owlv2.text_projection.weight"].T,
        },
        "merge_ln": _norm(tensors, "layer_norm"),
        "box": {k: _linear(tensors, f"box_head.{k}") for k in ("dense0", "dense1", "dense2")},
        "box_bias": box_bias,
        "objectness": {k: _linear(tensors, f"objectness_head.{k}") for k in ("dense0", "dense1", "dense2")},
        "class": {k: _linear(tensors, f"class_head.{k}") for k in ("dense0", "logit_shift", "logit_scale")},
    }


def position_table(weight: np.ndarray, patch: int, image_size: int, native_size: int, mode: str) -> np.ndarray:
    """The position embeddings a ``image_size`` input uses, [1 + G*G, D], exactly as the torch path builds
    them: the checkpoint's own at its native size; at a smaller size with ``truncate``, the top-left part
    of its grid (scenic); otherwise transformers' bicubic interpolation, run here with torch itself once
    at load (no torch while detecting)."""
    if image_size == native_size:
        return weight
    grid = round((weight.shape[0] - 1) ** 0.5)
    cells = image_size // patch
    if mode == "truncate" and image_size < native_size:
        patches = weight[1:].reshape(grid, grid, -1)[:cells, :cells].reshape(cells * cells, -1)
        return np.concatenate([weight[:1], patches])
    import torch

    table = torch.from_numpy(weight[1:].copy()).reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(table, size=(cells, cells), mode="bicubic", align_corners=False)
    return np.concatenate([weight[:1], resized.permute(0, 2, 3, 1).reshape(cells * cells, -1).numpy()])


def box_bias(grid: int) -> np.ndarray:
    """The box head's bias for a ``grid x grid`` feature map (``Owlv2ForObjectDetection.compute_box_bias``):
    each box's centre starts at its patch's corner, its size at one patch (logit space)."""
    ticks = np.arange(1, grid + 1, dtype=np.float32) / np.float32(grid)
    xx, yy = np.meshgrid(ticks, ticks, indexing="xy")
    corners = np.clip(np.stack([xx, yy], axis=-1).reshape(-1, 2), 0.0, 1.0)
    coord = np.log(corners + 1e-4) - np.log1p(-corners + 1e-4)
    size = np.full_like(coord, np.float32(1.0) / np.float32(grid))
    size_bias = np.log(size + 1e-4) - np.log1p(-size + 1e-4)
    return np.concatenate([coord, size_bias], axis=-1).astype(np.float32)


# -- the forward --------------------------------------------------------------------------------
def layer_norm(x, norm, eps: float):
    """LayerNorm in float32, back to x's dtype."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    out = (x32 - mean) * jax.lax.rsqrt(var + eps) * norm["g"].astype(jnp.float32) + norm["b"].astype(jnp.float32)
    return out.astype(x.dtype)


def dense(x, layer):
    y = x @ layer["w"]
    return y + layer["b"] if "b" in layer else y


def attention(x, p, heads: int, mask):
    b, t, d = x.shape
    hd = d // heads
    q = (x @ p["q_w"] + p["q_b"]).reshape(b, t, heads, hd)
    k = (x @ p["k_w"] + p["k_b"]).reshape(b, t, heads, hd)
    v = (x @ p["v_w"] + p["v_b"]).reshape(b, t, heads, hd)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * (hd**-0.5)
    if mask is not None:
        scores = scores + mask
    weights = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, d)
    return out @ p["o_w"] + p["o_b"]


def encoder(x, layers, shape: TowerShape, mask=None):
    act = ACTIVATIONS[shape.act]

    def layer(h, p):
        h = h + attention(layer_norm(h, {"g": p["ln1_g"], "b": p["ln1_b"]}, shape.eps), p, shape.heads, mask)
        m = layer_norm(h, {"g": p["ln2_g"], "b": p["ln2_b"]}, shape.eps)
        h = h + (act(m @ p["fc1_w"] + p["fc1_b"]) @ p["fc2_w"] + p["fc2_b"])
        return h, None

    out, _ = jax.lax.scan(layer, x, layers)
    return out


def normalized_pixels(pixels, content_wh, shape: Owlv2Shape, pad_value: float, dtype):
    """Letterboxed uint8 [B, S, S, 3] -> CLIP-normalized input: the padding outside each image's
    top-left ``content_wh`` set to ``pad_value`` (in [0, 1]) first, as the torch path does."""
    size = shape.image_size
    x = pixels.astype(jnp.float32) / 255.0
    cols = jnp.arange(size)[None, None, :, None]
    rows = jnp.arange(size)[None, :, None, None]
    outside = (cols >= content_wh[:, 0, None, None, None]) | (rows >= content_wh[:, 1, None, None, None])
    x = jnp.where(outside, pad_value, x)
    return ((x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)).astype(dtype)


def image_features(params, x, shape: Owlv2Shape):
    """Normalized NHWC pixels -> (patch features [B, P, D], boxes cxcywh [B, P, 4], objectness [B, P]),
    boxes and objectness in float32 (probabilities)."""
    vision, p = params["vision"], shape.patch
    b, size = x.shape[0], shape.image_size
    patches = x.reshape(b, size // p, p, size // p, p, 3).transpose(0, 1, 3, 5, 2, 4).reshape(b, -1, 3 * p * p)
    tokens = patches @ vision["patch_w"]
    cls = jnp.broadcast_to(vision["class"].astype(tokens.dtype), (b, 1, tokens.shape[-1]))
    h = jnp.concatenate([cls, tokens], axis=1) + vision["pos"]
    h = encoder(layer_norm(h, vision["pre_ln"], shape.vision.eps), vision["layers"], shape.vision)
    h = layer_norm(h, vision["post_ln"], shape.vision.eps)
    feats = layer_norm(h[:, 1:] * h[:, :1], params["merge_ln"], shape.vision.eps)
    boxes = jax.nn.sigmoid(
        (head_mlp(params["box"], feats) + params["box_bias"].astype(feats.dtype)).astype(jnp.float32)
    )
    objectness = jax.nn.sigmoid(head_mlp(params["objectness"], feats)[..., 0].astype(jnp.float32))
    return feats, boxes, objectness


def head_mlp(head, x):
    """The box and objectness heads: dense, exact GELU, dense, exact GELU, dense."""
    gelu = ACTIVATIONS["gelu"]
    return dense(gelu(dense(gelu(dense(x, head["dense0"])), head["dense1"])), head["dense2"])


def text_features(params, ids, attention_mask, shape: Owlv2Shape):
    """Token ids [T, L] -> unit-length query embeddings [T, D] (``Owlv2Model.get_text_features``, then L2)."""
    text = params["text"]
    length = ids.shape[1]
    h = text["tok"][ids] + text["pos"][:length]
    causal = jnp.tril(jnp.ones((length, length), bool))
    allowed = causal[None, :, :] & (attention_mask[:, None, :] > 0)
    mask = jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)[:, None, :, :]
    h = layer_norm(encoder(h, text["layers"], shape.text, mask), text["final_ln"], shape.text.eps)
    pooled = h[jnp.arange(ids.shape[0]), jnp.argmax(ids, axis=-1)]  # the end token has the highest id
    feats = (pooled @ text["proj"]).astype(jnp.float32)
    return feats / jnp.linalg.norm(feats, axis=-1, keepdims=True)


def class_logits(params, feats, queries, query_mask):
    """Patch features [B, P, D], query embeddings [B, Q, D'], mask [B, Q] -> logits [B, P, Q] in float32,
    padded queries at the dtype's minimum (their probability is 0: they never win a box)."""
    head = params["class"]
    image = dense(feats, head["dense0"])
    image = image / (jnp.linalg.norm(image, axis=-1, keepdims=True) + 1e-6)
    queries = queries.astype(feats.dtype)
    queries = queries / (jnp.linalg.norm(queries, axis=-1, keepdims=True) + 1e-6)
    logits = jnp.einsum("bpd,bqd->bpq", image, queries)
    shift = dense(feats, head["logit_shift"])
    scale = jax.nn.elu(dense(feats, head["logit_scale"])) + 1
    logits = (logits + shift) * scale
    logits = jnp.where(query_mask[:, None, :], logits, jnp.finfo(logits.dtype).min)
    return logits.astype(jnp.float32)


def top_candidates(logits, boxes, objectness, k: int):
    """Per image its ``k`` best patches by their best query's probability, best first: (scores, query
    index, objectness, boxes cxcywh). Only these leave the device."""
    probs = jax.nn.sigmoid(logits)  # the argmax of the probabilities, as the torch path: ties at 1.0 go first
    best_score, best_query = probs.max(-1), jnp.argmax(probs, axis=-1)
    top_score, top_idx = jax.lax.top_k(best_score, k)
    take = lambda a: jnp.take_along_axis(a, top_idx, axis=1)  # noqa: E731
    top_boxes = jnp.take_along_axis(boxes, top_idx[..., None], axis=1)
    return top_score, take(best_query), take(objectness), top_boxes


def cast_params(params: dict, dtype) -> Any:
    """The params as device arrays of ``dtype`` (layer norm and bias tables too: they are upcast where used)."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)
