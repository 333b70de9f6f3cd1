"""`ip2n render`: render a W+ latent from chosen cameras, as an orbit video, or as a mesh.

Every latent `ip2n edit`, `ip2n demo` and the web app write is rendered with the generator it belongs
to: the result.json beside it records it (the built-in world's generator, or the EG3D generator of
the weights folder the edit used); `--weights` names another EG3D generator.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from ip2n.commands.common import (
    UserError,
    add_threads_option,
    apply_threads,
    bounded_float,
    bounded_int,
    generator_for_latent,
    load_latent,
    prepare_output_dir,
    write_result_json,
)
from ip2n.defaults import (
    DEFAULT_DENSITY_LEVEL,
    DEFAULT_FPS,
    DEFAULT_MESH_RESOLUTION,
    MESH_FORMATS,
    MIN_MESH_RESOLUTION,
)
from ip2n.export.video import VIDEO_FORMATS
from ip2n.limits import MAX_FPS, MAX_MESH_RESOLUTION, MAX_VIDEO_FRAMES


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "render",
        help="render a W+ latent (e.g. edited_latent.npy) from any camera, as an orbit video or a mesh",
        description=(
            "Render a W+ latent with its generator: the one the result.json beside it names (the built-in "
            "world's for latents of the built-in model, the EG3D generator of the weights an edit used), "
            "or --weights. Writes image.png (the final view: 512² for the released EG3D generator, 128² "
            "for the built-in world), image_raw.png (the neural render), depth.png and render.json into "
            "the output folder; --orbit writes a video instead of one view, --mesh a mesh. Angles are in "
            "degrees; yaw 0, pitch 0 is the frontal view."
        ),
    )
    parser.add_argument(
        "--weights",
        help="an EG3D generator: a weights folder, G_ema.pkl or generator.safetensors (default: the "
        "generator the latent's result.json names; the built-in world's for a latent of its width)",
    )
    parser.add_argument("--latent", required=True, help="W+ latent .npy of shape (14, 512) or (1, 14, 512)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument(
        "--yaw",
        type=bounded_float(-360.0, 360.0),
        default=0.0,
        help=(
            "yaw in degrees (positive: the camera moves right of the frontal view, towards the "
            "subject's left)"
        ),
    )
    parser.add_argument(
        "--pitch",
        type=bounded_float(-360.0, 360.0),
        default=0.0,
        help="pitch in degrees (positive: the camera moves down and looks up at the face)",
    )
    parser.add_argument(
        "--orbit",
        type=bounded_int(2, MAX_VIDEO_FRAMES),
        metavar="N",
        help=f"render an N-frame orbit video instead of one view (2 to {MAX_VIDEO_FRAMES})",
    )
    parser.add_argument(
        "--video-format", choices=VIDEO_FORMATS, default="mp4", help="orbit video format (default mp4)"
    )
    parser.add_argument(
        "--fps",
        type=bounded_int(1, MAX_FPS),
        default=DEFAULT_FPS,
        help=f"orbit video frame rate, 1 to {MAX_FPS} (default {DEFAULT_FPS})",
    )
    parser.add_argument("--raw", action="store_true", help="also save float image/depth arrays as .npy")
    add_mesh_options(parser)
    add_threads_option(parser)
    parser.set_defaults(run=run)


def add_mesh_options(
    parser,
    default_level: str = str(DEFAULT_DENSITY_LEVEL),
    default_resolution: int = DEFAULT_MESH_RESOLUTION,
    default_mesh: str | None = None,
) -> None:
    parser.add_argument(
        "--mesh",
        choices=MESH_FORMATS,
        default=default_mesh,
        help="also extract a mesh in this format"
        + (f" (default {default_mesh})" if default_mesh else " (default: none)"),
    )
    parser.add_argument(
        "--mesh-resolution",
        type=bounded_int(MIN_MESH_RESOLUTION, MAX_MESH_RESOLUTION),
        default=default_resolution,
        metavar="N",
        help=(
            f"density grid size N³, {MIN_MESH_RESOLUTION} to {MAX_MESH_RESOLUTION} "
            f"(default {default_resolution})"
        ),
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
    if args.mesh and args.mesh_resolution < 16:
        raise UserError(f"--mesh-resolution must be at least 16, got {args.mesh_resolution}")
    if args.mesh and args.mesh_level != "auto":
        try:
            finite = math.isfinite(float(args.mesh_level))
        except ValueError:
            finite = False
        if not finite:
            raise UserError(f"--mesh-level must be a number or 'auto', got {args.mesh_level!r}")
    # The latent and its generator are checked before the output folder is made: a refused latent
    # leaves nothing behind.
    latent = Path(args.latent)
    generator, generator_name = generator_for_latent(args.weights, latent)
    ws = load_latent(latent, generator.num_ws, generator.config.w_dim)
    out_path = Path(args.out)
    created = not out_path.exists()
    out_dir = prepare_output_dir(out_path)
    try:
        written = _render(generator, ws, out_dir, args, generator_name)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    for path in written:
        print(path)
    return 0


def _render(generator, ws, out_dir: Path, args, generator_name: str) -> list[Path]:
    from ip2n.scene import LatentScene

    scene = LatentScene(generator, ws)
    timings: dict[str, float] = {}
    written: list[Path] = []
    if args.orbit is not None:
        written.append(
            write_orbit(scene, out_dir / f"orbit.{args.video_format}", args.orbit, args.fps, timings)
        )
    else:
        written += write_view(scene, out_dir, args.yaw, args.pitch, args.raw, timings)
    if args.mesh:
        written.append(
            write_mesh(scene, out_dir / f"mesh.{args.mesh}", args.mesh_resolution, args.mesh_level, timings)
        )
    write_result_json(
        out_dir / "render.json",
        {
            "command": "render",
            "latent": str(args.latent),
            "weights": args.weights,
            "generator": generator_name,
            "yaw_degrees": args.yaw,
            "pitch_degrees": args.pitch,
            "orbit_frames": args.orbit,
            "seconds": timings,
            "files": [path.name for path in written],
        },
    )
    return [*written, out_dir / "render.json"]


def write_view(
    scene, out_dir: Path, yaw_deg: float, pitch_deg: float, raw: bool, timings: dict
) -> list[Path]:
    import numpy as np

    from ip2n.atomic import atomic_path
    from ip2n.export.images import depth_to_pil, save_image, to_pil

    start = time.perf_counter()
    outputs = scene.view(yaw_deg=yaw_deg, pitch_deg=pitch_deg)
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
