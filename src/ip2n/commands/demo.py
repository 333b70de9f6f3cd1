"""`ip2n demo`: the main job on the built-in model, with nothing to download or prepare.

The built-in model is the synthetic 3-D heads world (docs/synthetic_world.md): its encoder, text
encoder, identity network and DiT were trained by `ip2n synth train-all` and ship inside the
package. The demo renders one of the world's heads as the input portrait, edits it with an
instruction through `EditPipeline` (exactly what `ip2n edit` runs), writes the usual result files
(views, depth, orbit video, mesh), and — because the world knows the truth — says whether the
edit reached its target and left everything else alone.
"""

from __future__ import annotations

import json
import math

from ip2n.commands.common import UserError, add_threads_option, apply_threads, bounded_int, prepare_output_dir
from ip2n.commands.render import add_mesh_options
from ip2n.defaults import DEMO_MESH_RESOLUTION, DEMO_ORBIT_FRAMES, DEMO_VIEWS
from ip2n.export.video import VIDEO_FORMATS
from ip2n.limits import MAX_SEED, MAX_VIDEO_FRAMES, MAX_VIEWS

DEMO_EXAMPLE = 0  # ip2n.builtin.EXAMPLES[0]: "put glasses on him and make him smile"
DEMO_YAW_DEG = 15.0  # the input head's view


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="edit a head with the built-in model and write views, depth, orbit video, mesh",
        description=(
            "Run the main job on the built-in model (synthetic 3-D heads): render a head of its world "
            "(input.png, marked as such: `ip2n edit` without --weights edits it), edit it and write "
            "everything into one folder, with truth.json (what the edit changed, read from the latent)."
        ),
    )
    parser.add_argument("-o", "--out", default="ip2n-demo", help="output folder (default: ./ip2n-demo)")
    parser.add_argument(
        "-i",
        "--instruction",
        help="the instruction (default: the built-in example's; `ip2n models` lists what it understands)",
    )
    parser.add_argument(
        "--any-instruction",
        action="store_true",
        help="run an instruction that names none of the built-in model's attributes too",
    )
    parser.add_argument(
        "--seed", type=bounded_int(0, MAX_SEED), default=0, help="diffusion noise seed (default 0)"
    )
    parser.add_argument(
        "--views",
        type=bounded_int(0, MAX_VIEWS),
        default=DEMO_VIEWS,
        help=f"views in views.png, yaw −30° … 30° (default {DEMO_VIEWS})",
    )
    parser.add_argument(
        "--frames",
        type=bounded_int(0, MAX_VIDEO_FRAMES),
        default=DEMO_ORBIT_FRAMES,
        help=f"orbit video frames (default {DEMO_ORBIT_FRAMES}; 0 or 1: no video)",
    )
    parser.add_argument(
        "--video-format", choices=VIDEO_FORMATS, default="mp4", help="orbit video format (default mp4)"
    )
    add_mesh_options(
        parser, default_level="auto", default_resolution=DEMO_MESH_RESOLUTION, default_mesh="ply"
    )
    add_threads_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    apply_threads(args.threads)
    from ip2n.pipeline.inputs import check_instructions
    from ip2n.pipeline.scope import check_known_instructions

    if args.instruction is not None:  # checked before anything is written
        check_instructions(args.instruction)
        if not args.any_instruction:
            check_known_instructions([args.instruction])
    if args.mesh and not _is_level(args.mesh_level):
        raise UserError(f"--mesh-level must be a number or 'auto', got {args.mesh_level!r}")
    out_dir = prepare_output_dir(args.out)
    import torch

    from ip2n.atomic import write_text_atomic
    from ip2n.builtin import EXAMPLES, PRESET_NAME, example_heads, render_portrait
    from ip2n.export.images import save_image
    from ip2n.pipeline import EditPipeline
    from ip2n.synthetic.world.attributes import ATTRIBUTE_NAMES, hidden_attributes
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator
    from ip2n.synthetic.world.latent import attributes_of, decode

    identity, source_attributes, instruction = example_heads()[DEMO_EXAMPLE]
    instruction = args.instruction or instruction
    seed = EXAMPLES[DEMO_EXAMPLE][0]
    portrait = render_portrait(identity, source_attributes, yaw_deg=DEMO_YAW_DEG, seed=seed)
    save_image(portrait, out_dir / "input.png")
    pipeline = EditPipeline.from_preset(PRESET_NAME, progress=True)
    print(f'ip2n demo: built-in model ({pipeline.model_name}); editing input.png with "{instruction}"')
    result = pipeline(
        portrait,
        instruction,
        generator=torch.Generator().manual_seed(args.seed),
        allow_any_instruction=args.any_instruction,
        progress=True,
    )
    written = result.save(
        out_dir,
        progress=True,
        views=args.views,
        video=args.frames > 1,
        video_frames=max(args.frames, 2),
        video_format=args.video_format,
        mesh=args.mesh,
        mesh_resolution=args.mesh_resolution,
        mesh_level=args.mesh_level,
        metadata={"command": "demo", "input": "input.png"},
    )
    # The world's latent decodes exactly into attributes: compare the edit with the head it started from.
    assert isinstance(pipeline.generator, SyntheticHeadGenerator)  # the built-in model's world
    bases = pipeline.generator.backbone.bases
    edited = attributes_of(decode(result.edited_latent, bases))[0]
    shown = [name for name in ATTRIBUTE_NAMES if name not in hidden_attributes(edited)]
    changes = {
        name: {"from": source_attributes[name], "to": edited[name]}
        for name in shown
        if edited[name] != source_attributes[name]
    }
    write_text_atomic(
        out_dir / "truth.json",
        json.dumps(
            {
                "instruction": instruction,
                "source_attributes": source_attributes,
                "edited_attributes": edited,
                "changed": changes,
            },
            indent=2,
        )
        + "\n",
    )
    print(
        "what changed (read from the edited latent): "
        + (", ".join(f"{name} {c['from']} → {c['to']}" for name, c in changes.items()) or "nothing")
    )
    print(f"timings (s): {json.dumps(result.timings)}")
    for path in [out_dir / "input.png", *written, out_dir / "truth.json"]:
        print(path)
    return 0


def _is_level(text: str) -> bool:
    try:
        return text == "auto" or math.isfinite(float(text))
    except ValueError:
        return False
