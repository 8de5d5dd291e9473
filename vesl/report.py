"""A visual QA report of a VESL output folder: one self-contained HTML file.

    python -m vesl.report OUTPUT_DIR [--images 24] [--seed 0] [--out OUTPUT_DIR/report.html]
        [--patch-score SCORE.json]

Plots (inline SVG, with axes and counts): regions per image, region scores, words per phrase, box
area and aspect, top phrases, rejects by reason; where box centres fall; per-phrase statistics
(phrases that found no box, boxes per phrase, score by parser); a per-shard table; the rejects
(key, stage, reason, detail). Gallery: sampled images with numbered boxes and a legend of their
phrases; images come from the output (``--write_image_bytes true``) or, without them, from their
input shards when those are readable. Look at it before spending GPU-days training on the output.
``--patch-score`` adds a section with a patch-level score against human masks, the JSON that
``python -m vesl.evaluate patches OUTPUT --gt ... --json SCORE.json`` writes (``vesl.patchseg.score``).

Memory does not grow with the output: the rows (without their image bytes) are read in one streamed
pass (``vesl.io.outputs``) into histograms and counters, the gallery is a seeded reservoir sample
whose image bytes are read afterwards for those rows only, the rejects table keeps the first 200 in
a bounded heap, and per-phrase counts are kept for at most ``PHRASE_CAPACITY`` distinct phrases (the
report says when that cap made them approximate).
"""

from __future__ import annotations

import argparse
import base64
import heapq
import html
import io
import json
import math
import random
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from vesl.io.outputs import IMAGE_COLUMN, CommittedShard, OutputFolder, RowRef, iter_source_images

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]
# The columns the report reads from every row (the image bytes only for the sampled rows).
REPORT_COLUMNS = ["key", "source_shard", "source_index", "caption", "width", "height", "phrases", "regions"]
ROW_BATCH = 512  # rows decoded at a time
PHRASE_CAPACITY = 50_000  # distinct phrases tracked (PhraseTally)
LISTED_REJECTS = 200  # rejects listed in the table


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


class Histogram:
    """Counts of values in ``bins`` equal bins over [low, high] (values outside go to the end bins),
    kept as counts only, so any number of values fits."""

    def __init__(self, bins: int, low: float, high: float):
        self.low, self.high = low, high
        self.counts = [0] * bins

    def add(self, value: float) -> None:
        bins = len(self.counts)
        self.counts[min(bins - 1, max(0, int((value - self.low) / (self.high - self.low) * bins)))] += 1

    @property
    def labels(self) -> list[str]:
        bins = len(self.counts)
        return [f"{self.low + (self.high - self.low) * i / bins:.2g}" for i in range(bins)]


def histogram(values: Iterable[float], bins: int, low: float, high: float) -> tuple[list[str], list[int]]:
    counts = Histogram(bins, low, high)
    for v in values:
        counts.add(v)
    return counts.labels, counts.counts


