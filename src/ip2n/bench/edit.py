"""Whole-pipeline benchmark: one `ip2n edit` worth of work with full-size random weights.

Loads a converted weights folder (generator + DiT + text + PREIM3D + IR-SE50, written to a
temporary folder first), edits one portrait with the paper's settings, renders one 512² view of the
result, then a 60-frame orbit. The measured part runs in a fresh process, whose peak resident set
is the pipeline's memory.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ip2n.bench.editing import write_random_editing_weights
from ip2n.bench.timing import StageTimer, file_backed_rss_mb, peak_rss_mb
from ip2n.checkpoints.generator_weights import CONVERTED_NAME, KIND, random_generator
from ip2n.checkpoints.safetensors_io import save_weights
from ip2n.pipeline.edit import EditPipeline


def _portrait_stand_in(size: int = 512) -> Image.Image:
    """A smooth synthetic image: the cost of an edit does not depend on the picture."""
    y, x = np.mgrid[0:size, 0:size] / size
    pixels = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x * y)], axis=-1)
    return Image.fromarray((pixels * 255).astype(np.uint8))


def run_edit_benchmark(orbit_frames: int = 60, image_path: str | None = None) -> StageTimer:
    timer = StageTimer()
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="ip2n-bench-") as tmp:
        weights_dir = Path(tmp)
        write_random_editing_weights(weights_dir, generator, timer)
        eg3d = random_generator("ffhq512", seed=0)
        save_weights(
            weights_dir / CONVERTED_NAME, eg3d.state_dict(), {"kind": KIND, "config": eg3d.config.to_dict()}
        )
        del eg3d
        # A fresh process, so that its peak memory is the pipeline's alone (not the random init's).
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            rows = pool.apply(
                _measure_pipeline, (str(weights_dir), orbit_frames, image_path, torch.get_num_threads())
            )
        timer.rows.extend(rows)
    return timer


def _measure_pipeline(
    weights_dir: str, orbit_frames: int, image_path: str | None, threads: int
) -> list[dict]:
    torch.set_num_threads(threads)
    timer = StageTimer()
    image = Image.open(image_path).convert("RGB") if image_path else _portrait_stand_in()
    with timer.stage("load pipeline from converted weights (incl. latent_avg, empty prompt's text)"):
        pipeline = EditPipeline.from_weights(weights_dir)
    # Cold: the first edit of the process; the empty prompt was encoded while loading (above).
    _edit_and_view(pipeline, image, "put glasses on her", 1, timer, "first edit")
    # Warm: what every further edit of a running process (batch, web app) costs.
    result = _edit_and_view(pipeline, image, "put glasses on her and make her smile", 2, timer, "next edit")
    if orbit_frames:
        with timer.stage(f"{orbit_frames}-frame orbit of the edit (tri-planes reused)"):
            result.scene("edited").orbit_video_frames(orbit_frames, progress=False)
    mapped = file_backed_rss_mb()
    if mapped is not None:  # how much of the resident memory is the memory-mapped weight files
        timer.rows.append(
            {
                "stage": "resident now: memory-mapped files (weights, libraries)",
                "seconds": 0.0,
                "peak_rss_mb": round(mapped),
            }
        )
    return timer.rows


def _edit_and_view(
    pipeline: EditPipeline, image: Image.Image, instruction: str, seed: int, timer: StageTimer, label: str
):
    start = time.perf_counter()
    with timer.stage(f"{label}: encode + text + 15-step guided DDIM"):
        result = pipeline(image, instruction, generator=torch.Generator().manual_seed(seed))
    for key in ("encode", "text", "diffusion"):
        timer.rows.append(
            {
                "stage": f"{label}:   of which {key}",
                "seconds": round(result.timings[key], 3),
                "peak_rss_mb": round(peak_rss_mb()),
            }
        )
    with timer.stage(f"{label}: one 512² view (tri-planes + render + SR)"):
        result.view()
    timer.rows.append(
        {
            "stage": f"{label}: edit + one view",
            "seconds": round(time.perf_counter() - start, 3),
            "peak_rss_mb": round(peak_rss_mb()),
        }
    )
    return result
