"""Hostile input, crashes and concurrent runs, as a new user would meet them: every case runs the real
command line (``python -m pipelines.vesl``, FnApiRunner) in its own process, and the outcome is
checked against what VESL promises: the run ends (exit 0, or a one-line error with exit 2 where the
input or output is unusable), the counts balance, each bad record is rejected with its reason, and
peak memory stays under 1 GB. Prints one JSON object (``--markdown``: the table of
docs/reliability.md).

    python -m bench.hostile_inputs [--checkpoint DIR] [--only NAME,...] [--markdown]

Without --checkpoint a tiny random-weight OWLv2 is written to a temporary folder (the detector's
weights do not matter here: what is measured is reading, accounting and memory). Peak memory is
the ru_maxrss of the run's process (os.wait4), so it includes Python, torch, spaCy and the model
(about 0.7 GB for a one-image run on this machine).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "fixtures" / "photos"
GIB = 1 << 30
MEMORY_LIMIT_MB = 1000


def image() -> bytes:
    return (PHOTOS / "rocket.jpg").read_bytes()


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes | None = None, size: int | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else size
    if data is not None:
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info, Zeros(size))


class Zeros(io.RawIOBase):
    """``size`` zero bytes on demand: a huge member without the memory or disk for it."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def good_tar(path: Path, prefix: str, n: int = 2) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            add_member(tar, f"{prefix}{i}.jpg", image())
            add_member(tar, f"{prefix}{i}.txt", b"a red rocket on a launch pad")


def sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def manifest(path: Path, lines: list) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


# ---- the cases: each writes its input into a folder and may add options -------------------------


