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

from ip2n.commands.common import add_threads_option, apply_threads, prepare_output_dir
from ip2n.commands.render import add_mesh_options

DEMO_EXAMPLE = 0  # ip2n.builtin.EXAMPLES[0]: "put glasses on him and make him smile"


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="edit a head with the built-in model and write views, depth, orbit video, mesh",
        description=(
            "Run the main job on the built-in model (synthetic 3-D heads) and write everything into one "
            "folder."
        ),
    )
    parser.add_argument("-o", "--out", default="ip2n-demo", help="output folder (default: ./ip2n-demo)")
    parser.add_argument("-i", "--instruction", help="the instruction (default: the built-in example's)")
    parser.add_argument("--seed", type=int, default=0, help="diffusion noise seed (default 0)")
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

    from ip2n.atomic import write_text_atomic
    from ip2n.builtin import PRESET_NAME, example_heads, render_portrait
    from ip2n.export.images import save_image
    from ip2n.pipeline import EditPipeline
    from ip2n.synthetic.attributes import ATTRIBUTE_NAMES, hidden_attributes
    from ip2n.synthetic.generator import SyntheticHeadGenerator
    from ip2n.synthetic.latent import attributes_of, decode

    identity, source_attributes, instruction = example_heads()[DEMO_EXAMPLE]
    instruction = args.instruction or instruction
    portrait = render_portrait(identity, source_attributes, yaw_degrees=15.0)
    save_image(portrait, out_dir / "input.png")
    pipeline = EditPipeline.from_preset(PRESET_NAME)
    print(f'ip2n demo: built-in model ({pipeline.model_name}); editing input.png with "{instruction}"')
    result = pipeline(portrait, instruction, generator=torch.Generator().manual_seed(args.seed))
    written = result.save(
        out_dir,
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
