"""`ip2n train`: train the conditional DiT on triplets; also the entry point of each torchrun process."""

from __future__ import annotations

from pathlib import Path

from ip2n.commands.common import UserError, add_threads_option, apply_threads


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train the editing model (DiT) on (source, edited, instruction) triplets",
        description=(
            "Train the conditional DiT as configured in a YAML/JSON file (see configs/ and "
            "docs/training.md). Writes checkpoint.pt, train.log, loss.png, sample grids samples/step_*.png "
            "(source | target | edited) and the EMA weights dit.safetensors (+ dit.json, usable by "
            "`ip2n edit`) into the output folder. For several GPUs or machines start it with "
            "torchrun: torchrun --nproc-per-node 4 -m ip2n.cli train --config ..."
        ),
    )
    parser.add_argument("--config", required=True, help="training config (.yaml, .yml or .json)")
    parser.add_argument(
        "-o",
        "--out",
        required=True,
        help="output folder (checkpoint, log, loss curve, sample grids, EMA weights)",
    )
    parser.add_argument("--data", help="triplet folder; overrides data.root of the config")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop (with a checkpoint) after N steps of this run, e.g. for a job time limit",
    )
    parser.add_argument(
        "--device", help="torch device (default: the local GPU if there is one, else the CPU)"
    )
    add_threads_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from ip2n.training import init_distributed, load_config, shutdown_distributed, train

    config_path = Path(args.config)
    if not config_path.is_file():
        raise UserError(
            f"config file not found: {config_path}; "
            "see configs/paper.yaml, configs/synthetic.yaml and configs/tiny.yaml"
        )
    if args.stop_after is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be at least 1, got {args.stop_after}")
    apply_threads(args.threads)
    config = load_config(config_path)
    if args.data:
        config = config.replace(data={"root": args.data})
    context = init_distributed(args.device)
    try:
        result = train(config, args.out, resume=args.resume, context=context, stop_after=args.stop_after)
    finally:
        shutdown_distributed(context)
    if context.is_main:
        print(result.ema_weights)
    return 0