def tar_gz_1gib_member(d: Path) -> list[str]:
    with gzip.open(d / "bomb.tar.gz", "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        add_member(tar, "ok.jpg", image())
        add_member(tar, "ok.txt", b"a rocket")
        add_member(tar, "huge.jpg", size=GIB)
        add_member(tar, "huge.txt", b"a gigabyte of zeros")
    return []


def tar_1gib_caption(d: Path) -> list[str]:
    with gzip.open(d / "caption.tar.gz", "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        add_member(tar, "long.jpg", image())
        add_member(tar, "long.txt", size=GIB)
        add_member(tar, "ok.jpg", image())
        add_member(tar, "ok.txt", b"a rocket")
    return []


def manifest_1gib_image(d: Path) -> list[str]:
    sparse(d / "huge.jpg", GIB)
    (d / "ok.jpg").write_bytes(image())
    manifest(
        d / "m.jsonl",
        [
            {"key": "huge", "image": "huge.jpg", "caption": "big"},
            {"key": "ok", "image": "ok.jpg", "caption": "a rocket"},
        ],
    )
    return []


def manifest_1gib_line(d: Path) -> list[str]:
    (d / "ok.jpg").write_bytes(image())
    path = d / "m.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"key": "huge", "image": "ok.jpg", "caption": "')
        f.truncate(f.tell() + GIB)  # a 1 GiB caption of NUL bytes, without the disk for it
        f.seek(0, 2)
        f.write(b'"}\n' + json.dumps({"key": "ok", "image": "ok.jpg", "caption": "a rocket"}).encode() + b"\n")
    return []


def files_1gib_image(d: Path) -> list[str]:
    folder = d / "00000"
    folder.mkdir()
    sparse(folder / "huge.jpg", GIB)
    (folder / "huge.txt").write_text("big")
    (folder / "ok.jpg").write_bytes(image())
    (folder / "ok.txt").write_text("a rocket")
    stats = {"count": 2, "successes": 2, "failed_to_download": 0, "failed_to_resize": 0}
    (d / "00000_stats.json").write_text(json.dumps(stats))  # as img2dataset writes beside its folders
    return []


def tfrecord_1gib_record(d: Path) -> list[str]:
    from vesl.io.tfexample import encode_example
    from vesl.io.tfrecord import frame_record, masked_crc32c

    ok = encode_example({"key": ("bytes", [b"ok"]), "jpg": ("bytes", [image()]), "txt": ("bytes", [b"a rocket"])})
    header = struct.pack("<Q", GIB)
    path = d / "big.tfrecord"
    with open(path, "wb") as f:
        f.write(frame_record(ok) + header + struct.pack("<I", masked_crc32c(header)))
    with open(path, "r+b") as f:  # the 1 GiB body: sparse zeros, then its (wrong) CRC
        f.truncate(path.stat().st_size + GIB + 4)
    return []


def parquet_huge_row_group(d: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("key", pa.string()), ("caption", pa.string()), ("jpg", pa.binary())])
    with pq.ParquetWriter(d / "p.parquet", schema, compression="zstd") as writer:
        writer.write_table(pa.table({"key": ["ok"], "caption": ["a rocket"], "jpg": [image()]}, schema))
        big = {"key": ["huge", "beside"], "caption": ["x" * (300 << 20), "a rocket"], "jpg": [image(), image()]}
        writer.write_table(pa.table(big, schema))
    return []


def parquet_wrong_types(d: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad_utf8 = pa.array([b"a red rocket", b"a tall rocket", b"a \xff rocket"], pa.binary()).view(pa.string())
    table = {
        "key": [1.0, float("nan"), 3.0],
        "caption": bad_utf8,
        "url": [12.0, float("nan"), None],
        "jpg": [image()] * 3,
    }
    pq.write_table(pa.table(table), d / "floats.parquet")
    pq.write_table(pa.table({"key": ["i1", "i2"], "caption": [1, 2], "jpg": [image()] * 2}), d / "ints.parquet")
    pq.write_table(pa.table({"key": ["l1"], "caption": [["a", "list"]], "jpg": [image()]}), d / "lists.parquet")
    return []


def manifest_wrong_types(d: Path) -> list[str]:
    (d / "ok.jpg").write_bytes(image())
    manifest(
        d / "m.jsonl",
        [
            {"key": "url-number", "image": "ok.jpg", "caption": "a rocket", "url": 12345},
            {"key": "m-\udcffsur", "image": "ok.jpg", "caption": "a rocket"},
            {"key": "cap-surrogate", "image": "ok.jpg", "caption": "a \ud800 rocket"},
            {"key": "cap-list", "image": "ok.jpg", "caption": ["a", "rocket"]},
            {"key": 7, "image": "ok.jpg", "caption": "an integer key"},
            "{not json",
            "[1, 2, 3]",
            "42",
            {"key": "no-image", "caption": "nothing to show"},
            {"key": "gone", "image": "missing.jpg", "caption": "a file that is not there"},
        ],
    )
    return []


def manifest_text_file(d: Path) -> list[str]:
    secret = d / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (d / "ok.jpg").write_bytes(image())
    (d / "page.jpg").write_text("<!doctype html><html><body>404</body></html>")
    manifest(
        d / "m.jsonl",
        [
            {"key": "passwd", "image": str(secret), "caption": "a secret"},
            {"key": "html", "image": "page.jpg", "caption": "an error page"},
            {"key": "ok", "image": "ok.jpg", "caption": "a rocket"},
        ],
    )
    return []


def broken_images(d: Path) -> list[str]:
    jpeg = image()
    with tarfile.open(d / "images.tar", "w") as tar:
        for key, blob in (
            ("empty", b""),
            ("truncated", jpeg[: len(jpeg) // 2]),
            ("random", os.urandom(5000)),
            ("ok", jpeg),
        ):
            add_member(tar, f"{key}.jpg", blob)
            add_member(tar, f"{key}.txt", b"a rocket")
    return []


def pixel_bomb(d: Path) -> list[str]:
    import zlib

    width = height = 100_000  # 10 gigapixels, a few KB compressed
    raw = zlib.compress(b"\x00" * (width // 8 + 1) * 64)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    bomb += chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    with tarfile.open(d / "bomb.tar", "w") as tar:
        add_member(tar, "bomb.png", bomb)
        add_member(tar, "bomb.txt", b"a decompression bomb")
        add_member(tar, "ok.jpg", image())
        add_member(tar, "ok.txt", b"a rocket")
    return []


def ambiguous_image(d: Path) -> list[str]:
    with tarfile.open(d / "two.tar", "w") as tar:
        add_member(tar, "k.jpg", b"\xff\xd8 corrupt jpeg")
        add_member(tar, "k.png", png())
        add_member(tar, "k.txt", b"a red square")
        add_member(tar, "ok.jpg", image())
        add_member(tar, "ok.txt", b"a rocket")
    return []


def bad_captions(d: Path) -> list[str]:
    with tarfile.open(d / "captions.tar", "w") as tar:
        for key, caption in (
            ("empty", b""),
            ("blank", b"   \n\t "),
            ("latin1", "une fus\u00e9e".encode("latin-1")),
            ("long", b"rocket " * 5000),
            ("nul", b"a \x00 rocket"),
            ("ok", b"a rocket"),
        ):
            add_member(tar, f"{key}.jpg", image())
            add_member(tar, f"{key}.txt", caption)
        add_member(tar, "nocaption.jpg", image())
    return []


def damaged_shards(d: Path) -> list[str]:
    good_tar(d / "good.tar", "g")
    (d / "zero.tar").write_bytes(b"")
    (d / "random.tar").write_bytes(os.urandom(10_000))
    full = d / "cut.tar"
    good_tar(full, "c", n=3)
    full.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    (d / "notgzip.tar.gz").write_bytes(b"plain text, not gzip" * 100)
    (d / "bad.parquet").write_bytes(b"PAR1" + os.urandom(1000) + b"PAR1")
    return []


def damaged_tar_header(d: Path) -> list[str]:
    path = d / "damaged.tar"
    good_tar(path, "h", n=4)
    with tarfile.open(path) as tar:
        fifth = tar.getmembers()[4]  # h2.jpg: its header is damaged, so h1 may be missing a member
    data = bytearray(path.read_bytes())
    data[fifth.offset + 1] ^= 0xFF
    path.write_bytes(bytes(data))
    return []


def tfrecord_bad_crc(d: Path) -> list[str]:
    from vesl.io.tfexample import encode_example
    from vesl.io.tfrecord import frame_record

    def record(key: bytes) -> bytes:
        example = {"key": ("bytes", [key]), "jpg": ("bytes", [image()]), "txt": ("bytes", [b"a rocket"])}
        return frame_record(encode_example(example))

    damaged = bytearray(record(b"bad"))
    damaged[-1] ^= 0xFF  # the data CRC: the frame stays sound
    (d / "crc.tfrecord").write_bytes(record(b"ok") + bytes(damaged) + record(b"after"))
    (d / "notexample.tfrecord").write_bytes(frame_record(b"\xff\xff not a protobuf"))
    return []


def duplicate_keys(d: Path) -> list[str]:
    good_tar(d / "a.tar", "same")
    good_tar(d / "b.tar", "same")
    return []


def odd_names(d: Path) -> list[str]:
    with tarfile.open(d / "names.tar", "w", encoding="utf-8", errors="surrogateescape") as tar:
        for name in ("new\nline", "t-\udcff", "../../etc/escape", "sub/dir/deep", "spa ce"):
            add_member(tar, f"{name}.jpg", image())
            add_member(tar, f"{name}.txt", b"a rocket")
    return []


def symlink_loop(d: Path) -> list[str]:
    nested = d / "nested"
    nested.mkdir()
    good_tar(nested / "a.tar", "s")
    os.symlink("..", nested / "loop")
    return []


def output_is_a_file(d: Path) -> list[str]:
    good_tar(d / "a.tar", "o")
    (d.parent / "output-file").write_text("a file where the output folder should be")
    return ["--output", str(d.parent / "output-file")]


def output_not_writable(d: Path) -> list[str]:
    good_tar(d / "a.tar", "w")
    return ["--output", "/proc/vesl-cannot-write-here"]


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[Path], list[str]]
    exit_code: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # stage:reason -> count that must appear
    written: int | None = None


CASES = [
    Case(
        "tar_gz_1gib_member",
        "1 MiB .tar.gz whose member inflates to 1 GiB",
        tar_gz_1gib_member,
        reasons={"read:image_too_large": 1},
        written=1,
    ),
    Case(
        "tar_1gib_caption",
        "tar member caption of 1 GiB",
        tar_1gib_caption,
        reasons={"read:caption_too_long": 1},
        written=1,
    ),
    Case(
        "manifest_1gib_image",
        "manifest entry pointing at a 1 GiB file",
        manifest_1gib_image,
        reasons={"read:image_too_large": 1},
        written=1,
    ),
    Case(
        "manifest_1gib_line",
        "manifest line of 1 GiB (its caption)",
        manifest_1gib_line,
        reasons={"read:bad_manifest_line": 1},
        written=1,
    ),
    Case(
        "files_1gib_image",
        "img2dataset files folder with a 1 GiB image",
        files_1gib_image,
        reasons={"read:image_too_large": 1},
        written=1,
    ),
    Case(
        "tfrecord_1gib_record",
        "TFRecord whose length field says 1 GiB",
        tfrecord_1gib_record,
        reasons={"read:image_too_large": 1},
        written=1,
    ),
    Case(
        "parquet_huge_row_group",
        "Parquet row group of 300 MiB (one 300 MiB caption)",
        parquet_huge_row_group,
        reasons={"read:row_group_too_large": 2},
        written=1,
    ),
    Case(
        "parquet_wrong_types",
        "float/NaN keys and URLs, int and list captions, invalid UTF-8",
        parquet_wrong_types,
        reasons={"read:missing_key": 1, "read:caption_not_utf8": 1, "read:caption_not_text": 3},
        written=1,
    ),
    Case(
        "manifest_wrong_types",
        "numbers, lists, surrogates, broken JSON lines in a manifest",
        manifest_wrong_types,
        reasons={
            "read:bad_key": 1,
            "read:caption_not_text": 1,
            "read:caption_not_utf8": 1,
            "read:bad_manifest_line": 4,
            "read:image_not_found": 1,
        },
        written=2,
    ),
    Case(
        "manifest_text_file",
        "manifest images that are /etc/passwd-like text and HTML",
        manifest_text_file,
        reasons={"decode:not_an_image": 2},
        written=1,
    ),
    Case(
        "broken_images",
        "empty, truncated and random-byte images",
        broken_images,
        reasons={"decode:empty_image": 1, "decode:corrupt_image": 1, "decode:not_an_image": 1},
        written=1,
    ),
    Case(
        "pixel_bomb",
        "PNG header claiming 100,000 x 100,000 pixels",
        pixel_bomb,
        reasons={"decode:too_many_pixels": 1},
        written=1,
    ),
    Case(
        "ambiguous_image",
        "KEY.jpg (corrupt) beside KEY.png (valid)",
        ambiguous_image,
        reasons={"read:ambiguous_image": 1},
        written=1,
    ),
    Case(
        "bad_captions",
        "empty, blank, Latin-1, 35 KB, NUL and missing captions",
        bad_captions,
        reasons={
            "read:empty_caption": 2,
            "read:caption_not_utf8": 1,
            "read:caption_too_long": 1,
            "read:missing_caption": 1,
        },
    ),
    Case(
        "damaged_shards",
        "zero-byte, random, cut-in-half tar; fake gzip; random Parquet",
        damaged_shards,
        reasons={"read:unreadable_shard": 4},
    ),
    Case(
        "damaged_tar_header",
        "a tar whose fifth member header is damaged (tarfile would end there silently)",
        damaged_tar_header,
        reasons={"read:truncated_shard": 1},
        written=1,
    ),
    Case(
        "tfrecord_bad_crc",
        "TFRecord with a bad data CRC mid-file; a record that is no Example",
        tfrecord_bad_crc,
        reasons={"read:unreadable_record": 2},
        written=2,
    ),
    Case(
        "duplicate_keys", "the same keys in two shards", duplicate_keys, reasons={"dedup:duplicate_key": 2}, written=2
    ),
    Case("odd_names", "member names with a newline, bad UTF-8, ../, folders, spaces", odd_names),
    Case("symlink_loop", "an input folder with a symlink to its parent", symlink_loop, written=2),
    Case("output_is_a_file", "--output names a file", output_is_a_file, exit_code=2),
    Case("output_not_writable", "--output cannot be written", output_not_writable, exit_code=2),
]


def run_cli(argv: list[str], env: dict | None = None) -> dict:
    """One run of the command line in its own process: exit code, peak RSS (``bench.peak_rss``: the
    run's own, not this process's), last stderr line, time."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err, tempfile.NamedTemporaryFile(suffix=".json") as measured:
        command = [sys.executable, "-m", "bench.peak_rss", measured.name, sys.executable, "-m", "pipelines.vesl"]
        subprocess.run(
            [*command, *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            check=False,
        )
        err.seek(0)
        lines = [line for line in err.read().splitlines() if line.strip()]
        result = json.loads(Path(measured.name).read_text())
    return {
        **result,
        "seconds": round(time.perf_counter() - start, 1),
        "last_stderr": lines[-1][:300] if lines else "",
    }


def base_argv(inputs: Path, output: Path, checkpoint: str, threshold: str = "0") -> list[str]:
    return [
        *("--input", str(inputs), "--output", str(output), "--checkpoint", checkpoint),
        *("--image_size", "64", "--max_candidates", "3", "--score_threshold", threshold),
        *("--runner", "FnApiRunner", "--progress", "false", "--allow_empty", "true"),
    ]


def summary_of(output: Path) -> dict | None:
    """The run's summary.json, or None where the run wrote none."""
    path = output / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def reasons_of(summary: dict) -> dict[str, int]:
    return {
        f"{stage}:{reason}": n
        for stage, found in summary["counts"]["rejected_by_stage"].items()
        for reason, n in found.items()
    }


def _build(name: str, inputs: str) -> list[str]:
    return next(c for c in CASES if c.name == name).build(Path(inputs))


def build_in_fresh_process(case: Case, inputs: Path) -> list[str]:
    """Inputs are written by a spawned process: a forked run would inherit this process's peak RSS
    (Linux keeps the high-water mark across exec), and writing a 300 MiB caption takes memory."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_build, case.name, str(inputs)).result()


def run_case(case: Case, work: Path, checkpoint: str) -> dict:
    inputs, output = work / case.name / "in", work / case.name / "out"
    inputs.mkdir(parents=True)
    extra = build_in_fresh_process(case, inputs)
    outcome = {"case": case.name, "what": case.what, **run_cli(base_argv(inputs, output, checkpoint) + extra)}
    problems = []
    if outcome["exit"] != case.exit_code:
        problems.append(f"exit {outcome['exit']}, expected {case.exit_code}")
    if case.exit_code == 0:
        summary = summary_of(output)
        if summary is not None:
            counts = summary["counts"]
            outcome.update(read=counts["read"], written=counts["written"], rejected=counts["rejected"])
            outcome.update(balanced=counts["balanced"], reasons=reasons_of(summary))
            if not counts["balanced"]:
                problems.append("counts do not balance")
            for reason, n in case.reasons.items():
                if outcome["reasons"].get(reason, 0) != n:
                    problems.append(f"{reason}: {outcome['reasons'].get(reason, 0)}, expected {n}")
            if case.written is not None and counts["written"] != case.written:
                problems.append(f"written {counts['written']}, expected {case.written}")
            rejects = [line for f in (output / "rejects").glob("*.jsonl") for line in f.read_text().splitlines()]
            if any("root:x:0:0" in line or "doctype" in line for line in rejects):
                problems.append("a reject detail quotes the file's content")
        else:
            problems.append("no summary.json")
    elif "\n" in outcome["last_stderr"] or not outcome["last_stderr"].startswith("vesl: error: "):
        problems.append("not a one-line error")
    if outcome["peak_rss_mb"] > MEMORY_LIMIT_MB:
        problems.append(f"peak RSS {outcome['peak_rss_mb']} MB > {MEMORY_LIMIT_MB} MB")
    outcome["ok"], outcome["problems"] = not problems, problems
    return outcome


def concurrent_cases(work: Path, checkpoint: str) -> list[dict]:
    """A live run and a second one; a killed run and its rerun; another configuration on another input."""
    results = []
    inputs = work / "concurrent" / "in"
    inputs.mkdir(parents=True)
    for shard in range(3):
        good_tar(inputs / f"part-{shard}.tar", f"p{shard}-")
    out = work / "concurrent" / "out"
    argv = base_argv(inputs, out, checkpoint)
    first = subprocess.Popen(
        [sys.executable, "-m", "pipelines.vesl", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "VESL_TEST_COMMIT_DELAY_S": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (out / "_lease.json").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = run_cli(base_argv(inputs, out, checkpoint, threshold="0.5"))
    first.wait(600)
    digests = {json.loads(p.read_text())["provenance"]["config_digest"] for p in (out / "stats").glob("*.json")}
    ok = (
        second["exit"] == 2 and "in use by run" in second["last_stderr"] and first.returncode == 0 and len(digests) == 1
    )
    results.append(
        {
            "case": "second_live_run",
            "what": "a run with other options into a folder a live run owns",
            **second,
            "ok": ok,
            "problems": [] if ok else ["second run not refused, or the folder mixes configurations"],
        }
    )
    killed_out = work / "concurrent" / "killed"
    killed = subprocess.Popen(
        [sys.executable, "-m", "pipelines.vesl", *base_argv(inputs, killed_out, checkpoint)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "VESL_TEST_COMMIT_DELAY_S": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not list((killed_out / "stats").glob("*.json")) and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(30)
    rerun = run_cli(base_argv(inputs, killed_out, checkpoint))
    summary = summary_of(killed_out)
    ok = (
        rerun["exit"] == 0
        and summary is not None
        and summary["counts"]["written"] == 6
        and summary["counts"]["balanced"]
    )
    ok = ok and not (killed_out / "_lease.json").exists() and not (killed_out / "_temporary").exists()
    results.append(
        {
            "case": "killed_then_rerun",
            "what": "SIGKILL mid-commit, then the same command (stale lease taken over)",
            **rerun,
            "ok": ok,
            "problems": [] if ok else ["rerun did not complete the folder cleanly"],
        }
    )
    other_in = work / "concurrent" / "other-in"
    other_in.mkdir()
    good_tar(other_in / "other.tar", "x")
    mixed = run_cli(base_argv(other_in, out, checkpoint, threshold="0.5"))
    ok = mixed["exit"] == 2 and "another configuration" in mixed["last_stderr"]
    results.append(
        {
            "case": "other_config_other_input",
            "what": "other options on another input into a used folder",
            **mixed,
            "ok": ok,
            "problems": [] if ok else ["accepted: the folder would mix configurations"],
        }
    )
    return results


# -- faults a long run meets: a changed input, signals, write failures (``bench.faults``) ----------------
def fault_cases(work: Path, checkpoint: str) -> list[dict]:
    """Each case starts a real run on three small shards (commits slowed to one a second), injects its fault
    once the first shard is committed, checks the one line, the exit status and what is left in the output,
    then reruns the same command and checks it completes the folder."""
    from bench import faults

    inputs = work / "faults" / "in"
    inputs.mkdir(parents=True)
    for shard in range(3):
        good_tar(inputs / f"part-{shard}.tar", f"p{shard}-")
    results = [changed_input_case(work / "faults", inputs, checkpoint)]
    quick = ("--progress", "false")
    in_process = ("--runner", "FnApiRunner", *quick)
    workers = ("--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    workers += quick

    def signal_group(signum):
        return lambda process, out: os.killpg(process.pid, signum)

    results.append(
        fault_case(
            "sigint_in_process",
            "Ctrl-C (SIGINT to the process group), in-process runner",
            work,
            inputs,
            checkpoint,
            in_process,
            signal_group(signal.SIGINT),
            130,
            "vesl: interrupted by SIGINT: ",
        )
    )
    results.append(
        fault_case(
            "sigterm_worker_processes",
            "SIGTERM to the launcher, DirectRunner with 2 worker processes",
            work,
            inputs,
            checkpoint,
            workers,
            lambda process, out: os.kill(process.pid, signal.SIGTERM),
            143,
            "vesl: interrupted by SIGTERM: ",
        )
    )
    with faults.mounted_tmpfs() as disk:
        if disk is not None:
            fillers = []
            results.append(
                fault_case(
                    "full_disk",
                    "the output's disk (a tmpfs) fills up after the first commit",
                    disk,
                    inputs,
                    checkpoint,
                    in_process,
                    lambda process, out: fillers.append(faults.fill(disk)),
                    1,
                    "[Errno 28] No space left on device: '",
                    fix=lambda: fillers[0].unlink(),
                )
            )
            results.append(
                fault_case(
                    "read_only_disk",
                    "the output's disk (a tmpfs) turns read-only after the first commit",
                    disk,
                    inputs,
                    checkpoint,
                    in_process,
                    lambda process, out: faults.remount(disk, "ro"),
                    1,
                    "[Errno 30] Read-only file system: '",
                    fix=lambda: faults.remount(disk, "rw"),
                    cleans_up=False,
                )
            )
        else:
            results.append(
                fault_case(
                    "file_size_limit",
                    "no byte more may be written (RLIMIT_FSIZE 0; no tmpfs here)",
                    work,
                    inputs,
                    checkpoint,
                    in_process,
                    lambda process, out: faults.limit_file_size(process),
                    1,
                    "[Errno 27] File too large: '",
                )
            )
    prefix = faults.without_permission_override()
    if prefix is not None:
        results.append(
            fault_case(
                "permission_refused",
                "the stats folder turns read-only for the run (chmod 555)",
                work,
                inputs,
                checkpoint,
                in_process,
                lambda process, out: (out / "stats").chmod(0o555),
                1,
                "[Errno 13] Permission denied: '",
                prefix=prefix,
                fix=lambda: (work / "permission_refused" / "stats").chmod(0o755),
            )
        )
    return results


def fault_case(
    name, what, parent, inputs, checkpoint, runner, inject, status, said, prefix=(), fix=None, cleans_up=True
) -> dict:
    from bench import faults

    out = parent / name
    argv = ["--input", str(inputs), "--output", str(out), "--checkpoint", checkpoint, "--image_size", "64"]
    argv += ["--max_candidates", "3", "--score_threshold", "0", *runner]
    command = [*prefix, sys.executable, "-m", "pipelines.vesl", *argv]
    exit_status, lines, _ = faults.run_into_a_fault(command, out, lambda process: inject(process, out))
    problems = [] if exit_status == status else [f"exit {exit_status}, expected {status}"]
    if len(lines) != 1 or said not in lines[0]:
        problems.append("not one line saying " + repr(said))
    left = faults.uncommitted_leftovers(out) if cleans_up else []
    if left:
        problems.append("left: " + ", ".join(left[:3]))
    if fix:
        fix()
    rerun = run_cli([*argv[: -len(runner)], "--runner", "FnApiRunner", "--progress", "false"])
    summary = summary_of(out)
    if rerun["exit"] != 0 or summary is None or summary["counts"]["written"] != 6 or faults.uncommitted_leftovers(out):
        problems.append(f"the rerun did not complete the folder (exit {rerun['exit']}: {rerun['last_stderr']})")
    return {
        "case": name,
        "what": what,
        "exit": exit_status,
        "last_stderr": lines[-1] if lines else "",
        "peak_rss_mb": None,
        "ok": not problems,
        "problems": problems,
    }


def changed_input_case(parent: Path, inputs: Path, checkpoint: str) -> dict:
    """An input shard rewritten after its shard was committed (as an img2dataset rerun does): redone."""
    import pyarrow.parquet as pq

    changed = parent / "changed-in"
    shutil.copytree(inputs, changed)
    out = parent / "changed"
    argv = base_argv(changed, out, checkpoint)
    first = run_cli(argv)
    good_tar(changed / "part-1.tar", "q1-", n=3)  # other images and captions under the same name
    rerun = run_cli(argv)
    summary = summary_of(out) or {}
    keys = {
        row["key"] for f in (out / "parquet").glob("*.parquet") for row in pq.read_table(f, columns=["key"]).to_pylist()
    }
    ok = first["exit"] == 0 and rerun["exit"] == 0 and summary.get("counts", {}).get("written") == 7
    ok = ok and {k for k in keys if k.startswith("q1-")} and not {k for k in keys if k.startswith("p1-")}
    return {
        "case": "changed_input_rerun",
        "what": "an input shard rewritten after its commit, then the same command",
        **rerun,
        "ok": bool(ok),
        "problems": [] if ok else ["the rewritten shard was not redone"],
    }


def markdown(report: dict) -> str:
    lines = [
        f"Measured {report['date']} on {report['machine']} with `python -m bench.hostile_inputs` "
        f"({report['passed']} of {report['cases']} cases as promised).",
        "",
        "| case | input | exit | read = written + rejected | reasons | peak RSS | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        counts = f"{r['read']} = {r['written']} + {r['rejected']}" if "read" in r else r["last_stderr"][:90]
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.get("reasons", {}).items()))
        ok = "yes" if r["ok"] else "NO: " + "; ".join(r["problems"])
        rss = f"{r['peak_rss_mb']} MB" if r.get("peak_rss_mb") is not None else "-"
        lines.append(f"| {r['case']} | {r['what']} | {r['exit']} | {counts} | {reasons} | {rss} | {ok} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument(
        "--only", default="", help="comma-separated case names (concurrent, faults: those groups of cases)"
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    with tempfile.TemporaryDirectory(prefix="vesl-hostile-") as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from vesl.models.tiny import write_tiny_checkpoint

            checkpoint = str(write_tiny_checkpoint(work / "tiny", seed=0, image_size=64))
        results = [run_case(c, work, checkpoint) for c in CASES if not only or c.name in only]
        if not only or "concurrent" in only:
            results += concurrent_cases(work, checkpoint)
        if not only or "faults" in only:
            results += fault_cases(work, checkpoint)
    report = {
        "benchmark": "hostile_inputs",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "cases": len(results),
        "passed": sum(r["ok"] for r in results),
        "results": results,
    }
    print(markdown(report) if args.markdown else json.dumps(report, indent=2))
    return 0 if report["passed"] == report["cases"] else 1


if __name__ == "__main__":
    sys.exit(main())
