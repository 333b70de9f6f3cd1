"""`ip2n demo`: the main job on the built-in model, with nothing to download or prepare.

Until the trained synthetic-world model ships, the built-in model is the EG3D generator with seeded
random weights: the demo exercises the whole rendering stack (tri-planes once, views, depth, orbit
video, mesh) and says plainly that the pictures are not faces.
"""

from __future__ import annotations

import math
import time

from ip2n.commands.common import add_threads_option, apply_threads, prepare_output_dir, save_latent, write_result_json
from ip2n.commands.render import add_mesh_options, write_mesh, write_orbit


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="render a portrait latent with the built-in model: views, depth, orbit video, mesh",
        description="Run the main job on the built-in model and write everything into one folder.",
    )
    parser.add_argument("-o", "--out", default="ip2n-demo", help="output folder (default: ./ip2n-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent")
    parser.add_argument("--views", type=int, default=4, help="views in views.png (yaw −30° … 30°)")
    parser.add_argument("--frames", type=int, default=24, help="orbit video frames (0: no video)")
    parser.add_argument("--video-format", choices=("mp4", "gif"), default="mp4")
    add_mesh_options(parser, default_level="auto")
    parser.set_defaults(mesh="ply", mesh_resolution=128)
    add_threads_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    apply_threads(args.threads)
    out_dir = prepare_output_dir(args.out)
    import torch

    from ip2n.checkpoints.generator_weights import random_generator
    from ip2n.export.images import depth_to_pil, make_grid, save_image, to_pil
    from ip2n.rendering.cameras import camera_labels, frontal_camera
    from ip2n.scene import LatentScene

    print("ip2n demo: built-in EG3D generator with seeded random weights (no trained model ships yet), "
          "so expect abstract colours, not a face")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    generator = random_generator("ffhq512", seed=0)
    timings["build_generator"] = round(time.perf_counter() - start, 3)
    z = torch.randn(1, generator.config.z_dim, generator=torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        ws = generator.mapping(z, frontal_camera(), truncation_psi=0.7)
    scene = LatentScene(generator, ws)

    start = time.perf_counter()
    frontal = scene.view(0.0, 0.0)
    timings["first_view"] = round(time.perf_counter() - start, 3)
    written = [out_dir / "frontal.png", out_dir / "depth.png", out_dir / "latent.npy"]
    save_image(to_pil(frontal["image"][0]), written[0])
    save_image(depth_to_pil(frontal["image_depth"][0]), written[1])
    save_latent(written[2], ws)

    if args.views > 0:
        yaws = torch.linspace(-math.radians(30), math.radians(30), args.views) if args.views > 1 else torch.zeros(1)
        start = time.perf_counter()
        views = scene.render(camera_labels(yaws, torch.zeros_like(yaws)), progress=True)
        timings["views"] = round(time.perf_counter() - start, 3)
        written.append(out_dir / "views.png")
        save_image(make_grid([to_pil(image) for image in views["image"]], columns=args.views), written[-1])
    if args.frames > 1:
        written.append(write_orbit(scene, out_dir / f"orbit.{args.video_format}", args.frames, 24, timings))
    if args.mesh:
        written.append(write_mesh(scene, out_dir / f"mesh.{args.mesh}", args.mesh_resolution, args.mesh_level, timings))
    write_result_json(out_dir / "result.json", {
        "command": "demo", "model": "built-in EG3D ffhq512 architecture, seeded random weights",
        "seed": args.seed, "seconds": timings, "files": [path.name for path in written],
    })
    for path in written:
        print(path)
    return 0
