"""Scale benchmark: peak memory and host CPU per image of a whole local run, at several sizes.

    python -m bench.scale [--sizes 1000,8000,32000] [--per-shard 1000] [--work DIR] [--decoder nvimgcodec]

Inputs: webdataset shards generated from the COCO photos of ``../shared/data/coco_val2017`` (cycled,
each copy under its own key) with COCO human captions (``../shared/data/text``, cycled in order, so
captions repeat only past 25,014 images), or ``--photos``/``--captions`` folders of your own. Each
size runs ``python -m pipelines.vesl`` on the FnApiRunner in its own process, with the tiny 64-px
random-weight OWLv2, so the run is nearly all pipeline.

How the figures are obtained (printed as JSON, one line per size, then one summary line):
- ``peak_rss_mb``: the run's own peak resident memory (``bench.peak_rss``: wait4's ru_maxrss).
- ``cpu_s``: the run's user + system CPU seconds (wait4's rusage, all threads and children).
- ``device_cpu_s``: CPU spent in the detector's device part, measured inside the run: the process
  CPU consumed during ``Owlv2Detector.prepare_batch`` (batched JPEG decode and letterbox on the
  "device", here nvImageCodec's CPU backend and PyTorch on the CPU) and ``Owlv2Detector.forward``
  (the model), with PyTorch held to one thread so that work happens in the measured thread. On a
  GPU machine that work is the GPU's; the host's share of it (kernel launches) is not counted.
- ``host_cpu_ms_per_image``: ``(cpu_s - device_cpu_s)`` of a size minus the same of the next
  smaller size, divided by the difference in images: the fixed costs (interpreter, imports, model
  load, pipeline construction, the last shard's commit) cancel, so what is left is the marginal host
  CPU of one more image through the whole pipeline: reading, the keys pass, phrases (spaCy + NLTK;
  the phrase cache is on, as in a user's run), the header check, tokenizing queries and
  post-processing, filtering, Beam's own work and writing.
- The input is read once into the page cache before each run (``warm_page_cache``; ``--cold`` does
  not), so the figure depends less on what this VM's memory reclaim left cached (the kernel still
  reclaims part of a 4.9 GB input while the run goes: ``free`` showed 0.6 GB cached after a
  32,000-image run, so the largest size pays part of a re-read from disk); ``user_s``,
  ``system_s`` and ``system_ms_per_image`` say how much of it is the kernel's.
- ``yardstick``: how fast this VM runs today, taken in the parent before and after the runs: the
  phrase parse (``both``: spaCy + CLOC's grammar, cache off) of the first 3,000 captions (as
  ``python -m bench.phrases --limit 3000``, the figure docs/benchmarks.md quotes per day), in captions/s, and the device
  part's CPU ms an image over the largest interval. This VM's speed moves from day to day (the same
  code measured 1.85 and 0.99 ms an image on two days, with 862 and 1,702 captions/s): compare host
  figures of days whose yardsticks agree.
- With ``--stages``: each stage's exclusive CPU, the collector's collections and seconds per
  generation, and each live thread's CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_PHOTOS = SHARED / "coco_val2017" / "images"
DEFAULT_CAPTIONS = SHARED / "text" / "coco_captions_val2017.json"


def load_captions(path: Path) -> list[str]:
    """COCO-style captions JSON ({"annotations": [{"caption": ...}]}), or one caption per line."""
    text = path.read_text()
    if path.suffix == ".json":
        return [a["caption"].strip() for a in json.loads(text)["annotations"]]
    return [line.strip() for line in text.splitlines() if line.strip()]


def samples(photos: list[bytes], captions: list[str], n: int) -> Iterator[tuple[str, bytes, str]]:
    for i in range(n):
        yield f"{i:09d}", photos[i % len(photos)], captions[i % len(captions)]


def write_shards(out: Path, n: int, per_shard: int, photos: list[bytes], captions: list[str]) -> list[Path]:
    """``n`` records in webdataset tars of ``per_shard`` records (KEY.jpg + KEY.txt + KEY.json)."""
    from vesl.io.shard_writers import RawSample, write_webdataset

    out.mkdir(parents=True, exist_ok=True)
    records = [RawSample(key, image, caption) for key, image, caption in samples(photos, captions, n)]
    paths = [out / f"{shard:05d}.tar" for shard in range(-(-n // per_shard))]
    for shard, path in enumerate(paths):
        write_webdataset(str(path), records[shard * per_shard : (shard + 1) * per_shard])
    return paths


def warm_page_cache(folder: Path) -> int:
    """Read every file under ``folder`` once, so that the run reads its input from the page cache.
    Why: this VM's kernel reclaims cold pages (DAMON), so an input written or read minutes earlier is
    partly back on disk, and reading it again costs kernel CPU that varies from run to run (a 32,000-
    image run measured 0.55 ms an image of system CPU cold); a worker reading from GCS pays a
    different cost again (network, TLS). Returns the bytes read."""
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                while chunk := f.read(16 << 20):
                    total += len(chunk)
    return total


def run_argv(inputs: Path, output: Path, checkpoint: str, decoder: str) -> list[str]:
    return [
        *("--input", str(inputs), "--output", str(output), "--checkpoint", checkpoint),
        *("--image_size", "64", "--batch_size", "64", "--image_decoder", decoder),
        *("--runner", "FnApiRunner", "--progress", "false"),
    ]


# -- the measured run (a child process) -------------------------------------------------------------
def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _collector_timer(totals: dict[str, float]):
    """A gc callback adding each generation's collections and their CPU seconds to ``totals``."""
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.thread_time()
            return
        generation = f"gen{info['generation']}"
        totals[f"{generation}_collections"] = totals.get(f"{generation}_collections", 0) + 1
        totals[f"{generation}_s"] = round(totals.get(f"{generation}_s", 0.0) + time.thread_time() - started[0], 4)

    return callback


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread still alive, by name (threads that ended are not listed)."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, TypeError, AttributeError):
            continue
        name = thread.name.rstrip("0123456789_-") or thread.name
        out[name] = round(out.get(name, 0.0) + seconds, 3)
    return out


