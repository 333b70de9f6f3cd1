"""`ip2n data make`: the triplet data factory (docs/data_factory.md).

Only argparse and the shared helpers are imported here; the factory (torch, and Ray, diffusers,
transformers when asked for) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import re

from ip2n.commands.common import UserError, add_threads_option, apply_threads, bounded_float, bounded_int

logger = logging.getLogger("ip2n")

FILTER_NAMES = ("degenerate", "change", "identity", "clip", "face")


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "data",
        help="make training data: (source, edited, instructions) triplets in the official layout",
        description="Data sets for `ip2n train` (docs/data_factory.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = actions.add_parser(
        "make",
        help="edit photos (or heads of the synthetic world) into filtered triplets, resumably",
        description=(
            "Make triplets as InstructPix2NeRF's training data was made: align each source (photos) or "
            "render it (--world-heads), edit it with a 2-D editor (several seeds), keep the best edit that "
            "passes the filters (identity kept, visible change, CLIP direction, face still there, not "
            "degenerate), and write the official layout (NAME/NAME_0.png, NAME_1.png, NAME.txt with "
            "20-30 instructions, dataset.json camera labels) with manifest.jsonl (every pair, accepted or "
            "rejected and why) and report.md. Rerun the same command to resume."
        ),
    )
    make.add_argument("sources", nargs="*", metavar="SOURCES", help="folders of photos and/or image files")
    make.add_argument(
        "-o", "--out", required=True, metavar="OUT", help="output folder (new, or one to resume)"
    )
    make.add_argument(
        "--editor",
        choices=("world", "ip2p"),
        required=True,
        help="world: the synthetic world's exact attribute edits (no weights needed; with --world-heads); "
        "ip2p: InstructPix2Pix (--ip2p-weights, --instructions)",
    )
    make.add_argument(
        "--world-heads",
        type=bounded_int(1, 10_000_000),
        metavar="N",
        help="use N rendered heads of the synthetic world as sources instead of photos",
    )
    make.add_argument(
        "--world-size",
        type=bounded_int(32, 1024),
        default=128,
        metavar="PX",
        help="image size of the world's heads, even (default 128, as the built-in model's)",
    )
    make.add_argument(
        "--seed", type=int, default=0, help="run seed: heads, edits, editor seeds, wordings (default 0)"
    )
    make.add_argument(
        "--instructions",
        metavar="FILE",
        help="edits for the ip2p editor, one per line: plain English, or attribute=value for the world's "
        "attributes (e.g. eyeglasses=true); # starts a comment; no blank or repeated lines",
    )
    make.add_argument(
        "--edits-per-source",
        type=bounded_int(1, 1000),
        default=1,
        metavar="K",
        help="pairs made from each source, with K different edits (default 1)",
    )
    make.add_argument(
        "--phrasings",
        default="20-30",
        metavar="MIN-MAX",
        help="instructions written per pair, drawn from the edit's phrasings (default 20-30, the paper's)",
    )
    make.add_argument(
        "--paraphraser",
        metavar="MODEL_DIR",
        help="a local instruction-tuned language model (transformers) that paraphrases each edit; "
        "the grammar tops its paraphrases up",
    )
    ip2p = make.add_argument_group("the ip2p editor")
    ip2p.add_argument(
        "--ip2p-weights",
        metavar="DIR_OR_ID",
        help="InstructPix2Pix in diffusers' format: a local folder, or a Hugging Face id "
        "(e.g. timbrooks/instruct-pix2pix, downloaded by diffusers)",
    )
    ip2p.add_argument(
        "--seeds-per-pair",
        type=bounded_int(1, 100),
        default=3,
        metavar="K",
        help="candidates per pair (default 3)",
    )
    ip2p.add_argument("--steps", type=bounded_int(1, 1000), default=50, help="denoising steps (default 50)")
    ip2p.add_argument(
        "--cfg-text", type=bounded_float(0.0, 100.0), default=7.5, help="text guidance scale (default 7.5)"
    )
    ip2p.add_argument(
        "--cfg-image", type=bounded_float(0.0, 100.0), default=1.5, help="image guidance scale (default 1.5)"
    )
    ip2p.add_argument(
        "--resolution",
        type=bounded_int(64, 2048),
        default=512,
        metavar="PX",
        help="side of the aligned crops the editor sees and the pairs are saved at, a multiple of 8 "
        "(default 512)",
    )
    filters = make.add_argument_group("filters")
    filters.add_argument(
        "--identity-weights",
        metavar="DIR",
        help="ArcFace IR-SE50 (model_ir_se50.pth or a converted identity.safetensors) for the identity "
        "filter on photos (default for world heads: the world's own identity network)",
    )
    filters.add_argument(
        "--min-identity",
        type=bounded_float(-1.0, 1.0),
        default=0.5,
        metavar="COS",
        help="keep edits whose identity cosine to the source is at least this (default 0.5)",
    )
    filters.add_argument(
        "--min-change",
        type=bounded_float(0.0, 1.0),
        default=0.001,
        metavar="D",
        help="keep edits whose mean absolute pixel change (0-1) is at least this (default 0.001)",
    )
    filters.add_argument(
        "--clip-model", metavar="NAME", help="open_clip model for the CLIP filter, e.g. ViT-B-32"
    )
    filters.add_argument(
        "--clip-pretrained",
        metavar="TAG_OR_FILE",
        help="its weights: a local file, or an open_clip tag whose weights are already cached",
    )
    filters.add_argument(
        "--min-clip",
        type=bounded_float(-1.0, 1.0),
        default=0.05,
        metavar="S",
        help="keep edits whose CLIP directional similarity is at least this (default 0.05)",
    )
    filters.add_argument(
        "--skip-filter",
        action="append",
        default=[],
        choices=FILTER_NAMES,
        help="switch a filter off (repeatable)",
    )
    run_group = make.add_argument_group("running")
    run_group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the stages as a Ray Data pipeline: a local Ray (no ADDRESS) or a cluster's address",
    )
    run_group.add_argument(
        "--ray-edit-actors",
        type=bounded_int(1, 10_000),
        metavar="N",
        help="editor actors on Ray (default: the cluster's CPUs minus one; with CUDA one GPU each)",
    )
    run_group.add_argument(
        "--device", default="cpu", help="torch device of the editor and filters (default cpu)"
    )
    add_threads_option(run_group)
    make.set_defaults(run=run_make)


def _phrasing_range(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise UserError(f"--phrasings takes MIN-MAX (e.g. 20-30) or one number, got {text!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 1 <= low <= high <= 1000:
        raise UserError(f"--phrasings needs 1 ≤ MIN ≤ MAX ≤ 1000, got {text!r}")
    return low, high


def run_make(args: argparse.Namespace) -> int:
    from ip2n.factory import FactorySettings, make_dataset
    from ip2n.factory.phrasing import read_instruction_file

    apply_threads(args.threads)
    low, high = _phrasing_range(args.phrasings)
    if args.sources and args.world_heads:
        raise UserError("give either SOURCES (photos) or --world-heads N, not both")
    if not args.sources and not args.world_heads:
        raise UserError("no sources: name folders or files of photos, or use --world-heads N")
    if args.clip_model and not args.clip_pretrained:
        raise UserError(
            "--clip-model needs --clip-pretrained (a local weights file, or an open_clip tag whose "
            "weights are cached): a CLIP model with random weights would filter at random"
        )
    edits = read_instruction_file(args.instructions) if args.instructions else None
    settings = FactorySettings(
        editor=args.editor,
        seed=args.seed,
        world_heads=args.world_heads or 0,
        world_size=args.world_size,
        edits_per_source=args.edits_per_source,
        ip2p_weights=args.ip2p_weights,
        seeds_per_pair=args.seeds_per_pair,
        steps=args.steps,
        text_guidance=args.cfg_text,
        image_guidance=args.cfg_image,
        resolution=args.resolution,
        min_phrasings=low,
        max_phrasings=high,
        min_identity=args.min_identity,
        min_change=args.min_change,
        min_clip_direction=args.min_clip,
        skip_filters=tuple(args.skip_filter),
        identity_weights=args.identity_weights,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
        paraphraser=args.paraphraser,
        device=args.device,
    )
    if settings.filter_enabled("clip") and not settings.clip_model:
        logger.warning("no --clip-model: the CLIP filter (does the edit follow the instruction?) is skipped")
    try:
        result = make_dataset(
            args.out,
            settings,
            sources=args.sources or None,
            edits=edits,
            ray_address=args.ray,
            ray_edit_actors=args.ray_edit_actors,
            progress=True,
        )
    except ImportError as exc:
        raise UserError(str(exc)) from None
    reasons = ", ".join(f"{count} {reason}" for reason, count in result.reasons.most_common()) or "none"
    print(
        f"{result.out}: {result.accepted} pairs accepted, {result.rejected} rejected (reasons: {reasons}); "
        f"{result.made} made now, {result.skipped} already done; report: {result.report}"
    )
    return 0
