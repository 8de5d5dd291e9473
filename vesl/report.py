"""A visual QA report of a VESL output folder: one self-contained HTML file.

    python -m vesl.report OUTPUT_DIR [--images 24] [--seed 0] [--out OUTPUT_DIR/report.html]

Plots (inline SVG, with axes and counts): regions per image, region scores, words per phrase, box
area and aspect, top phrases, rejects by reason; where box centres fall; per-phrase statistics
(phrases that found no box, boxes per phrase, score by parser); a per-shard table; the rejects
(key, stage, reason, detail). Gallery: sampled images with numbered boxes and a legend of their
phrases; images come from the output (``--write_image_bytes true``) or, without them, from their
input shards when those are readable. Look at it before spending GPU-days training on the output.
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
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    width: int = 460,
    horizontal: bool = False,
    x_title: str = "",
    y_title: str = "count",
) -> str:
    """A small bar chart as inline SVG, with its axes, their titles and each bar's count."""
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
        height, base, left = 200, 150, 44
        slot = (width - left - 10) / len(values)
        bars = (
            f'<line class="axis" x1="{left}" y1="{base}" x2="{width - 6}" y2="{base}"/>'
            f'<line class="axis" x1="{left}" y1="{base - 130}" x2="{left}" y2="{base}"/>'
            f'<text x="{left - 4}" y="{base - 126}" text-anchor="end">{top:g}</text>'
            f'<text x="{left - 4}" y="{base}" text-anchor="end">0</text>'
            f'<text x="{left - 30}" y="{base - 60}" transform="rotate(-90 {left - 30} {base - 60})" '
            f'text-anchor="middle">{esc(y_title)}</text>'
            f'<text x="{left + (width - left) / 2:.0f}" y="{base + 32}" text-anchor="middle">{esc(x_title)}</text>'
        )
        bars += "".join(
            f'<rect x="{left + i * slot + 1:.1f}" y="{base - 130 * v / top:.1f}" width="{max(1.0, slot - 2):.1f}" '
            f'height="{130 * v / top:.1f}"><title>{esc(str(lab))}: {v:g}</title></rect>'
            + (
                f'<text class="count" x="{left + i * slot + slot / 2:.1f}" y="{base - 130 * v / top - 2:.1f}" '
                f'text-anchor="middle">{v:g}</text>'
                if v and len(values) <= 31
                else ""
            )
            + (
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{base + 14}" text-anchor="middle">{esc(str(lab))}</text>'
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
    for i, region in enumerate(regions):  # numbers on the boxes; the phrases go in the legend (no overlap)
        x0, y0, x1, y1 = region["box"]
        color = PALETTE[i % len(PALETTE)]
        draw.rectangle([x0 * w, y0 * h, x1 * w, y1 * h], outline=color, width=2)
        tx, ty = min(max(0, x0 * w), w - 14), min(max(0, y0 * h), h - 12)
        draw.rectangle([tx, ty, tx + 13, ty + 11], fill=color)
        draw.text((tx + 2, ty), str(i + 1), fill="white")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def legend(regions: Sequence[dict]) -> str:
    esc = html.escape
    items = "".join(
        f'<li style="color:{PALETTE[i % len(PALETTE)]}"><span>{esc(r["phrase"])} {r["score"]:.2f}</span></li>'
        for i, r in enumerate(regions)
    )
    return f'<ol class="legend">{items}</ol>'


def html_table(headers: Sequence[str], rows: Sequence[Sequence[object]], css: str = "") -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def phrase_stats(rows: Sequence[dict]) -> dict:
    """Per-phrase numbers: which queries found a box, boxes per phrase, score by parser."""
    queried, boxed = Counter(), Counter()
    by_parser: dict[str, list[float]] = {}
    phrases_by_parser = Counter()
    for row in rows:
        for p in row["phrases"]:
            queried[p["text"].lower()] += 1
            phrases_by_parser[p["parser"]] += 1
        for r in row["regions"]:
            boxed[r["phrase"].lower()] += 1
            by_parser.setdefault(r["parser"], []).append(r["score"])
    without = Counter({p: n for p, n in queried.items() if p not in boxed})
    return {
        "phrases": sum(queried.values()),
        "distinct": len(queried),
        "distinct_without_box": len(without),
        "top_without_box": without.most_common(15),
        "boxes_per_boxed_phrase": round(sum(boxed.values()) / len(boxed), 2) if boxed else 0.0,
        "by_parser": {
            parser: {
                "phrases": phrases_by_parser[parser],
                "boxes": len(by_parser.get(parser, [])),
                "mean_score": round(sum(by_parser.get(parser, [])) / len(by_parser[parser]), 3)
                if by_parser.get(parser)
                else None,
            }
            for parser in sorted(set(phrases_by_parser) | set(by_parser))
        },
    }


def box_geometry(rows: Sequence[dict]) -> dict[str, list]:
    """Box area (fraction of the image), aspect (width / height in original pixels, log2) and where
    box centres fall (a 5 x 5 grid over the image)."""
    import math

    areas, aspects, grid = [], [], [[0] * 5 for _ in range(5)]
    for row in rows:
        for r in row["regions"]:
            x0, y0, x1, y1 = r["box"]
            areas.append((x1 - x0) * (y1 - y0))
            w, h = (x1 - x0) * (row["width"] or 1), (y1 - y0) * (row["height"] or 1)
            if w > 0 and h > 0:
                aspects.append(max(-4.0, min(4.0, math.log2(w / h))))
            cx, cy = min(4, int((x0 + x1) / 2 * 5)), min(4, int((y0 + y1) / 2 * 5))
            grid[cy][cx] += 1
    return {"areas": areas, "aspects": aspects, "grid": grid}


def source_images(rows: Sequence[dict]) -> dict[str, bytes]:
    """Image bytes of rows written without them, read back from their input shards (when reachable)."""
    from vesl.config import ReadConfig
    from vesl.io.readers import read_shard
    from vesl.records import ImageRecord

    wanted: dict[str, dict[int, str]] = {}
    for row in rows:
        if not row.get("image") and row.get("source_shard"):
            wanted.setdefault(row["source_shard"], {})[row["source_index"]] = row["key"]
    found: dict[str, bytes] = {}
    for shard, indices in wanted.items():
        try:
            for item in read_shard(shard, ReadConfig()):
                if isinstance(item, ImageRecord) and indices.get(item.index) == item.key:
                    found[item.key] = item.image_bytes
                    del indices[item.index]
                    if not indices:  # this shard's sampled images are all found: stop reading it
                        break
        except Exception:  # the input moved or is not readable from here: the gallery says so
            continue
    return found


def read_stats(output_dir: str) -> list[dict]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(output_dir.rstrip("/") + "/stats")
    stats = []
    for path in sorted(fs.glob(root + "/*.json")):
        with fs.open(path, "r") as f:
            stats.append(json.load(f))
    return stats


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
    geometry = box_geometry(rows)
    area_labels, area_counts = histogram(geometry["areas"], 10, 0.0, 1.0)
    aspect_labels, aspect_counts = histogram(geometry["aspects"], 16, -4.0, 4.0)
    charts = [
        svg_bars(
            "Regions per image (30 = 30 or more)",
            [str(k) for k in range(31)],
            [per_image.get(k, 0) for k in range(31)],
            x_title="regions in the image",
            y_title="images",
        ),
        svg_bars("Region scores", scores_labels, scores, x_title="score", y_title="regions"),
        svg_bars(
            "Words per phrase (of regions; 8 = 8 or more)",
            [str(k) for k in range(1, 9)],
            [words.get(k, 0) for k in range(1, 9)],
            x_title="words",
            y_title="regions",
        ),
        svg_bars("Box area (fraction of the image)", area_labels, area_counts, x_title="area", y_title="regions"),
        svg_bars(
            "Box aspect (log2 of width / height)",
            aspect_labels,
            aspect_counts,
            x_title="log2 aspect",
            y_title="regions",
        ),
        svg_bars("Top phrases (regions)", [p for p, _ in top], [n for _, n in top], horizontal=True),
        svg_bars("Rejects by stage and reason", [r for r, _ in reasons], [n for _, n in reasons], horizontal=True),
    ]
    rng = random.Random(seed)
    sample = rng.sample(rows, min(n_images, len(rows)))
    fetched = source_images(sample)
    shown = [(row, row.get("image") or fetched.get(row["key"])) for row in sample]
    shown = [(row, data) for row, data in shown if data]
    if shown:
        cards = "".join(
            f'<div class="card"><img src="{draw_regions(data, row["regions"][:12])}" alt="{esc(row["key"])}">'
            f"<p><b>{esc(row['key'])}</b> {row['width']}x{row['height']}, {len(row['regions'])} regions"
            f"{' (12 drawn)' if len(row['regions']) > 12 else ''}"
            f"{'' if row.get('image') else ' (image read from its input shard)'}</p>"
            f'{legend(row["regions"][:12])}<p class="caption">{esc(row["caption"])}</p></div>'
            for row, data in shown
        )
    else:
        cards = (
            '<p class="empty">No image to show: this output holds no image bytes and its input shards are not '
            "readable from here; run VESL with --write_image_bytes true, or keep the inputs where they were.</p>"
        )
    stats = phrase_stats(rows)
    parser_rows = [(p, v["phrases"], v["boxes"], v["mean_score"]) for p, v in stats["by_parser"].items()]
    phrase_html = (
        f"<p>{stats['phrases']} queries ({stats['distinct']} distinct); {stats['distinct_without_box']} distinct "
        f"phrases found no box; {stats['boxes_per_boxed_phrase']} boxes per phrase that found one.</p>"
        + html_table(["parser", "queries", "boxes", "mean box score"], parser_rows)
        + "<h3>Phrases that found no box (most asked)</h3>"
        + html_table(["phrase", "times asked"], stats["top_without_box"])
    )
    grid_html = html_table(["centre y \\ x", "0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1"],
                      [[f"{i / 5:.1f}-{(i + 1) / 5:.1f}", *row] for i, row in enumerate(geometry["grid"])], "grid")  # fmt: skip
    shard_rows = [
        (
            s.get("shard_id"),
            s.get("input"),
            s["counts"]["read"],
            s["counts"]["written"],
            s["counts"]["rejected"],
            s["counts"]["balanced"],
        )
        for s in read_stats(output_dir)
    ]
    shards_html = html_table(["shard", "input", "read", "written", "rejected", "balanced"], shard_rows)
    listed = sorted(rejects, key=lambda r: (r["stage"], r["reason"], r["key"]))[:200]
    rejects_html = (
        f"<p>{len(rejects)} rejects{' (the first 200 by stage and reason)' if len(rejects) > 200 else ''}.</p>"
        + html_table(
            ["key", "stage", "reason", "detail"],
            [(r["key"], r["stage"], r["reason"], r.get("detail", "")) for r in listed],
            "rejects",
        )
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
.chart rect {{ fill: #4363d8; }} .chart text {{ font-size: 10px; fill: #333; }} .chart .axis {{ stroke: #555; }}
.legend {{ font-size: 12px; margin: 2px 0 2px 18px; padding: 0; }} .legend span {{ color: #222; }}
table.rejects td {{ font-size: 12px; max-width: 520px; }} table.grid td {{ text-align: right; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 14px; }}
.card {{ width: 360px; }} .card img {{ max-width: 360px; display: block; }}
.card p {{ margin: 3px 0; font-size: 12px; }} .caption {{ color: #555; }}
.warn {{ background: #fff3cd; padding: 6px 10px; border: 1px solid #e0c36a; }} .empty {{ color: #777; }}
</style></head><body>
<h1>VESL report</h1><p>{esc(output_dir)}</p>{warning}
<table>{table}</table>
<h2>Distributions</h2><div class="charts">{"".join(charts)}</div>
<h2>Where boxes are (box centres, regions per cell)</h2>{grid_html}
<h2>Phrases</h2>{phrase_html}
<h2>Shards</h2>{shards_html}
<h2>Rejects</h2>{rejects_html}
<h2>Gallery ({len(shown)} sampled images)</h2><div class="gallery">{cards}</div>
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
