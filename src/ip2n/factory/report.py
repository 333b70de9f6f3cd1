"""`OUT/report.md`: what the factory made — counts per editor, edit and reject reason, score
histograms and a contact sheet of random accepted and rejected pairs (PNGs in `OUT/report/`, drawn
with Pillow)."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ip2n.atomic import atomic_path, write_text_atomic
from ip2n.factory.spec import REASONS, FactorySettings
from ip2n.factory.store import REJECTED_DIR

REPORT_DIR = "report"
# score → (title, threshold setting or None, x range)
HISTOGRAMS: dict[str, tuple[str, str | None, tuple[float, float]]] = {
    "identity": ("identity cosine (source vs edit)", "min_identity", (-1.0, 1.0)),
    "change": ("mean absolute pixel change", "min_change", (0.0, 0.5)),
    "clip": ("CLIP directional similarity", "min_clip_direction", (-1.0, 1.0)),
}
TILE_HEIGHT = 128
ACCEPTED_COLOUR, REJECTED_COLOUR = (15, 157, 88), (219, 68, 55)


def write_report(
    out: Path, records: Sequence[dict[str, Any]], settings: FactorySettings, seed: int = 0
) -> Path:
    """Write report.md and its pictures; returns report.md's path."""
    out = Path(out)
    figures = out / REPORT_DIR
    accepted = [r for r in records if r.get("status") == "accepted"]
    rejected = [r for r in records if r.get("status") != "accepted"]
    lines = [
        "# Triplet data factory report",
        "",
        f"{len(records)} pairs: **{len(accepted)} accepted**, {len(rejected)} rejected "
        f"({_percent(len(accepted), len(records))} kept); "
        f"{sum(r.get('instructions', 0) for r in accepted)} instructions in all "
        "(one training sample each). Manifest: `manifest.jsonl`; settings: `factory.json`.",
        "",
        "## By editor",
        "",
        "| editor | accepted | rejected | kept |",
        "| --- | ---: | ---: | ---: |",
    ]
    for editor, (kept, dropped) in sorted(_split(records, "editor").items()):
        lines.append(f"| {editor} | {kept} | {dropped} | {_percent(kept, kept + dropped)} |")
    lines += ["", "## By reject reason", "", "| reason | pairs | meaning |", "| --- | ---: | --- |"]
    for reason, count in Counter(r.get("reason") for r in rejected).most_common():
        lines.append(f"| {reason} | {count} | {REASONS.get(str(reason), '')} |")
    if not rejected:
        lines.append("| — | 0 | nothing was rejected |")
    lines += ["", "## By edit", "", "| edit | accepted | rejected | kept |", "| --- | ---: | ---: | ---: |"]
    for edit, (kept, dropped) in sorted(
        _split(records, "edit").items(), key=lambda item: (-sum(item[1]), item[0])
    ):
        lines.append(f"| {_cell(edit)} | {kept} | {dropped} | {_percent(kept, kept + dropped)} |")
    lines += ["", "## Scores", ""]
    lines.append(
        "Every candidate image the editor produced (several per pair with several seeds), in green when "
        "its pair kept it, in red otherwise; the vertical line is the threshold."
    )
    lines.append("")
    for key, (title, threshold_name, value_range) in HISTOGRAMS.items():
        kept_values, other_values = _score_values(records, key)
        if not kept_values and not other_values:
            lines.append(f"- {title}: not measured (filter skipped or off)")
            continue
        threshold = getattr(settings, threshold_name) if threshold_name else None
        path = histogram(
            figures / f"hist_{key}.png", kept_values, other_values, title, value_range, threshold
        )
        summary = _summary(kept_values)
        lines.append(f"- {title}: threshold {threshold:g}; kept candidates {summary}")
        lines.append(f"  ![{title}]({REPORT_DIR}/{path.name})")
    sheet = contact_sheet(figures / "contact_sheet.png", out, accepted, rejected, seed)
    lines += ["", "## Contact sheet", ""]
    if sheet is not None:
        lines += [
            "Random accepted (green) and rejected (red) pairs, source | edit, with the edit and the reason.",
            "",
            f"![contact sheet]({REPORT_DIR}/{sheet.name})",
        ]
    else:
        lines.append("No pair has images yet.")
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _split(records: Sequence[dict[str, Any]], key: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in records:
        counts[str(record.get(key))][0 if record.get("status") == "accepted" else 1] += 1
    return {name: (kept, dropped) for name, (kept, dropped) in counts.items()}


def _score_values(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    kept: list[float] = []
    other: list[float] = []
    for record in records:
        for candidate in record.get("candidates", []):
            value = (candidate.get("scores") or {}).get(key)
            if value is None or not math.isfinite(value):
                continue
            is_kept = record.get("status") == "accepted" and candidate.get("seed") == record.get("seed")
            (kept if is_kept else other).append(float(value))
    return kept, other


def _summary(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return f"min {ordered[0]:.3f}, median {median:.3f}, max {ordered[-1]:.3f} (n = {len(values)})"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def histogram(
    path: Path,
    kept: list[float],
    other: list[float],
    title: str,
    value_range: tuple[float, float],
    threshold: float | None,
    bins: int = 30,
    size: tuple[int, int] = (640, 300),
) -> Path:
    """Stacked histogram (kept green, other red) with the threshold as a vertical line."""
    low = min([value_range[0], *kept, *other])
    high = max([value_range[1], *kept, *other])
    width_value = (high - low) / bins or 1.0
    counts = [[0, 0] for _ in range(bins)]
    for series, values in enumerate((kept, other)):
        for value in values:
            counts[min(bins - 1, max(0, int((value - low) / width_value)))][series] += 1
    width, height = size
    left, right, top, bottom = 45, 15, 30, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black")
    peak = max(1, max(a + b for a, b in counts))
    plot_w, plot_h = width - left - right, height - top - bottom
    for tick in range(5):
        y = height - bottom - plot_h * tick / 4
        draw.line((left, y, width - right, y), fill=(225, 225, 225))
        draw.text((5, y - 6), f"{peak * tick / 4:.0f}", fill="black")
    bar = plot_w / bins
    for index, (kept_count, other_count) in enumerate(counts):
        x0 = left + index * bar
        y_base = float(height - bottom)
        for count, colour in ((kept_count, ACCEPTED_COLOUR), (other_count, REJECTED_COLOUR)):
            if count:
                y_top = y_base - plot_h * count / peak
                draw.rectangle((x0 + 1, y_top, x0 + bar - 1, y_base), fill=colour)
                y_base = y_top
    for fraction in (0.0, 0.5, 1.0):
        x = left + plot_w * fraction
        draw.text((x - 12, height - bottom + 6), f"{low + (high - low) * fraction:.2f}", fill="black")
    if threshold is not None and low <= threshold <= high:
        x = left + plot_w * (threshold - low) / (high - low)
        draw.line((x, top, x, height - bottom), fill="black", width=2)
    draw.rectangle((left, height - 16, left + 10, height - 6), fill=ACCEPTED_COLOUR)
    draw.text((left + 14, height - 18), f"kept ({len(kept)})", fill="black")
    draw.rectangle((left + 120, height - 16, left + 130, height - 6), fill=REJECTED_COLOUR)
    draw.text((left + 134, height - 18), f"not kept ({len(other)})", fill="black")
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return path


def contact_sheet(
    path: Path,
    out: Path,
    accepted: Sequence[dict[str, Any]],
    rejected: Sequence[dict[str, Any]],
    seed: int,
    per_kind: int = 8,
) -> Path | None:
    """Up to `per_kind` random accepted and rejected pairs, one tile each (source | edit, caption)."""
    rng = random.Random(seed)
    tiles = []
    for records, colour in ((accepted, ACCEPTED_COLOUR), (rejected, REJECTED_COLOUR)):
        chosen = rng.sample(list(records), min(per_kind, len(records)))
        for record in sorted(chosen, key=lambda r: r["pair"]):
            strip = _pair_strip(out, record)
            if strip is None:
                continue
            caption = f"{record['pair']} {record.get('edit') or ''}"
            if record.get("status") != "accepted":
                caption += f" - {record.get('reason')}"
            tiles.append(_tile(strip, caption, colour))
    if not tiles:
        return None
    columns = 4
    tile_w, tile_h = tiles[0].size
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h), "white")
    for index, tile in enumerate(tiles):
        sheet.paste(tile, ((index % columns) * tile_w, (index // columns) * tile_h))
    with atomic_path(path) as temporary:
        sheet.save(temporary, format="PNG")
    return path


def _pair_strip(out: Path, record: dict[str, Any]) -> Image.Image | None:
    name = record["pair"]
    try:
        if record.get("status") == "accepted":
            with (
                Image.open(out / name / f"{name}_0.png") as source,
                Image.open(out / name / f"{name}_1.png") as edit,
            ):
                pair = [source.convert("RGB"), edit.convert("RGB")]
            strip = Image.new("RGB", (pair[0].width * 2, pair[0].height))
            strip.paste(pair[0], (0, 0))
            strip.paste(pair[1].resize(pair[0].size), (pair[0].width, 0))
            return strip
        rejected_path = out / REJECTED_DIR / f"{name}.png"
        if not rejected_path.is_file():
            return None
        with Image.open(rejected_path) as strip_file:
            return strip_file.convert("RGB")
    except OSError:
        return None


def _tile(strip: Image.Image, caption: str, colour: tuple[int, int, int]) -> Image.Image:
    scale = TILE_HEIGHT / strip.height
    strip = strip.resize((round(strip.width * scale), TILE_HEIGHT))
    tile = Image.new("RGB", (2 * TILE_HEIGHT + 8, TILE_HEIGHT + 24), "white")
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, tile.width - 1, tile.height - 1), outline=colour, width=3)
    tile.paste(strip.crop((0, 0, min(strip.width, 2 * TILE_HEIGHT), TILE_HEIGHT)), (4, 4))
    draw.text((4, TILE_HEIGHT + 6), caption[:40], fill=colour)
    return tile
