"""`ip2n demo`: the main job on the built-in model, with nothing to download or prepare.

The built-in model is the synthetic 3-D heads world (docs/synthetic_world.md). Until its trained
editor ships, the demo applies the edit "put on glasses and smile" exactly, in the world's
ground-truth latent space, and renders the result like `ip2n edit` does: source and edited views,
a multi-view grid, depth, an orbit video and a mesh. It says so plainly.
"""

from __future__ import annotations

import math
import time

from ip2n.commands.common import add_threads_option, apply_threads, prepare_output_dir, save_latent, write_result_json
from ip2n.commands.render import add_mesh_options, write_mesh, write_orbit

DEMO_EDIT = {"eyeglasses": True, "smile": True}
DEMO_INSTRUCTION = "put glasses on and smile"
# The source head is drawn at random but without what the edit adds, so the change is visible.
DEMO_SOURCE_OVERRIDES = {"eyeglasses": False, "smile": False, "mouth_open": False}


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="edit a head of the built-in synthetic 3-D world and write views, depth, orbit video, mesh",
        description="Run the main job on the built-in model and write everything into one folder.",
    )
    parser.add_argument("-o", "--out", default="ip2n-demo", help="output folder (default: ./ip2n-demo)")
    parser.add_argument("--seed", type=int, default=0, help="which random head (identity and attributes)")
    parser.add_argument("--views", type=int, default=4, help="views in views.png (yaw −30° … 30°)")
    parser.add_argument("--frames", type=int, default=48, help="orbit video frames (0: no video)")
    parser.add_argument("--video-format", choices=("mp4", "gif"), default="mp4")
    add_mesh_options(parser, default_level="auto")
    parser.set_defaults(mesh="ply", mesh_resolution=192)
    add_threads_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    apply_threads(args.threads)
    out_dir = prepare_output_dir(args.out)
    import torch

    from ip2n.export.images import depth_to_pil, make_grid, save_image, to_pil
    from ip2n.rendering.cameras import camera_labels
    from ip2n.scene import LatentScene
    from ip2n.synthetic.attributes import sample_attributes, sample_identity
    from ip2n.synthetic.generator import SyntheticHeadGenerator, synthetic_preset

    print(f"ip2n demo: a head of the built-in synthetic 3-D world (seed {args.seed}), edited with "
          f"\"{DEMO_INSTRUCTION}\". The trained built-in editor does not ship yet, so this edit is applied "
          "exactly in the world's ground-truth latent space; `ip2n edit --weights` runs the learned editor.")
    timings: dict[str, float] = {}
    generator = SyntheticHeadGenerator(synthetic_preset("synthetic")).eval()
    random = torch.Generator().manual_seed(args.seed)
    identity = sample_identity(1, random)
    source_attributes = {**sample_attributes(random), **DEMO_SOURCE_OVERRIDES}
    edited_attributes = {**source_attributes, **DEMO_EDIT}
    with torch.inference_mode():
        source_ws = generator.encode_heads(identity, [source_attributes])
        edited_ws = generator.encode_heads(identity, [edited_attributes])
    source, edited = LatentScene(generator, source_ws), LatentScene(generator, edited_ws)

    start = time.perf_counter()
    source_view, edited_view = source.view(0.0, 0.0), edited.view(0.0, 0.0)
    timings["source_and_edited_views"] = round(time.perf_counter() - start, 3)
    written = [out_dir / name for name in ("source.png", "edited.png", "depth.png", "source_latent.npy",
                                           "edited_latent.npy")]
    save_image(to_pil(source_view["image"][0]), written[0])
    save_image(to_pil(edited_view["image"][0]), written[1])
    save_image(depth_to_pil(edited_view["image_depth"][0]), written[2])
    save_latent(written[3], source_ws)
    save_latent(written[4], edited_ws)

    if args.views > 0:
        yaws = torch.linspace(-math.radians(30), math.radians(30), args.views) if args.views > 1 else torch.zeros(1)
        start = time.perf_counter()
        views = edited.render(camera_labels(yaws, torch.zeros_like(yaws)), progress=True)
        timings["views"] = round(time.perf_counter() - start, 3)
        written.append(out_dir / "views.png")
        save_image(make_grid([to_pil(image) for image in views["image"]], columns=args.views), written[-1])
    if args.frames > 1:
        written.append(write_orbit(edited, out_dir / f"orbit.{args.video_format}", args.frames, 24, timings))
    if args.mesh:
        written.append(write_mesh(edited, out_dir / f"mesh.{args.mesh}", args.mesh_resolution, args.mesh_level, timings))
    write_result_json(out_dir / "result.json", {
        "command": "demo", "model": "built-in synthetic 3-D heads world (procedural generator)",
        "edit": "ground truth in the world's latent space (the trained editor does not ship yet)",
        "instruction": DEMO_INSTRUCTION, "seed": args.seed,
        "source_attributes": source_attributes, "edited_attributes": edited_attributes,
        "seconds": timings, "files": [path.name for path in written],
    })
    for path in written:
        print(path)
    return 0
