"""A visual QA report of a VESL output folder: one self-contained HTML file.

    python -m vesl.report OUTPUT_DIR [--images 24] [--seed 0] [--out OUTPUT_DIR/report.html]

Plots (inline SVG): regions per image, region scores, words per phrase, top phrases, rejects by reason.
Gallery: sampled images with their boxes and phrases drawn (needs image bytes in the output:
``--write_image_bytes true``). Look at it before spending GPU-days training on the output.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


def svg_bars(
    title: str, labels: Sequence[str], values: Sequence[float], width: int = 460, horizontal: bool = False
) -> str:
    """A small bar chart as inline SVG."""
    esc = html.escape
    if not values:
        return f'<figure><figcaption>{esc(title)}</figcaption><p class="empty">no data</p></figure>'
    top = max(values) or 1
    if horizontal:
        row, label_w = 18, 170
        height = row * len(values) + 10
        bars = "".join(
            f'<text x="{label_w - 6}" y="{i * row + 13}" text-anchor="end">{esc(str(lab))[:28]}</text>'
            f'<rect x="{label_w}" y="{i * row + 2}" width="{(width - label_w - 50) * v / top:.1f}" height="{row - 5}"/>'
            f'<text x="{label_w + (width - label_w - 50) * v / top + 4:.1f}" y="{i * row + 13}">{v:g}</text>'
            for i, (lab, v) in enumerate(zip(labels, values))
        )
    else:
        height, base = 180, 150
        slot = (width - 20) / len(values)
        bars = "".join(
            f'<rect x="{10 + i * slot + 1:.1f}" y="{base - 130 * v / top:.1f}" width="{max(1.0, slot - 2):.1f}" '
            f'height="{130 * v / top:.1f}"><title>{esc(str(lab))}: {v:g}</title></rect>'
            + (
                f'<text x="{10 + i * slot + slot / 2:.1f}" y="{base + 14}" text-anchor="middle">{esc(str(lab))}</text>'
                if len(values) <= 12 or i % max(1, len(values) // 10) == 0
                else ""
            )
            for i, (lab, v) in enumerate(zip(labels, values))
        )
    return (
        f'<figure><figcaption>{esc(title)}</figcaption><svg width="{width}" height="{height}" '
        f'class="chart" role="img" aria-label="{esc(title)}">{bars}</svg></figure>'
    )


def histogram(values: Sequence[float], bins: int, low: float, high: float) -> tuple[list[str], list[int]]:
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - low) / (high - low) * bins)))] += 1
    return [f"{low + (high - low) * i / bins:.2g}" for i in range(bins)], counts


def draw_regions(image_bytes: bytes, regions: Sequence[dict], max_side: int = 360) -> str:
    """The image with its boxes and phrases drawn, as a data: URL (JPEG)."""
    from PIL import ImageDraw

    from vesl.vision.decode import decode_image

    image = decode_image(image_bytes, 89_478_485).image
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    draw = ImageDraw.Draw(image)
    w, h = image.size
    for i, region in enumerate(regions):
        x0, y0, x1, y1 = region["box"]
        color = PALETTE[i % len(PALETTE)]
        draw.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=color, width=2)
        draw.text((x0 * w + 3, y0 * h + 2), f"{region['phrase']} {region['score']:.2f}", fill=color)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def read_output(output_dir: str) -> tuple[dict, list[dict], list[dict]]:
    import fsspec
    import pyarrow.parquet as pq

    from vesl.training.torch_dataset import expand_sources

    root = output_dir.rstrip("/")
    with fsspec.open(f"{root}/summary.json", "r") as f:
        summary = json.load(f)
    rows = []
    for path in expand_sources(f"{root}/parquet/*.parquet"):
        with fsspec.open(path, "rb") as f:
            rows += pq.read_table(f).to_pylist()
    fs, rejects_root = fsspec.core.url_to_fs(f"{root}/rejects")
    rejects = []
    for path in sorted(fs.glob(rejects_root + "/*.jsonl")):
        with fs.open(path, "r") as f:
            rejects += [json.loads(line) for line in f if line.strip()]
    return summary, rows, rejects


def build_report(output_dir: str, n_images: int = 24, seed: int = 0) -> str:
    esc = html.escape
    summary, rows, rejects = read_output(output_dir)
    counts = summary["counts"]
    regions = [r for row in rows for r in row["regions"]]
    per_image = Counter(min(len(row["regions"]), 30) for row in rows)
    scores_labels, scores = histogram([r["score"] for r in regions], 20, 0.0, 1.0)
    words = Counter(min(len(r["phrase"].split()), 8) for r in regions)
    top = Counter(r["phrase"].lower() for r in regions).most_common(20)
    reasons = Counter(f"{r['stage']}: {r['reason']}" for r in rejects).most_common()
    charts = [
        svg_bars(
            "Regions per image (30 = 30 or more)", [str(k) for k in range(31)], [per_image.get(k, 0) for k in range(31)]
        ),
        svg_bars("Region scores", scores_labels, scores),
        svg_bars(
            "Words per phrase (of regions; 8 = 8 or more)",
            [str(k) for k in range(1, 9)],
            [words.get(k, 0) for k in range(1, 9)],
        ),
        svg_bars("Top phrases (regions)", [p for p, _ in top], [n for _, n in top], horizontal=True),
        svg_bars("Rejects by stage and reason", [r for r, _ in reasons], [n for _, n in reasons], horizontal=True),
    ]
    with_images = [row for row in rows if row.get("image")]
    rng = random.Random(seed)
    sample = rng.sample(with_images, min(n_images, len(with_images)))
    if sample:
        cards = "".join(
            f'<div class="card"><img src="{draw_regions(row["image"], row["regions"][:12])}" alt="{esc(row["key"])}">'
            f"<p><b>{esc(row['key'])}</b> {row['width']}x{row['height']}, {len(row['regions'])} regions"
            f'{" (12 drawn)" if len(row["regions"]) > 12 else ""}</p><p class="caption">{esc(row["caption"])}</p></div>'
            for row in sample
        )
    else:
        cards = (
            '<p class="empty">This output holds no image bytes: run VESL with --write_image_bytes true '
            "to see images here.</p>"
        )
    provenance = summary.get("provenance", {})
    facts = [
        ("images written", counts["written"]),
        ("rejected", counts["rejected"]),
        ("read", counts["read"]),
        ("balanced", counts["balanced"]),
        ("regions per image", counts["regions_per_image"]),
        ("phrases per image", counts["phrases_per_image"]),
        ("detector", provenance.get("detector")),
        ("weights", provenance.get("weights")),
        ("preset", provenance.get("preset")),
        ("schema", summary.get("schema_version")),
    ]
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    warning = (
        '<p class="warn">These regions come from a detector with RANDOM WEIGHTS: the boxes mean nothing.</p>'
        if provenance.get("weights") == "random weights"
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>VESL report: {esc(output_dir)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 16px; }} th, td {{ text-align: left; padding: 2px 10px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 18px; }} figure {{ margin: 0; }}
figcaption {{ font-weight: 600; margin-bottom: 4px; }}
.chart rect {{ fill: #4363d8; }} .chart text {{ font-size: 10px; fill: #333; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 14px; }}
.card {{ width: 360px; }} .card img {{ max-width: 360px; display: block; }}
.card p {{ margin: 3px 0; font-size: 12px; }} .caption {{ color: #555; }}
.warn {{ background: #fff3cd; padding: 6px 10px; border: 1px solid #e0c36a; }} .empty {{ color: #777; }}
</style></head><body>
<h1>VESL report</h1><p>{esc(output_dir)}</p>{warning}
<table>{table}</table>
<h2>Distributions</h2><div class="charts">{"".join(charts)}</div>
<h2>Gallery ({len(sample)} sampled images)</h2><div class="gallery">{cards}</div>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    out = args.out or args.output_dir.rstrip("/") + "/report.html"
    document = build_report(args.output_dir, args.images, args.seed)
    import fsspec

    with fsspec.open(out, "w", encoding="utf-8") as f:
        f.write(document)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
