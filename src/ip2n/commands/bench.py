"""`ip2n bench`: measured seconds and peak memory on this machine (figures, not assertions)."""

from __future__ import annotations

import json
import platform

from ip2n.atomic import write_text_atomic
from ip2n.commands.common import UserError, add_threads_option, apply_threads, bounded_int
from ip2n.defaults import MIN_MESH_RESOLUTION
from ip2n.limits import MAX_MESH_RESOLUTION, MAX_VIDEO_FRAMES

# The reference machine's figures (docs/results.md) are measured on 2 threads.
BENCH_THREADS = 2


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "bench", help="benchmark rendering, editing and training on this machine (random weights)"
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    render = targets.add_parser(
        "render", help="EG3D generator: backbone, rendering, SR, views, orbit, mesh grid"
    )
    render.add_argument("--preset", default="ffhq512", help="generator preset (default ffhq512)")
    render.add_argument(
        "--frames", type=bounded_int(0, MAX_VIDEO_FRAMES), default=60, help="orbit frames (default 60)"
    )
    render.add_argument(
        "--grid",
        type=bounded_int(MIN_MESH_RESOLUTION, MAX_MESH_RESOLUTION),
        default=256,
        help="density grid resolution (default 256)",
    )
    render.add_argument("--json", help="also write the figures to this JSON file")
    add_threads_option(render, default=BENCH_THREADS)
    render.set_defaults(run=run_render)
    editing = targets.add_parser(
        "editing",
        help="DiT, text encoder, PREIM3D, IR-SE50 at full size: load, forward, 15-step guided decode",
    )
    editing.add_argument(
        "--steps", type=bounded_int(1, 1000), default=15, help="guided DDIM steps (default 15 = strength 0.3)"
    )
    editing.add_argument("--json", help="also write the figures to this JSON file")
    add_threads_option(editing, default=BENCH_THREADS)
    editing.set_defaults(run=run_editing)
    edit = targets.add_parser(
        "edit", help="the whole edit pipeline at full size: load, edit, one view, orbit"
    )
    edit.add_argument(
        "--image", help="portrait to edit (default: a synthetic stand-in; the cost is the same)"
    )
    edit.add_argument(
        "--frames",
        type=bounded_int(0, MAX_VIDEO_FRAMES),
        default=60,
        help="orbit frames (default 60; 0 skips the orbit)",
    )
    edit.add_argument("--json", help="also write the figures to this JSON file")
    add_threads_option(edit, default=BENCH_THREADS)
    edit.set_defaults(run=run_edit)
    train = targets.add_parser(
        "train",
        help="training steps/s at batch 1 (random weights), identity loss on (t < 600) and off",
    )
    train.add_argument(
        "--preset",
        action="append",
        choices=("synthetic", "paper", "tiny"),
        help="model preset, repeatable (default: synthetic and paper)",
    )
    train.add_argument(
        "--steps",
        type=bounded_int(1, 1000),
        default=3,
        help="timed steps per case, after one warm-up (default 3)",
    )
    train.add_argument("--json", help="also write the figures to this JSON file")
    add_threads_option(train, default=BENCH_THREADS)
    train.set_defaults(run=run_train)


def run_render(args) -> int:
    apply_threads(args.threads)
    from ip2n.bench.render import run_render_benchmark

    timer = run_render_benchmark(args.preset, args.frames, args.grid)
    _report(f"render: preset {args.preset}", timer.table(), timer.rows, args.json, preset=args.preset)
    return 0


def run_editing(args) -> int:
    apply_threads(args.threads)
    from ip2n.bench.editing import run_editing_benchmark

    timer = run_editing_benchmark(args.steps)
    _report("editing", timer.table(), timer.rows, args.json)
    return 0


def run_edit(args) -> int:
    apply_threads(args.threads)
    from ip2n.bench.edit import run_edit_benchmark

    timer = run_edit_benchmark(args.frames, args.image)
    _report("edit", timer.table(), timer.rows, args.json)
    return 0


def run_train(args) -> int:
    apply_threads(args.threads)
    import dataclasses

    from ip2n.bench.train import table, time_training_steps

    if args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    presets = args.preset or ["synthetic", "paper"]
    timings = [timing for preset in presets for timing in time_training_steps(preset, args.steps)]
    rows = [
        {**dataclasses.asdict(timing), "steps_per_second": round(timing.steps_per_second, 4)}
        for timing in timings
    ]
    _report("train: batch 1", table(timings), rows, args.json)
    return 0


def _report(title: str, table: str, rows: list[dict], json_path: str | None, **details) -> None:
    """Print the figures as a table (and save them as JSON), with the machine they were measured on."""
    import torch

    threads = torch.get_num_threads()
    print(f"ip2n bench {title}, {threads} threads, {platform.processor() or platform.machine()}")
    print(table)
    if json_path:
        write_text_atomic(
            json_path, json.dumps({**details, "threads": threads, "rows": rows}, indent=2) + "\n"
        )
