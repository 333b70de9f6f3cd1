"""`ip2n models`: the models ip2n can edit with, and what each of them understands."""

from __future__ import annotations

import textwrap

from ip2n.defaults import DEFAULT_IMAGE_SCALE, DEFAULT_STEPS, DEFAULT_STRENGTH, DEFAULT_TEXT_SCALE


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "models",
        help="list the models (the built-in one, official weights) and what each understands",
        description=(
            "List the models ip2n edits with: the built-in model of the synthetic 3-D heads world (used "
            "without --weights) with the pictures it edits, its attributes and example wordings; and the "
            "official InstructPix2NeRF weights, which ip2n loads from a folder given with --weights."
        ),
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    print(describe_models())
    return 0


def describe_models(width: int = 100) -> str:
    from ip2n.builtin import EXAMPLES, builtin_edit_default_values
    from ip2n.pipeline.edit import DEFAULT_PRESET, MODEL_PRESETS
    from ip2n.pipeline.scope import OFFICIAL_FILES_SOURCE
    from ip2n.synthetic.world.vocabulary import summary

    def paragraph(text: str, indent: str = "  ") -> str:
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent + "  ")

    builtin = builtin_edit_default_values()
    lines = []
    for name in MODEL_PRESETS:
        default = " — the default without --weights" if name == DEFAULT_PRESET else ""
        lines += [
            f"{name} (built in, --model {name}){default}",
            paragraph(
                "The whole method (encoder, text tower, identity network, conditional DiT) trained on the "
                "synthetic 3-D heads world (docs/synthetic_world.md); it ships inside the package."
            ),
            paragraph(
                "Pictures: heads of its world only — the images `ip2n demo`, `ip2n synth sample -o FILE`, "
                "`ip2n synth data` and the web app's examples write, and its own results (they carry the "
                "world's ip2n-world mark). A photo is refused: the model would turn it into an unrelated "
                "synthetic head (--any-image runs it anyway)."
            ),
            paragraph(
                "Instructions: it changes these attributes of its heads, and understands the words of its "
                "training phrasings; an instruction that names none of them is refused (--any-instruction "
                "runs it anyway):"
            ),
            *(paragraph(line, "    ") for line in summary().splitlines()),
            paragraph(
                "Several changes in one sentence work (“"
                + EXAMPLES[0][1]
                + "”). Sampling: "
                + _sampling(builtin)
                + "."
            ),
            "",
        ]
    lines += [
        "official InstructPix2NeRF weights (not built in: --weights DIR)",
        paragraph(
            f"The released models of the paper: {OFFICIAL_FILES_SOURCE}. `ip2n weights check DIR` "
            "says what a folder holds."
        ),
        paragraph(
            "Pictures: portrait photos — FFHQ-style square crops, or any photo with --align, which finds, "
            "crops and aligns the face. Instructions: free English, read by OpenCLIP's ViT-H-14 text "
            "encoder (77 tokens at most), as in the paper (e.g. “make her smile and give her "
            "glasses”)."
        ),
        paragraph("Sampling: " + _sampling({}) + " (the paper's)."),
    ]
    return "\n".join(lines)


def _sampling(values: dict) -> str:
    return (
        f"{values.get('num_inference_steps', DEFAULT_STEPS)} steps, strength "
        f"{values.get('strength', DEFAULT_STRENGTH):g}, text guidance "
        f"{values.get('guidance_scale', DEFAULT_TEXT_SCALE):g}, image guidance "
        f"{values.get('image_guidance_scale', DEFAULT_IMAGE_SCALE):g}"
    )