class PhraseTally:
    """Per-phrase counts (times asked, boxes found) for at most ``capacity`` distinct phrases.

    An output of millions of captions has millions of distinct phrases, mostly seen once; a table of
    all of them would grow with the output. When the table is full, it keeps the ``capacity // 2``
    phrases seen most often (asked + boxed) and forgets the rest, which then start again from zero if
    they come back: frequent phrases keep exact counts from their first appearance, the long tail is
    dropped, and ``approximate`` says so (per-phrase counts are then lower bounds; distinct counts and
    "found no box" are approximate). The totals ``asked`` and ``boxed`` stay exact.
    Below the capacity every count is exact and ties keep first-seen order (``Counter.most_common``'s).
    """

    ASKED, BOXED, FIRST_ASKED, FIRST_BOXED = range(4)

    def __init__(self, capacity: int = PHRASE_CAPACITY):
        self.capacity = max(2, capacity)
        self.entries: dict[str, list[int]] = {}  # phrase -> [asked, boxed, first asked at, first boxed at]
        self.approximate = False
        self.asked = self.boxed = 0  # totals: exact whatever the capacity
        self._events = 0

    def _entry(self, phrase: str) -> list[int]:
        entry = self.entries.get(phrase)
        if entry is None:
            if len(self.entries) >= self.capacity:
                self._prune()
            entry = self.entries[phrase] = [0, 0, -1, -1]
        return entry

    def _prune(self) -> None:
        keep = heapq.nlargest(self.capacity // 2, self.entries.items(), key=lambda item: item[1][0] + item[1][1])
        kept = {phrase for phrase, _ in keep}
        self.entries = {p: e for p, e in self.entries.items() if p in kept}
        self.approximate = True

    def _count(self, phrase: str, slot: int) -> None:
        entry = self._entry(phrase)
        if entry[slot] == 0:
            entry[slot + 2] = self._events
        entry[slot] += 1
        self._events += 1

    def ask(self, phrase: str) -> None:
        self.asked += 1
        self._count(phrase, self.ASKED)

    def box(self, phrase: str) -> None:
        self.boxed += 1
        self._count(phrase, self.BOXED)

    def _ranked(self, slot: int, entries: Iterable[tuple[str, list[int]]], n: int) -> list[tuple[str, int]]:
        top = heapq.nsmallest(n, entries, key=lambda item: (-item[1][slot], item[1][slot + 2]))
        return [(phrase, entry[slot]) for phrase, entry in top]

    def top_boxed(self, n: int) -> list[tuple[str, int]]:
        """The phrases with the most boxes, most first."""
        return self._ranked(self.BOXED, ((p, e) for p, e in self.entries.items() if e[self.BOXED]), n)

    def top_without_box(self, n: int) -> list[tuple[str, int]]:
        """The phrases asked most often that found no box, with the times asked."""
        entries = ((p, e) for p, e in self.entries.items() if e[self.ASKED] and not e[self.BOXED])
        return self._ranked(self.ASKED, entries, n)

    def distinct(self) -> tuple[int, int, int]:
        """(phrases asked, of them without a box, phrases with a box), distinct."""
        asked = without = boxed = 0
        for entry in self.entries.values():
            asked += entry[self.ASKED] > 0
            without += entry[self.ASKED] > 0 and entry[self.BOXED] == 0
            boxed += entry[self.BOXED] > 0
        return asked, without, boxed


class Reservoir:
    """A uniform random sample of ``size`` items of a stream of unknown length (Algorithm R), the
    same for the same seed and stream; ``items`` in stream order."""

    def __init__(self, size: int, seed: int):
        self.size = max(0, size)
        self.rng = random.Random(seed)
        self.seen = 0
        self._items: list[tuple[int, Any]] = []

    def offer(self, item: Any) -> None:
        if len(self._items) < self.size:
            self._items.append((self.seen, item))
        else:
            slot = self.rng.randrange(self.seen + 1)
            if slot < self.size:
                self._items[slot] = (self.seen, item)
        self.seen += 1

    @property
    def items(self) -> list[Any]:
        return [item for _, item in sorted(self._items, key=lambda pair: pair[0])]


class RowTally:
    """Everything the report shows about the rows, added up one row at a time: its size does not
    grow with the number of rows (histograms, bounded counters, a capped phrase table)."""

    def __init__(self, phrase_capacity: int = PHRASE_CAPACITY):
        self.per_image: Counter[int] = Counter()
        self.scores = Histogram(20, 0.0, 1.0)
        self.words: Counter[int] = Counter()
        self.areas = Histogram(10, 0.0, 1.0)
        self.aspects = Histogram(16, -4.0, 4.0)
        self.grid = [[0] * 5 for _ in range(5)]  # box centres, rows y, columns x
        self.phrases = PhraseTally(phrase_capacity)
        self.queries_by_parser: Counter[str] = Counter()
        self.boxes_by_parser: dict[str, list[float]] = {}  # parser -> [boxes, sum of their scores]

    def add(self, row: dict) -> None:
        regions = row["regions"]
        self.per_image[min(len(regions), 30)] += 1
        for phrase in row["phrases"]:
            self.phrases.ask(phrase["text"].lower())
            self.queries_by_parser[phrase["parser"]] += 1
        for region in regions:
            self.scores.add(region["score"])
            self.words[min(len(region["phrase"].split()), 8)] += 1
            self.phrases.box(region["phrase"].lower())
            tally = self.boxes_by_parser.setdefault(region["parser"], [0, 0.0])
            tally[0] += 1
            tally[1] += region["score"]
            self._add_geometry(region["box"], row["width"] or 1, row["height"] or 1)

    def _add_geometry(self, box: Sequence[float], width: int, height: int) -> None:
        """Box area (fraction of the image), aspect (width / height in original pixels, log2) and
        where the box centre falls (a 5 x 5 grid over the image)."""
        x0, y0, x1, y1 = box
        self.areas.add((x1 - x0) * (y1 - y0))
        w, h = (x1 - x0) * width, (y1 - y0) * height
        if w > 0 and h > 0:
            self.aspects.add(max(-4.0, min(4.0, math.log2(w / h))))
        self.grid[min(4, int((y0 + y1) / 2 * 5))][min(4, int((x0 + x1) / 2 * 5))] += 1

    def phrase_stats(self) -> dict:
        """Per-phrase numbers: which queries found a box, boxes per phrase, score by parser."""
        distinct, without, boxed = self.phrases.distinct()
        parsers = sorted(set(self.queries_by_parser) | set(self.boxes_by_parser))
        return {
            "phrases": self.phrases.asked,
            "distinct": distinct,
            "distinct_without_box": without,
            "top_without_box": self.phrases.top_without_box(15),
            "boxes_per_boxed_phrase": round(self.phrases.boxed / boxed, 2) if boxed else 0.0,
            "approximate": self.phrases.approximate,
            "by_parser": {parser: self._parser_stats(parser) for parser in parsers},
        }

    def _parser_stats(self, parser: str) -> dict:
        boxes, score_sum = self.boxes_by_parser.get(parser, [0, 0.0])
        return {
            "phrases": self.queries_by_parser[parser],
            "boxes": boxes,
            "mean_score": round(score_sum / boxes, 3) if boxes else None,
        }


@dataclass
class RejectTally:
    """The rejects as the report shows them: counts by stage and reason, and the first ``listed``
    by (stage, reason, key), found with a bounded heap (an output can reject millions of records)."""

    total: int
    by_reason: list[tuple[str, int]]
    first: list[dict]


def tally_rejects(rejects: Iterable[dict], listed: int = LISTED_REJECTS) -> RejectTally:
    by_reason: Counter[str] = Counter()

    def counted() -> Iterator[dict]:
        for reject in rejects:
            by_reason[f"{reject['stage']}: {reject['reason']}"] += 1
            yield reject

    first = heapq.nsmallest(listed, counted(), key=lambda r: (r["stage"], r["reason"], r["key"]))
    return RejectTally(sum(by_reason.values()), by_reason.most_common(), first)


def sample_images(folder: OutputFolder, sample: Sequence[tuple[RowRef, dict]]) -> list[tuple[dict, bytes]]:
    """The sampled rows with their image bytes: from the output's ``image`` column (read for these rows
    only) when the run wrote them, else from their input shards; rows without either are left out."""
    stored = folder.cells(IMAGE_COLUMN, [ref for ref, _ in sample])
    rows = [{**row, "image": stored.get(ref)} for ref, row in sample]
    fetched = source_images(rows)
    shown = [(row, row.get("image") or fetched.get(row["key"])) for row in rows]
    return [(row, data) for row, data in shown if data]


def draw_regions(image_bytes: bytes, regions: Sequence[dict], max_side: int = 360) -> str:
    """The image with its boxes and phrases drawn, as a data: URL (JPEG)."""
    from PIL import ImageDraw

    from vesl.config import DetectConfig
    from vesl.vision.decode import decode_image

    image = decode_image(image_bytes, DetectConfig.max_image_pixels).image
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


def source_images(rows: Sequence[dict]) -> dict[str, bytes]:
    """Image bytes of rows written without them, read back from their input shards (when reachable)."""
    wanted = (row for row in rows if not row.get("image") and row.get("source_shard"))
    return {found.row["key"]: found.data for found in iter_source_images(wanted) if found.data is not None}


def charts(tally: RowTally, rejects: RejectTally) -> list[str]:
    top = tally.phrases.top_boxed(20)
    top_title = "Top phrases (regions)" + (" (approximate: phrase counts capped)" if tally.phrases.approximate else "")
    return [
        svg_bars(
            "Regions per image (30 = 30 or more)",
            [str(k) for k in range(31)],
            [tally.per_image.get(k, 0) for k in range(31)],
            x_title="regions in the image",
            y_title="images",
        ),
        svg_bars("Region scores", tally.scores.labels, tally.scores.counts, x_title="score", y_title="regions"),
        svg_bars(
            "Words per phrase (of regions; 8 = 8 or more)",
            [str(k) for k in range(1, 9)],
            [tally.words.get(k, 0) for k in range(1, 9)],
            x_title="words",
            y_title="regions",
        ),
        svg_bars(
            "Box area (fraction of the image)",
            tally.areas.labels,
            tally.areas.counts,
            x_title="area",
            y_title="regions",
        ),
        svg_bars(
            "Box aspect (log2 of width / height)",
            tally.aspects.labels,
            tally.aspects.counts,
            x_title="log2 aspect",
            y_title="regions",
        ),
        svg_bars(top_title, [p for p, _ in top], [n for _, n in top], horizontal=True),
        svg_bars(
            "Rejects by stage and reason",
            [r for r, _ in rejects.by_reason],
            [n for _, n in rejects.by_reason],
            horizontal=True,
        ),
    ]


def gallery_html(shown: Sequence[tuple[dict, bytes]]) -> str:
    esc = html.escape
    if not shown:
        return (
            '<p class="empty">No image to show: this output holds no image bytes and its input shards are not '
            "readable from here; run VESL with --write_image_bytes true, or keep the inputs where they were.</p>"
        )
    return "".join(
        f'<div class="card"><img src="{draw_regions(data, row["regions"][:12])}" alt="{esc(row["key"])}">'
        f"<p><b>{esc(row['key'])}</b> {row['width']}x{row['height']}, {len(row['regions'])} regions"
        f"{' (12 drawn)' if len(row['regions']) > 12 else ''}"
        f"{'' if row.get('image') else ' (image read from its input shard)'}</p>"
        f'{legend(row["regions"][:12])}<p class="caption">{esc(row["caption"])}</p></div>'
        for row, data in shown
    )


def phrases_html(stats: dict, capacity: int) -> str:
    parser_rows = [(p, v["phrases"], v["boxes"], v["mean_score"]) for p, v in stats["by_parser"].items()]
    capped = (
        f'<p class="warn">More than {capacity} distinct phrases: per-phrase counts are kept for the most '
        "frequent ones only (each from when it was last taken in), so the distinct counts, the boxes per "
        "phrase, the phrases that found no box and the top phrases are approximate.</p>"
        if stats["approximate"]
        else ""
    )
    return (
        f"<p>{stats['phrases']} queries ({stats['distinct']} distinct); {stats['distinct_without_box']} distinct "
        f"phrases found no box; {stats['boxes_per_boxed_phrase']} boxes per phrase that found one.</p>"
        + capped
        + html_table(["parser", "queries", "boxes", "mean box score"], parser_rows)
        + "<h3>Phrases that found no box (most asked)</h3>"
        + html_table(["phrase", "times asked"], stats["top_without_box"])
    )


def grid_html(grid: Sequence[Sequence[int]]) -> str:
    return html_table(["centre y \\ x", "0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1"],
                      [[f"{i / 5:.1f}-{(i + 1) / 5:.1f}", *row] for i, row in enumerate(grid)], "grid")  # fmt: skip


def shards_html(shards: Sequence[CommittedShard]) -> str:
    rows = [
        (s.shard_id, s.input, s.counts["read"], s.counts["written"], s.counts["rejected"], s.counts["balanced"])
        for s in shards
    ]
    return html_table(["shard", "input", "read", "written", "rejected", "balanced"], rows)


def rejects_html(rejects: RejectTally) -> str:
    more = f" (the first {LISTED_REJECTS} by stage and reason)" if rejects.total > LISTED_REJECTS else ""
    return f"<p>{rejects.total} rejects{more}.</p>" + html_table(
        ["key", "stage", "reason", "detail"],
        [(r["key"], r["stage"], r["reason"], r.get("detail", "")) for r in rejects.first],
        "rejects",
    )


def facts_html(summary: dict) -> str:
    esc = html.escape
    counts, provenance = summary["counts"], summary.get("provenance", {})
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
    return "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)


def patch_score_html(score: dict | None) -> str:
    """The patch-level score's section (``vesl.patchseg.score``'s JSON): headline, sizes, regions, classes."""
    if not score:
        return ""
    esc = html.escape
    metrics = ["accuracy", "recall", "precision", "f1", "classes_scored", "classes_skipped"]
    headline = [(name, *(score[name][k] for k in metrics)) for name in ("things", "all")]
    sizes = [(size, v["instances"], v["positives"], v["hits"], v["recall"]) for size, v in score["by_size"].items()]
    regions = score["regions"]
    classes = [(c["name"], c["tp"], c["fp"], c["fn"], c["recall"], c["precision"], c["f1"]) for c in score["per_class"]]
    return (
        f"<h2>Patch-level score against {esc(str(score.get('ground_truth', 'ground truth')))}</h2>"
        f"<p>{score['size']}/{score['patch']} ({score['grid']}x{score['grid']} patches, crop {esc(score['crop'])}, "
        f"{score['reduction']} targets): {score['images_matched']} of {score['images_in_ground_truth']} "
        f"ground-truth images matched; regions named by the vocabulary {regions['matched']} of "
        f"{regions['total']}. Macro means over classes with a positive patch.</p>"
        + html_table(["classes", *metrics], headline)
        + html_table(["instance size", "instances", "positive patches", "predicted", "recall"], sizes)
        + html_table(["class", "TP", "FP", "FN", "recall", "precision", "F1"], classes)
    )


def tally_rows(folder: OutputFolder, n_images: int, seed: int, phrase_capacity: int) -> tuple[RowTally, list]:
    """One streamed pass over the committed rows (without image bytes): the tally, and a seeded
    uniform sample of ``n_images`` (where each row is, row) for the gallery."""
    tally, sample = RowTally(phrase_capacity), Reservoir(n_images, seed)
    for ref, row in folder.located_rows(REPORT_COLUMNS, batch_rows=ROW_BATCH):
        tally.add(row)
        sample.offer((ref, row))
    return tally, sample.items


def build_report(
    output_dir: str,
    n_images: int = 24,
    seed: int = 0,
    phrase_capacity: int = PHRASE_CAPACITY,
    patch_score: dict | None = None,
) -> str:
    """The report's HTML. Reads the output in one streamed pass (memory does not grow with its size),
    then the image bytes of the sampled rows only. ``patch_score``: a ``vesl.evaluate patches`` result
    to show (a section of its own), or None."""
    esc = html.escape
    folder = OutputFolder(output_dir)
    summary = folder.summary()
    tally, sample = tally_rows(folder, n_images, seed, phrase_capacity)
    rejects = tally_rejects(folder.rejects())
    shown = sample_images(folder, sample)
    weights = summary.get("provenance", {}).get("weights")
    warning = (
        '<p class="warn">These regions come from a detector with RANDOM WEIGHTS: the boxes mean nothing.</p>'
        if weights == "random weights"
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
<table>{facts_html(summary)}</table>
<h2>Distributions</h2><div class="charts">{"".join(charts(tally, rejects))}</div>
<h2>Where boxes are (box centres, regions per cell)</h2>{grid_html(tally.grid)}
<h2>Phrases</h2>{phrases_html(tally.phrase_stats(), phrase_capacity)}
{patch_score_html(patch_score)}
<h2>Shards</h2>{shards_html(folder.shards())}
<h2>Rejects</h2>{rejects_html(rejects)}
<h2>Gallery ({len(shown)} sampled images)</h2><div class="gallery">{gallery_html(shown)}</div>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument("--patch-score", default=None, help="JSON of python -m vesl.evaluate patches ... --json")
    args = parser.parse_args(argv)
    out = args.out or args.output_dir.rstrip("/") + "/report.html"
    import fsspec

    patch_score = None
    if args.patch_score:
        with fsspec.open(args.patch_score, "r", encoding="utf-8") as f:
            patch_score = json.load(f)
    document = build_report(args.output_dir, args.images, args.seed, patch_score=patch_score)

    with fsspec.open(out, "w", encoding="utf-8") as f:
        f.write(document)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
