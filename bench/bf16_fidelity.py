"""How many float32 torch boxes bfloat16 keeps on the tiny random model (the equality check: same
label, IoU >= 0.9, score within 0.02), for torch's own bf16 and the jax backend's, and what the
missed boxes are. Prints one JSON line per (model variant, image size, backend).

    python -m bench.bf16_fidelity [--sizes 64/truncate,96/interpolate,32/interpolate] [--images 40]
        [--box-head-scales 1,0.02] [--dtype bfloat16|float16]

``--dtype float16`` measures float16 instead (3 more bits of significand than bf16, a GPU's other
half-precision type; a TPU has no fast float16).

Why: the equality check's bar is 99% matched. On these random weights neither backend reaches it,
and this measures whether that is the code or the weights. Variants of the same seeded checkpoint:
``1`` as written (its box head's last layer keeps transformers' random init, whose outputs are in the
hundreds, so almost every box is a saturated full-image box or a sliver), and ``0.02`` that layer
scaled down so boxes spread around their patches as a trained detector's do. A miss is ``iou`` (a
box of the same label is there, IoU under 0.9), ``label`` (a box at IoU >= 0.9 with another label:
two phrases' scores nearly tied) or ``gone`` (no box at IoU >= 0.9).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from bench.detect import load_inputs
from vesl.config import DetectConfig
from vesl.models.equality import MIN_IOU, boxes_above, compare_detections, read_candidate
from vesl.models.owlv2 import Owlv2Detector
from vesl.models.tiny import write_tiny_checkpoint
from vesl.vision.geometry import box_iou, letterbox

MIN_SCORE, MAX_CANDIDATES, QUERY_BUCKETS, BATCH = 0.1, 300, (4, 12), 4


def write_variant(folder: Path, box_head_scale: float) -> str:
    """The seeded tiny checkpoint, its box head's last layer scaled by ``box_head_scale``."""
    import torch
    from transformers import Owlv2ForObjectDetection

    write_tiny_checkpoint(folder)
    if box_head_scale != 1.0:
        model = Owlv2ForObjectDetection.from_pretrained(folder).eval()
        with torch.no_grad():
            model.box_head.dense2.weight.mul_(box_head_scale)
            model.box_head.dense2.bias.mul_(box_head_scale)
        model.save_pretrained(folder, safe_serialization=True)
    return str(folder)


def detector(checkpoint: str, size: int, mode: str, backend: str, dtype: str):
    config = DetectConfig(
        backend=backend, checkpoint=checkpoint, image_size=size, device="cpu", dtype=dtype,
        position_embedding=mode, batch_size=BATCH, query_buckets=QUERY_BUCKETS,
    )  # fmt: skip
    if backend == "jax":
        from vesl.models.jax_backend import load_jax_detector

        return load_jax_detector(config)
    return Owlv2Detector.from_config(config)


def batches(pixels, sizes, queries):
    for i in range(0, len(pixels), BATCH):
        window = slice(i, i + BATCH)
        yield pixels[window], sizes[window], queries[window]


def miss_kind(box: np.ndarray, label: int, candidate) -> str | None:
    """Why a reference box has no same-label candidate at IoU >= 0.9 (module docstring); None if it has."""
    ious = box_iou(box[None], candidate.boxes)[0] if len(candidate.scores) else np.zeros(0)
    same = ious[candidate.query_index == label]
    if same.size and same.max() >= MIN_IOU:
        return None
    if same.size and same.max() >= 0.5:
        return "iou"
    return "label" if (ious >= MIN_IOU).any() else "gone"


def miss_kinds(reference, candidate, min_side: float) -> dict[str, int]:
    """The misses of every reference box the equality check compares (``boxes_above``), by kind."""
    kinds = {"iou": 0, "label": 0, "gone": 0}
    for ref, cand in zip(reference, candidate, strict=True):
        boxes, _, labels = boxes_above(ref, min_side)
        for box, label in zip(boxes, labels):
            kind = miss_kind(box, label, cand)
            if kind:
                kinds[kind] += 1
    return kinds


def box_head_raw(model, pixels, sizes):
    """The box head's raw outputs (before the box bias and the sigmoid) on the first batch, float32."""
    import torch

    with torch.inference_mode():
        values = model.pixel_values(pixels[:BATCH], sizes[:BATCH])
        feature_map, _ = model.model.image_embedder(pixel_values=values, interpolate_pos_encoding=True)
        return model.model.box_head(feature_map.flatten(1, 2)).float()


def relative_error(reference, candidate) -> float:
    return round(float((candidate - reference).norm() / reference.norm()), 5)


def measure(checkpoint: str, scale: float, size: int, mode: str, images, queries, dtype: str) -> list[dict]:
    letterboxed = [letterbox(image, size) for image in images]
    pixels, sizes = [p for p, _, _ in letterboxed], [(w, h) for _, w, h in letterboxed]
    reference_model = detector(checkpoint, size, mode, "torch", "float32")
    read = list(batches(pixels, sizes, queries))
    reference = [d for b in read for d in reference_model.detect(*b, MIN_SCORE, MAX_CANDIDATES, QUERY_BUCKETS)]
    raw = box_head_raw(reference_model, pixels, sizes)
    rows = []
    for backend in ("torch", "jax"):
        model = detector(checkpoint, size, mode, backend, dtype)
        candidate = [d for b in read for d in read_candidate(model, *b, MIN_SCORE, MAX_CANDIDATES, QUERY_BUCKETS)]
        report = compare_detections(reference, candidate, min_side=1.0 / size)
        # How far bf16 moves the box head's raw outputs (torch's model exposes them; the jax one does not).
        raw_error = relative_error(raw, box_head_raw(model, pixels, sizes)) if backend == "torch" else None
        rows.append({
            "bench": "bf16_fidelity", "box_head_scale": scale, "box_head_raw_std": round(float(raw.std()), 3), "dtype": dtype, "image_size": size,
            "position_embedding": mode, "backend": backend, "reference_boxes": report.reference_boxes,
            "matched_boxes": report.matched_boxes, "matched_fraction": report.matched_fraction,
            "max_score_diff": report.max_score_diff, "misses": miss_kinds(reference, candidate, 1.0 / size),
            "box_head_raw_relative_error": raw_error,
            "images": len(images), "date": date.today().isoformat(), "machine": platform.machine(),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64/truncate,96/interpolate,32/interpolate")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--box-head-scales", default="1,0.02")
    parser.add_argument("--dtype", default="bfloat16", help="the reduced precision against float32: bfloat16 | float16")
    args = parser.parse_args(argv)
    encoded, phrase_lists, _ = load_inputs(max(QUERY_BUCKETS))
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in encoded[: args.images]]
    queries = phrase_lists[: args.images]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (float(s) for s in args.box_head_scales.split(",")):
            checkpoint = write_variant(Path(tmp) / f"scale-{scale}", scale)
            for entry in args.sizes.split(","):
                size, mode = entry.split("/")
                for row in measure(checkpoint, scale, int(size), mode, images, queries, args.dtype):
                    print(json.dumps(row), flush=True)
                    results.append(row)
    return results


if __name__ == "__main__":
    main()
