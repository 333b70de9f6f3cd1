"""Rendering benchmark: the EG3D generator stage by stage (full FFHQ-512 configuration by default).

Random weights are enough: the cost of every stage depends on sizes, not on values.
"""

from __future__ import annotations

import torch

from ip2n.bench.timing import StageTimer
from ip2n.checkpoints.generator_weights import random_generator
from ip2n.export.mesh import marching_cubes
from ip2n.rendering.cameras import camera_labels, frontal_camera
from ip2n.scene import LatentScene


def run_render_benchmark(
    preset_name: str = "ffhq512", orbit_frames: int = 60, grid_resolution: int = 256, repeats: int = 3
) -> StageTimer:
    timer = StageTimer()
    with timer.stage("build generator (random weights)"):
        generator = random_generator(preset_name, seed=0)
    config = generator.config
    with torch.inference_mode():
        ws = generator.mapping(
            torch.randn(1, config.z_dim, generator=torch.Generator().manual_seed(0)), frontal_camera()
        )
        camera = camera_labels(0.3, -0.1)

        # A cold first view: backbone + neural rendering + super-resolution, nothing cached.
        with timer.stage(f"first {config.img_resolution}² view (backbone + render + SR)"):
            planes = generator.synthesize_planes(ws)
            generator.render_planes(planes, ws, camera)
        with timer.stage("backbone (tri-planes)", repeats=repeats):
            for _ in range(repeats):
                planes = generator.synthesize_planes(ws)
        _divide_last(timer, repeats)
        for resolution in (config.neural_rendering_resolution, config.neural_rendering_resolution // 2):
            with timer.stage(f"neural rendering {resolution}²", repeats=repeats):
                for _ in range(repeats):
                    raw = generator.render_planes(
                        planes, ws, camera, neural_rendering_resolution=resolution, superresolution=False
                    )
            _divide_last(timer, repeats)
        raw = generator.render_planes(planes, ws, camera, superresolution=False)
        with timer.stage("super-resolution", repeats=repeats):
            for _ in range(repeats):
                features = raw["feature_image"].contiguous()  # as render_planes hands it over
                generator.superresolution(features[:, :3], features, ws, noise_mode=config.sr_noise_mode)
        _divide_last(timer, repeats)
        with timer.stage(f"additional {config.img_resolution}² view (tri-planes reused)", repeats=repeats):
            for _ in range(repeats):
                generator.render_planes(planes, ws, camera)
        _divide_last(timer, repeats)

    scene = LatentScene(generator, ws)
    with timer.stage(f"{orbit_frames}-frame orbit (incl. backbone once)"):
        scene.orbit_video_frames(orbit_frames, progress=True)
    with timer.stage(f"density grid {grid_resolution}³"):
        density = scene.density_grid(grid_resolution)
    with timer.stage("marching cubes + vertex colours"):
        level = float((density.min() + density.max()) / 2)
        vertices, _ = marching_cubes(density, config.rendering.box_warp, level)
        scene.vertex_colors(vertices)
    return timer


def _divide_last(timer: StageTimer, repeats: int) -> None:
    """Turn the last row's total into seconds per repetition."""
    row = timer.rows[-1]
    row["seconds"] = round(row["seconds"] / repeats, 3)
    row["stage"] += " (per call)"


__all__ = ["run_render_benchmark"]
