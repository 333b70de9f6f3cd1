"""The `ip2n synth eval` report: a markdown page with tables and bar charts (drawn with Pillow)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ip2n.atomic import atomic_path, write_text_atomic

SERIES_COLOURS = ((66, 133, 244), (219, 68, 55), (244, 160, 0), (15, 157, 88), (120, 80, 170))


def bar_chart(
    path: str | os.PathLike,
    groups: Mapping[str, Sequence[float]],
    series: Sequence[str],
    title: str,
    *,
    y_max: float = 1.0,
    size: tuple[int, int] = (720, 360),
) -> Path:
    """Grouped bars: one group per key of `groups` (its values: one per `series`), y from 0 to `y_max`."""
    width, height = size
    left, right, top, bottom = 50, 10, 30, 60
    image = Image.new("RGB", size, "white")
    drawing = ImageDraw.Draw(image)
    drawing.text((left, 8), title, fill="black")
    plot_height = height - top - bottom
    for tick in range(5):
        value = y_max * tick / 4
        y = height - bottom - plot_height * tick / 4
        drawing.line((left, y, width - right, y), fill=(220, 220, 220))
        drawing.text((5, y - 6), f"{value:.2f}", fill="black")
    slot = (width - left - right) / max(len(groups), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for number, (label, values) in enumerate(groups.items()):
        x0 = left + number * slot + slot * 0.1
        for index, value in enumerate(values):
            bar_top = height - bottom - plot_height * max(0.0, min(value, y_max)) / y_max
            drawing.rectangle(
                (x0 + index * bar, bar_top, x0 + (index + 1) * bar - 2, height - bottom),
                fill=SERIES_COLOURS[index % len(SERIES_COLOURS)],
            )
        drawing.text((x0, height - bottom + 5), label, fill="black")
    for index, name in enumerate(series):
        x = left + index * 140
        drawing.rectangle(
            (x, height - 22, x + 10, height - 12), fill=SERIES_COLOURS[index % len(SERIES_COLOURS)]
        )
        drawing.text((x + 14, height - 24), name, fill="black")
    path = Path(path)
    with atomic_path(path) as temporary:
        image.save(temporary)
    return path


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _paired_section(results: Mapping[str, dict], variants: list[str]) -> list[str]:
    """Each further variant against the first, case by case (they all edit the same cases)."""
    from ip2n.synthetic.lab.evaluate import PAIRED_FIGURES, paired_difference

    baseline = variants[0]
    lines = [
        f"## Case by case against {baseline}",
        "",
        f"Mean difference (variant − {baseline}) over the same cases, the cases where it is higher / lower, "
        "and the two-sided sign test's p-value: what separates two variants from the noise of the cases.",
        "",
        "| variant | " + " | ".join(PAIRED_FIGURES.values()) + " |",
        "|---|" + "---|" * len(PAIRED_FIGURES),
    ]
    for variant in variants[1:]:
        cells = []
        for key in PAIRED_FIGURES:
            d = paired_difference(results[variant]["cases"], results[baseline]["cases"], key)
            cells.append(
                f"{d['mean_difference']:+.3f} ({d['higher']} / {d['lower']}, p = {d['sign_test_p']:.2g})"
            )
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_report(out_dir: Path, results: Mapping[str, dict], context: Mapping[str, str]) -> Path:
    """report.md (+ PNG charts) in `out_dir` from {variant: summarize(...)}; `context` lines go on top."""
    variants = list(results)
    counts = list(results[variants[0]]["by_count"])
    bar_chart(
        out_dir / "success_by_count.png",
        {
            f"{count} edit{'s' if count != '1' else ''}": [
                results[v]["by_count"][count]["success_truth"] for v in variants
            ]
            for count in counts
        },
        variants,
        "edit success (ground truth) by number of instructions",
    )
    bar_chart(
        out_dir / "identity_and_dependency.png",
        {
            v: [
                results[v]["all"]["identity_cosine"],
                results[v]["all"]["other_attributes_changed_truth"],
                results[v]["all"]["AA"],
            ]
            for v in variants
        },
        ["identity cosine", "other attributes changed", "AA"],
        "identity, attribute dependency, AA",
    )
    lines = ["# Editing quality in the synthetic world", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    lines += [
        "",
        "## Success by number of instructions (ground truth / attribute classifier)",
        "",
        "| variant | " + " | ".join(f"{c} edit(s)" for c in counts) + " | all |",
        "|---|" + "---|" * (len(counts) + 1),
    ]
    for variant in variants:
        row = [
            f"{_percent(results[variant]['by_count'][c]['success_truth'])} / "
            f"{_percent(results[variant]['by_count'][c]['success_classifier'])}"
            for c in counts
        ]
        overall = results[variant]["all"]
        lines.append(
            f"| {variant} | "
            + " | ".join(row)
            + f" | {_percent(overall['success_truth'])} / {_percent(overall['success_classifier'])} |"
        )
    # Every variant edits the same cases from the same reconstruction, so the exact edits are shared.
    exact = results[variants[0]]
    lines += [
        "| exact edit (classifier only) | "
        + " | ".join(f"— / {_percent(exact['by_count'][c]['exact_success_classifier'])}" for c in counts)
        + f" | — / {_percent(exact['all']['exact_success_classifier'])} |",
        "",
        "The last row is the classifier's verdict on the *exact* edit (the reconstruction with precisely "
        f"the requested attributes changed; its AA {_percent(exact['all']['exact_AA'])}): the most a "
        "classifier-judged figure can show, since the classifier misses some edits that are there.",
    ]
    lines += [
        "",
        "![success by count](success_by_count.png)",
        "",
        "## Attributes and identity",
        "",
        "| variant | other attributes changed (truth) | changed from the reconstruction | "
        "misread by the encoder | AA | AD | identity cosine (mean / min) | "
        "identity cosine of the exact edit | ID as the paper (input image) | identity drift (truth) | "
        "identity error against the true head: edit / reconstruction | "
        "encoder: relative latent error | encoder: attributes read |",
        "|---|" + "---|" * 12,
    ]
    for variant in variants:
        f = results[variant]["all"]
        lines.append(
            f"| {variant} | {_percent(f['other_attributes_changed_truth'])} | "
            f"{_percent(f['other_attributes_changed_reconstruction'])} | "
            f"{_percent(f['other_attributes_misread_by_encoder'])} | {_percent(f['AA'])} | "
            f"{f['AD_percent']:.2f} % | {f['identity_cosine']:.3f} / {f['identity_cosine_min']:.3f} | "
            f"{f['exact_edit_identity_cosine']:.3f} | {f['input_identity_cosine']:.3f} | "
            f"{f['identity_drift_truth']:.3f} | "
            f"{f['identity_error_truth']:.3f} / {f['reconstruction_identity_error_truth']:.3f} | "
            f"{f['reconstruction_relative_error']:.4f} | {_percent(f['reconstruction_attributes'])} |"
        )
    lines += [
        "",
        "Other attributes changed compares the edit with the true source, so it counts the non-requested "
        "attributes the encoder misread in the input as well as those the editor changed; the next two "
        "columns separate them (edit against the reconstruction; reconstruction against the truth).",
        "",
        "The exact edit is the reconstruction with precisely the requested attributes changed: the world's "
        "identity network also reacts to attributes, so its cosine is the ceiling an editor can reach. "
        "The identity cosines compare the reconstruction and the edit at the same views; the paper's ID "
        "compares the input image (its own camera) with each edited view, so it also counts what the "
        "inversion lost and the change of viewpoint. "
        "Identity drift is the mean absolute change of the true identity coordinates (two random people "
        "differ by about 1.1); the identity error is the same difference between the true head and the "
        "edit (or the reconstruction): what the inversion lost, and whether the edit gave it back.",
        "",
        "![identity and dependency](identity_and_dependency.png)",
        "",
    ]
    if len(variants) > 1 and all("cases" in results[v] for v in variants):
        lines += _paired_section(results, variants)
    if all("instruction_losses" in results[v] for v in variants):
        lines += [
            "## Does the DiT read the instruction?",
            "",
            "Denoising error on fresh triplets with the right instruction, another sample's, and the empty "
            "prompt (`instruction_losses`); equal errors mean the instruction is ignored.",
            "",
            "| variant | right | shuffled | empty |",
            "|---|---|---|---|",
        ]
        for variant in variants:
            losses = results[variant]["instruction_losses"]
            lines.append(
                f"| {variant} | {losses['right']:.4f} | {losses['shuffled']:.4f} | {losses['empty']:.4f} |"
            )
        lines.append("")
    write_text_atomic(out_dir / "report.md", "\n".join(lines) + "\n")
    return out_dir / "report.md"
