"""Detection-stage throughput: end to end (encoded bytes + phrase lists in, filtered regions out,
through VESL's own decode/letterbox, detector and filter code) and model-only (forward on ready
tensors), plus the equality check of the configuration against the fp32 eager reference.
Prints one JSON line per measurement.

    python -m bench.detect [--arch tiny|owlv2-b16|owlv2-l14] [--image-size 448] [--batch 64]
        [--dtype bfloat16] [--attn sdpa] [--compile [--compile-mode reduce-overhead]] [--images 512]
        [--workers 8] [--top-k 12] [--image-decoder pil|nvimgcodec]

Random weights of the real architecture (no checkpoint needed: the FLOPs are the same). Random
weights score far more boxes than a trained model, so regions are capped at the best ``--top-k``
per image above ``--threshold`` (default 12, CLOC's ~11.5 regions per image). Images: the COCO
photos and phrase lists of ../shared/bench (when present), else the bundled sample photos with
phrases from VESL's phrase stage. On a GPU the host work (decode, letterbox) runs in ``--workers``
processes while the GPU works on the previous batch; with ``--image-decoder nvimgcodec`` the workers
only check headers and JPEGs are decoded and letterboxed on the GPU in batches (the equality check then
covers the decoder too: the reference decodes with Pillow). Runs on CPU with ``--arch tiny`` (tests
do).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import time
from datetime import date
from pathlib import Path

from bench.peak_rss import PeakRss
from vesl.config import DetectConfig, FilterConfig
from vesl.filtering.rules import filter_detections
from vesl.models.clip_tokenizer import build_clip_tokenizer
from vesl.models.devices import resolve_device
from vesl.models.equality import check_fast_path
from vesl.models.owlv2 import Owlv2Detector
from vesl.records import ImageRecord, Phrase
from vesl.vision.device_decode import DecodeFailure
from vesl.vision.prepare import prepare_image

ROOT = Path(__file__).resolve().parent.parent
# ../shared beside the checkout (development machine) or ./shared inside it (copied for a GPU run).
SHARED_BENCH = next(
    (p for p in (ROOT / "shared" / "bench", ROOT.parent / "shared" / "bench") if p.exists()),
    ROOT.parent / "shared" / "bench",
)


def load_inputs(max_queries: int) -> tuple[list[bytes], list[list[str]], str]:
    """(encoded images, phrase lists, source description)."""
    assets = SHARED_BENCH / "assets" / "coco_val_queries.json"
    images = SHARED_BENCH.parent / "data" / "coco_val2017" / "images"
    if assets.exists() and images.exists():
        queries = json.loads(assets.read_text())
        names = sorted(queries)
        return (
            [(images / n).read_bytes() for n in names],
            [queries[n][:max_queries] for n in names],
            f"COCO val2017 photos + caption phrases ({len(names)} distinct)",
        )
    from vesl.config import PhraseConfig
    from vesl.text.phrases import PhraseExtractor

    photos = ROOT / "sample" / "photos"
    entries = [json.loads(line) for line in (photos / "manifest.jsonl").read_text().splitlines()]
    extractor = PhraseExtractor(PhraseConfig(max_phrases=max_queries)).setup()
    phrases = extractor.extract_many([e["captions"][0] for e in entries])
    return (
        [(photos / e["image"]).read_bytes() for e in entries],
        [[p.text for p in ps] or ["an object"] for ps in phrases],
        f"bundled sample photos ({len(entries)} distinct)",
    )


_PREP_CONFIG: DetectConfig | None = None
_ON_DEVICE = False


def _init_worker(config: DetectConfig, decode_on_device: bool = False) -> None:
    global _PREP_CONFIG, _ON_DEVICE
    _PREP_CONFIG, _ON_DEVICE = config, decode_on_device


def _prepare(item: tuple[int, bytes, list[str]], decode_on_device: bool | None = None):
    index, data, queries = item
    phrases = tuple(Phrase(q, 0, 0, "cloc") for q in queries)
    record = ImageRecord(str(index), "bench", index, "", data, phrases=phrases)
    on_device = _ON_DEVICE if decode_on_device is None else decode_on_device
    prepared = prepare_image(record, _PREP_CONFIG, keep_image_bytes=False, decode_on_device=on_device)
    return prepared.record, prepared.image, (prepared.content_width, prepared.content_height)


def run_end_to_end(detector, items, args, config: DetectConfig, filter_config: FilterConfig) -> dict:
    import torch

    batches = [items[i : i + args.batch] for i in range(0, len(items), args.batch)]
    regions = 0
    # spawn, not fork: the parent already holds a CUDA context, which forked children must not inherit.
    context = multiprocessing.get_context("spawn")
    on_device = getattr(detector, "image_decoder", None) is not None
    on_cuda = getattr(getattr(detector, "device", None), "type", "") == "cuda"
    with context.Pool(args.workers, initializer=_init_worker, initargs=(config, on_device)) as pool:

        def prepared_batches():
            # imap keeps `workers` processes decoding ahead while the GPU runs the current batch.
            stream = pool.imap(_prepare, [item for batch in batches for item in batch], chunksize=4)
            for batch in batches:
                yield [next(stream) for _ in batch]

        start = None
        for n, batch in enumerate(prepared_batches()):
            if n == args.warmup_batches:
                if on_cuda:
                    torch.cuda.synchronize()
                start, regions = time.perf_counter(), 0
            records, pixels, sizes = zip(*batch)
            detections = detector.detect(
                list(pixels),
                list(sizes),
                [[p.text for p in r.phrases] for r in records],
                args.threshold,
                args.top_k,
                config.query_buckets,
            )
            for record, det in zip(records, detections):
                if isinstance(det, DecodeFailure):
                    raise RuntimeError(f"bench image {record.key} failed to decode: {det}")
                regions += len(filter_detections(record, det, filter_config).regions)
        if on_cuda:
            torch.cuda.synchronize()
    timed = len(items) - args.warmup_batches * args.batch
    seconds = time.perf_counter() - start
    return {
        "img_per_s": round(timed / seconds, 2),
        "images_timed": timed,
        "regions_per_image": round(regions / timed, 2),
        "decoder_fallbacks": detector.image_decoder.fallbacks if on_device else None,
    }


def run_host_only(items, args, config: DetectConfig, decode_on_device: bool) -> dict:
    """The CPU work per image of the configured decode path, on one core: Pillow decode + letterbox
    (pil), or the header check that is all the CPU does when JPEGs decode on the device."""
    _init_worker(config, decode_on_device)
    sample = items[: max(args.images, 1)]
    for item in sample[:8]:  # warm caches
        _prepare(item)
    start = time.perf_counter()
    for item in sample:
        _prepare(item)
    seconds = time.perf_counter() - start
    return {
        "host_work": "header check" if decode_on_device else "decode + letterbox",
        "ms_per_image": round(1000 * seconds / len(sample), 3),
        "img_per_s_per_core": round(len(sample) / seconds, 1),
        "images_timed": len(sample),
    }


def run_model_only(detector, items, args, config: DetectConfig) -> dict:
    import torch

    _init_worker(config)
    batch = [_prepare(item) for item in items[: args.batch]]
    records, pixels, sizes = zip(*batch)
    phrases, index, mask = detector.query_inputs([[p.text for p in r.phrases] for r in records], config.query_buckets)
    x = detector.pixel_values(list(pixels), list(sizes))
    steps = max(2, args.images // args.batch)
    with torch.inference_mode():
        for _ in range(args.warmup_batches):
            detector.forward(x, phrases, index, mask)
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            detector.forward(x, phrases, index, mask)
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
    return {
        "img_per_s": round(steps * len(batch) / (time.perf_counter() - start), 2),
        "images_timed": steps * len(batch),
    }


def run_model_only_jax(detector, items, args, config: DetectConfig) -> dict:
    """The jax detector's programs on ready device inputs: the image tower and heads, then the class head
    with the top-k (the phrase table already holds the batch's phrases)."""
    import jax
    import numpy as np

    _init_worker(config)
    batch = [_prepare(item) for item in items[: args.batch]]
    records, pixels, sizes = zip(*batch)
    n = len(batch)
    index, mask = detector.query_inputs([[p.text for p in r.phrases] for r in records], n)
    pixels, content = np.stack(pixels), np.asarray(sizes, np.int32)

    def step():
        outputs = detector._run_image(pixels, content)
        return detector._run_head(*outputs, index, mask, detector.candidates())

    steps = max(2, args.images // args.batch)
    for _ in range(args.warmup_batches):
        jax.block_until_ready(step())
    start = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(step())
    return {"img_per_s": round(steps * n / (time.perf_counter() - start), 2), "images_timed": steps * n}


def build_torch(model, tokenizer, device: str, config: DetectConfig):
    return Owlv2Detector.for_model(model, tokenizer, device, config)


def build_jax(model, tokenizer, device: str, config: DetectConfig, args) -> tuple[object, dict]:
    """The jax detector over the torch model's own weights (its state_dict), warmed: (detector, what its
    load and compiles cost)."""
    from vesl.models.jax_backend import detector_from_tensors, jax_devices

    jax_config = dataclasses.replace(config, backend="jax", device=args.jax_device, options={})
    tensors = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    started = time.perf_counter()
    detector = detector_from_tensors(tensors, model.config, tokenizer, jax_config, jax_devices(args.jax_device))
    detector.warm()
    compiles = {"-".join(map(str, key)): seconds for key, seconds in detector.compile_seconds.items()}
    return detector, {"load_and_compile_s": round(time.perf_counter() - started, 2), "compile_s": compiles}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="owlv2-l14")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--position-embedding", default="truncate")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--top-k", type=int, default=12)
    parser.add_argument("--warmup-batches", type=int, default=1)
    parser.add_argument("--modes", default="e2e,model,equality", help="any of e2e,model,equality,host")
    parser.add_argument("--equality-images", type=int, default=64)
    parser.add_argument("--image-decoder", default="pil", choices=("pil", "nvimgcodec", "auto"))
    parser.add_argument("--backends", default="torch", help="torch, jax or both (torch,jax): measured side by side")
    parser.add_argument("--jax-device", default="auto", help="the jax backend's platform: auto | cpu | tpu | gpu")
    args = parser.parse_args(argv)
    results: list[dict] = []
    for backend in args.backends.split(","):
        results += run_backend(backend.strip(), args)
    return results


