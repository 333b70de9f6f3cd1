"""`ip2n synth`: the synthetic 3-D heads world (issue 5). `ip2n synth data` writes triplet data."""

from __future__ import annotations

from ip2n.commands.common import UserError, add_threads_option, apply_threads, prepare_output_dir


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "synth",
        help="the synthetic 3-D heads world: write triplet training data",
        description="Procedural 3-D heads with known identity and attributes (docs/synthetic_world.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    data = actions.add_parser(
        "data",
        help="write (source, edited, instructions) triplets in the official layout",
        description=(
            "Render random synthetic heads before and after 1-3 attribute edits, with paraphrased "
            "instructions, into OUT: one folder per pair (NAME_0.png, NAME_1.png, NAME.txt), "
            "dataset.json (EG3D camera labels) and truth.jsonl (ground truth). Same seed, same files."
        ),
    )
    data.add_argument("--out", required=True, help="output folder")
    data.add_argument("--pairs", type=int, required=True, metavar="N", help="number of image pairs")
    data.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    data.add_argument("--size", type=int, default=128, help="image size in pixels, even, at least 32 (default 128)")
    data.add_argument("--instructions", type=int, default=20, metavar="K", help="instructions per pair (default 20)")
    add_threads_option(data)
    data.set_defaults(run=run_data)


def run_data(args) -> int:
    apply_threads(args.threads)
    if args.pairs < 1:
        raise UserError(f"--pairs must be at least 1, got {args.pairs}")
    if args.size < 32 or args.size % 2:
        raise UserError(f"--size must be an even number of at least 32, got {args.size}")
    if args.instructions < 1:
        raise UserError(f"--instructions must be at least 1, got {args.instructions}")
    out_dir = prepare_output_dir(args.out)

    import dataclasses

    from ip2n.synthetic.data import write_triplets
    from ip2n.synthetic.generator import SyntheticHeadGenerator, SyntheticHeadsConfig

    # The neural render runs at half the image size; the image is its bilinear enlargement.
    config = dataclasses.replace(SyntheticHeadsConfig(), img_resolution=args.size, neural_rendering_resolution=args.size // 2)
    write_triplets(out_dir, args.pairs, model=SyntheticHeadGenerator(config), seed=args.seed,
                   instructions_per_pair=args.instructions)
    print(out_dir / "dataset.json")
    return 0