def child(device_cpu_out: str, argv: list[str], stages: bool = False) -> int:
    """Run the command line with the detector's device part timed (see the module docstring), and with
    ``stages`` each stage's exclusive CPU (``bench.stage_timer``)."""
    import torch

    from bench import stage_timer
    from pipelines.vesl import main
    from vesl.models.owlv2 import Owlv2Detector

    torch.set_num_threads(1)
    spent = [0.0]
    collector: dict[str, float] = {}
    if stages:
        stage_timer.install()
        gc.callbacks.append(_collector_timer(collector))

    def timed(method):
        def wrapper(*args, **kwargs):
            start = _process_cpu()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += _process_cpu() - start

        return wrapper

    for name in ("prepare_batch", "forward"):
        method = timed(getattr(Owlv2Detector, name))
        setattr(Owlv2Detector, name, stage_timer.timed(method, "device part") if stages else method)
    try:
        return main(argv)
    finally:
        out = {"device_cpu_s": spent[0]}
        if stages:
            out["stage_cpu_s"] = dict(stage_timer.spent)
            out["collector"] = collector
            out["thread_cpu_s"] = _thread_cpu()
        Path(device_cpu_out).write_text(json.dumps(out))


def phrase_yardstick(captions: list[str], limit: int = 3000) -> float:
    """Captions/s of the ``both`` phrase parse (cache off) on the first ``limit`` captions."""
    from bench.phrases import time_phrases

    sample = captions[:limit]
    seconds, _ = time_phrases("both", sample)
    return round(len(sample) / seconds, 1)


def ms_per_image(seconds: float, images: int) -> float:
    return round(1000 * seconds / images, 3)


