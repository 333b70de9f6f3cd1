"""A loss curve as a PNG, drawn with Pillow (no plotting library needed on training machines)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw

from ip2n.atomic import atomic_path


def write_loss_curve(
    path: str | os.PathLike, history: Sequence[tuple[int, float]], size: tuple[int, int] = (640, 360)
) -> None:
    """Plot (step, loss) points on a log10 loss axis; written atomically."""
    width, height = size
    margin_left, margin, margin_bottom = 70, 20, 40
    image = Image.new("RGB", size, "white")
    drawing = ImageDraw.Draw(image)
    plot = (margin_left, margin, width - margin, height - margin_bottom)
    drawing.rectangle(plot, outline="black")
    points = [(step, math.log10(loss)) for step, loss in history if loss > 0 and math.isfinite(loss)]
    if points:
        steps = [step for step, _ in points]
        values = [value for _, value in points]
        step_low, step_high = min(steps), max(max(steps), min(steps) + 1)
        low, high = min(values), max(max(values), min(values) + 1e-6)

        def to_pixel(step: float, value: float) -> tuple[float, float]:
            x = plot[0] + (step - step_low) / (step_high - step_low) * (plot[2] - plot[0])
            y = plot[3] - (value - low) / (high - low) * (plot[3] - plot[1])
            return x, y

        pixels = [to_pixel(step, value) for step, value in points]
        if len(pixels) > 1:
            drawing.line(pixels, fill=(31, 119, 180), width=2)
        for x, y in pixels[-1:]:
            drawing.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(31, 119, 180))
        drawing.text((4, plot[1]), f"{10**high:.3g}", fill="black")
        drawing.text((4, plot[3] - 10), f"{10**low:.3g}", fill="black")
        drawing.text((plot[0], plot[3] + 8), f"step {step_low}", fill="black")
        drawing.text((plot[2] - 90, plot[3] + 8), f"step {step_high}", fill="black")
    drawing.text((width // 2 - 40, height - 16), "training loss (log scale)", fill="black")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