def run_backend(backend: str, args) -> list[dict]:
    device = resolve_device(args.device)
    images, queries, source = load_inputs(args.queries)
    total = args.images + args.warmup_batches * args.batch
    items = [(i, images[i % len(images)], queries[i % len(queries)]) for i in range(total)]
    config = DetectConfig(
        image_size=args.image_size,
        dtype=args.dtype,
        batch_size=args.batch,
        position_embedding=args.position_embedding,
        options={
            "attn_implementation": args.attn,
            "compile": args.compile,
            "compile_mode": args.compile_mode,
            "image_decoder": args.image_decoder,
        },
    )
    tokenizer = build_clip_tokenizer()
    with PeakRss() as memory:  # this backend's peak: its model, its compiles and its runs
        return measure(backend, args, config, tokenizer, device, items, source, memory)


def measure(backend: str, args, config: DetectConfig, tokenizer, device: str, items, source: str, memory) -> list[dict]:
    import torch

    from vesl.models.architectures import random_model

    model = random_model(args.arch, args.dtype if backend == "torch" else "float32", args.attn).to(device)
    if backend == "jax":
        detector, load = build_jax(model, tokenizer, device, config, args)
    else:
        detector, load = build_torch(model, tokenizer, device, config), {}
    on_device = getattr(detector, "image_decoder", None) is not None
    base = {
        "bench": "detect",
        "date": date.today().isoformat(),
        "backend": backend,
        "arch": args.arch,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "image_size": args.image_size,
        "queries": args.queries,
        "batch": args.batch,
        "dtype": args.dtype,
        "attn": args.attn if backend == "torch" else None,
        "compile": args.compile if backend == "torch" else "xla",
        "compile_mode": args.compile_mode if backend == "torch" else None,
        "position_embedding": args.position_embedding,
        "image_decoder": "nvimgcodec" if on_device else "pil",
        "threshold": args.threshold,
        "top_k": args.top_k,
        "inputs": source,
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else (platform.processor() or "cpu"),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "torch": torch.__version__,
        **backend_versions(backend, detector),
    }
    results = []

    def emit(mode: str, values: dict) -> None:
        if device.startswith("cuda") and backend == "torch":
            values["gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        line = {**base, "mode": mode, **values, "peak_rss_mb": memory.mb}
        print(json.dumps(line), flush=True)
        results.append(line)

    if load:
        emit("load", load)
    modes = args.modes.split(",")
    if "e2e" in modes:
        emit("e2e", run_end_to_end(detector, items, args, config, FilterConfig(score_threshold=args.threshold)))
    if "model" in modes:
        emit("model", (run_model_only_jax if backend == "jax" else run_model_only)(detector, items, args, config))
    if "host" in modes:
        emit("host", run_host_only(items, args, config, on_device))
    if "equality" in modes:
        emit("equality", run_equality(detector, items, args, config, tokenizer, device, on_device))
    return results


def backend_versions(backend: str, detector) -> dict:
    if backend != "jax":
        return {}
    import jax

    return {"jax": jax.__version__, "jax_devices": [str(d) for d in detector.devices]}


def run_equality(detector, items, args, config: DetectConfig, tokenizer, device: str, on_device: bool) -> dict:
    """The configuration (either backend) against torch's float32 eager reference on the same weights."""
    from vesl.models.architectures import random_model

    reference = Owlv2Detector(
        random_model(args.arch, "float32", "eager").to(device),
        tokenizer,
        device,
        args.image_size,
        "float32",
        position_embedding=args.position_embedding,
        text_cache_size=0,
    )
    _init_worker(config)
    # The reference decodes with Pillow on the host; the candidate takes its configured path.
    on_host = [_prepare(item, decode_on_device=False) for item in items[: args.equality_images]]
    as_run = [_prepare(item, decode_on_device=on_device) for item in items[: args.equality_images]]
    step = min(args.batch, 16)
    batches = []
    for i in range(0, len(on_host), step):
        records, pixels, sizes = zip(*on_host[i : i + step])
        candidate_images = [image for _, image, _ in as_run[i : i + step]]
        batches.append((list(pixels), candidate_images, list(sizes), [[p.text for p in r.phrases] for r in records]))
    report = check_fast_path(reference, detector, batches, args.threshold, args.top_k, config.query_buckets)
    return {"reference": "float32 eager torch, same weights", **report.to_dict()}


if __name__ == "__main__":
    main()