def measure(n: int, work: Path, checkpoint: str, args) -> dict:
    photos = [p.read_bytes() for p in sorted(Path(args.photos).glob("*.jpg"))]
    captions = load_captions(Path(args.captions))
    inputs, output = work / f"in-{n}", work / f"out-{n}"
    if not inputs.exists():
        write_shards(inputs, n, args.per_shard, photos, captions)
    # A run over an earlier run's output would resume: every shard committed, nothing measured.
    shutil.rmtree(output, ignore_errors=True)
    if not args.cold:
        warm_page_cache(inputs)
    with tempfile.NamedTemporaryFile(suffix=".json") as rss, tempfile.NamedTemporaryFile(suffix=".json") as dev:
        command = [sys.executable, "-m", "bench.peak_rss", rss.name]
        if args.profile:  # py-spy samples every thread; wait4 then reports py-spy, not the run
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            raw = Path(args.profile) / f"profile-{n}.txt"
            spy = Path(sys.executable).parent / "py-spy"
            command += [str(spy) if spy.exists() else "py-spy", "record", "--format", "raw", "--rate", "50"]
            command += ["--nonblocking", "--output", str(raw), "--"]
        command += [sys.executable, "-m", "bench.scale"]
        command += ["--child", dev.name, *(["--stages"] if args.stages else [])]
        command += ["--", *run_argv(inputs, output, checkpoint, args.decoder), *shlex.split(args.run_args)]
        start = time.perf_counter()
        subprocess.run(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, check=True
        )
        wall = time.perf_counter() - start
        measured = json.loads(Path(rss.name).read_text())
        device = json.loads(Path(dev.name).read_text())
    summary = json.loads((output / "summary.json").read_text())["counts"]
    if not summary["balanced"] or summary["read"] != n:
        raise SystemExit(f"{n} images: counts {summary['read']} read, balanced={summary['balanced']}")
    return {
        "images": n,
        "written": summary["written"],
        "rejected": summary["rejected"],
        "regions": summary["regions"],
        "peak_rss_mb": measured["peak_rss_mb"],
        "cpu_s": round(measured["cpu_s"], 2),
        **{k: round(measured[k], 2) for k in ("user_s", "system_s") if k in measured},
        **{k: measured[k] for k in ("minor_faults", "major_faults", "involuntary_switches") if k in measured},
        "device_cpu_s": round(device["device_cpu_s"], 2),
        "wall_s": round(wall, 1),
        "total_cpu_ms_per_image": round(1000 * measured["cpu_s"] / n, 2),
        **({"stage_cpu_s": {k: round(v, 3) for k, v in device["stage_cpu_s"].items()}} if args.stages else {}),
        **({k: device[k] for k in ("collector", "thread_cpu_s")} if args.stages else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,8000,32000")
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--photos", default=str(DEFAULT_PHOTOS))
    parser.add_argument("--captions", default=str(DEFAULT_CAPTIONS))
    parser.add_argument("--decoder", default="nvimgcodec", choices=["nvimgcodec", "pil"])
    parser.add_argument("--work", default=None, help="folder for shards and outputs (default: a temporary one)")
    parser.add_argument("--stages", action="store_true", help="also each stage's exclusive CPU (bench.stage_timer)")
    parser.add_argument("--cold", action="store_true", help="do not read the input into the page cache first")
    parser.add_argument("--run-args", default="", help="more options for every run, e.g. '--write_tfrecord false'")
    parser.add_argument(
        "--profile",
        default=None,
        help="folder for py-spy's samples of each run (collapsed stacks; a profiled run's CPU and memory figures are py-spy's, not the run's)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        return child(args.child, [a for a in rest if a != "--"], args.stages)
    from vesl.models.tiny import write_tiny_checkpoint

    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = str(write_tiny_checkpoint(work / "tiny-owlv2"))
        rows = []
        yardstick_captions = load_captions(Path(args.captions))
        parsed_per_s = [phrase_yardstick(yardstick_captions)]
        device_ms = None  # the device part's CPU an image over the latest interval (a yardstick too)
        for n in sizes:
            row = measure(n, work, checkpoint, args)
            if rows:
                prev = rows[-1]
                images = n - prev["images"]
                host = (row["cpu_s"] - row["device_cpu_s"]) - (prev["cpu_s"] - prev["device_cpu_s"])
                row["host_cpu_ms_per_image"] = ms_per_image(host, images)
                device_ms = ms_per_image(row["device_cpu_s"] - prev["device_cpu_s"], images)
                if "system_s" in row and "system_s" in prev:  # the kernel's share of the marginal CPU
                    row["system_ms_per_image"] = ms_per_image(row["system_s"] - prev["system_s"], images)
                if args.stages:  # the marginal CPU of each stage, and what no stage claims
                    names = set(row["stage_cpu_s"]) | set(prev["stage_cpu_s"])
                    per = {
                        k: ms_per_image(row["stage_cpu_s"].get(k, 0) - prev["stage_cpu_s"].get(k, 0), images)
                        for k in sorted(names)
                    }
                    per["(not in a stage: Beam, coders, groupings, other threads)"] = round(
                        row["host_cpu_ms_per_image"] - sum(v for k, v in per.items() if k != "device part"), 3
                    )
                    row["host_ms_per_image_by_stage"] = per
            rows.append(row)
            print(json.dumps(row), flush=True)
        print(
            json.dumps(
                {
                    "benchmark": "scale",
                    "date": date.today().isoformat(),
                    "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                    "decoder": args.decoder,
                    "peak_rss_ratio_largest_to_smallest": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3),
                    "sizes": sizes,
                    "input_in_page_cache": not args.cold,
                    "yardstick": {
                        # before and after the runs: a VM that changed speed meanwhile shows here
                        "phrases_both_captions_per_s": [*parsed_per_s, phrase_yardstick(yardstick_captions)],
                        **({"device_part_ms_per_image": device_ms} if device_ms is not None else {}),
                    },
                    **({"run_args": args.run_args} if args.run_args else {}),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
