"""`ip2n render`: render a W+ latent from chosen cameras, as an orbit video, or as a mesh."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ip2n.commands.common import (
    UserError,
    add_threads_option,
    apply_threads,
    load_generator_or_builtin,
    load_latent,
    prepare_output_dir,
    write_result_json,
)
from ip2n.export.mesh import DEFAULT_DENSITY_LEVEL, MESH_FORMATS
from ip2n.export.video import VIDEO_FORMATS


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "render",
        help="render a W+ latent (e.g. edited_latent.npy) from any camera, as an orbit video or a mesh",
        description=(
            "Render a W+ latent with the EG3D generator. Writes image.png (final 512² view), "
            "image_raw.png (neural render), depth.png into the output folder; --orbit writes a video, "
            "--mesh a mesh. Angles are in degrees; yaw 0, pitch 0 is the frontal view."
        ),
    )
    parser.add_argument(
        "--weights",
        help="generator weights: a weights folder, G_ema.pkl or generator.safetensors "
        "(default: the built-in generator)",
    )
    parser.add_argument("--latent", required=True, help="W+ latent .npy of shape (14, 512) or (1, 14, 512)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument(
        "--yaw",
        type=float,
        default=0.0,
        help=(
            "yaw in degrees (positive: the camera moves right of the frontal view, towards the "
            "subject's left)"
        ),
    )
    parser.add_argument(
        "--pitch",
        type=float,
        default=0.0,
        help="pitch in degrees (positive: the camera moves down and looks up at the face)",
    )
    parser.add_argument(
        "--orbit", type=int, metavar="N", help="render an N-frame orbit video instead of one view"
    )
    parser.add_argument("--video-format", choices=VIDEO_FORMATS, default="mp4")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--raw", action="store_true", help="also save float image/depth arrays as .npy")
    add_mesh_options(parser)
    add_threads_option(parser)
    parser.set_defaults(run=run)


def add_mesh_options(parser, default_level: str = str(DEFAULT_DENSITY_LEVEL)) -> None:
    parser.add_argument("--mesh", choices=MESH_FORMATS, help="also extract a mesh in this format")
    parser.add_argument(
        "--mesh-resolution", type=int, default=256, metavar="N", help="density grid size N³ (default 256)"
    )
    parser.add_argument(
        "--mesh-level",
        default=default_level,
        help=(
            "density iso-level of the surface, or 'auto' for the middle of the density range "
            f"(default {default_level})"
        ),
    )


def run(args) -> int:
    apply_threads(args.threads)
    if args.orbit is not None and args.orbit < 2:
        raise UserError(f"--orbit needs at least 2 frames, got {args.orbit}")
    out_dir = prepare_output_dir(args.out)
    generator, builtin = load_generator_or_builtin(args.weights)
    ws = load_latent(args.latent, generator.num_ws, generator.config.w_dim)

    from ip2n.scene import LatentScene

    scene = LatentScene(generator, ws)
    timings: dict[str, float] = {}
    written: list[Path] = []
    if args.orbit is not None:
        written.append(
            write_orbit(scene, out_dir / f"orbit.{args.video_format}", args.orbit, args.fps, timings)
        )
    else:
        written += write_view(
            scene, out_dir, math.radians(args.yaw), math.radians(args.pitch), args.raw, timings
        )
    if args.mesh:
        written.append(
            write_mesh(scene, out_dir / f"mesh.{args.mesh}", args.mesh_resolution, args.mesh_level, timings)
        )
    write_result_json(
        out_dir / "render.json",
        {
            "command": "render",
            "latent": str(args.latent),
            "weights": args.weights or "built-in (random weights)",
            "yaw_degrees": args.yaw,
            "pitch_degrees": args.pitch,
            "orbit_frames": args.orbit,
            "seconds": timings,
            "files": [path.name for path in written],
        },
    )
    for path in written:
        print(path)
    return 0


def write_view(scene, out_dir: Path, yaw: float, pitch: float, raw: bool, timings: dict) -> list[Path]:
    import numpy as np

    from ip2n.atomic import atomic_path
    from ip2n.export.images import depth_to_pil, save_image, to_pil

    start = time.perf_counter()
    outputs = scene.view(yaw, pitch)
    timings["view"] = round(time.perf_counter() - start, 3)
    written = [out_dir / "image.png", out_dir / "image_raw.png", out_dir / "depth.png"]
    save_image(to_pil(outputs["image"][0]), written[0])
    save_image(to_pil(outputs["image_raw"][0]), written[1])
    save_image(depth_to_pil(outputs["image_depth"][0]), written[2])
    if raw:
        for name, key in (("image", "image"), ("image_raw", "image_raw"), ("depth", "image_depth")):
            path = out_dir / f"{name}.npy"
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.save(handle, outputs[key][0].numpy())
            written.append(path)
    return written


def write_orbit(scene, path: Path, n_frames: int, fps: int, timings: dict) -> Path:
    from ip2n.export.video import write_video

    start = time.perf_counter()
    frames = scene.orbit_video_frames(n_frames)
    timings["orbit"] = round(time.perf_counter() - start, 3)
    return write_video(frames, path, fps=fps)


def write_mesh(scene, path: Path, resolution: int, level: str, timings: dict) -> Path:
    from ip2n.export.mesh import marching_cubes, save_mesh

    if resolution < 16:
        raise UserError(f"--mesh-resolution must be at least 16, got {resolution}")
    start = time.perf_counter()
    density = scene.density_grid(resolution)
    if level == "auto":
        iso_level = float((density.min() + density.max()) / 2)
        print(f"mesh: density range [{density.min():.3g}, {density.max():.3g}], using level {iso_level:.3g}")
    else:
        try:
            iso_level = float(level)
        except ValueError:
            raise UserError(f"--mesh-level must be a number or 'auto', got {level!r}") from None
    vertices, faces = marching_cubes(density, scene.generator.config.rendering.box_warp, iso_level)
    colors = scene.vertex_colors(vertices)
    timings["mesh"] = round(time.perf_counter() - start, 3)
    timings["mesh_level"] = iso_level
    return save_mesh(path, vertices, faces, colors)
