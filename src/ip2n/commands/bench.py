"""`ip2n bench`: measured seconds and peak memory on this machine (figures, not assertions)."""

from __future__ import annotations

import json
import platform

from ip2n.atomic import write_text_atomic
from ip2n.commands.common import add_threads_option, apply_threads


def add_parser(commands) -> None:
    parser = commands.add_parser("bench", help="benchmark rendering on this machine (random weights)")
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    render = targets.add_parser("render", help="EG3D generator: backbone, rendering, SR, views, orbit, mesh grid")
    render.add_argument("--preset", default="ffhq512", help="generator preset (default ffhq512)")
    render.add_argument("--frames", type=int, default=60, help="orbit frames (default 60)")
    render.add_argument("--grid", type=int, default=256, help="density grid resolution (default 256)")
    render.add_argument("--json", help="also write the figures to this JSON file")
    add_threads_option(render)
    render.set_defaults(run=run_render, threads=2)
    editing = targets.add_parser(
        "editing", help="DiT, text encoder, PREIM3D, IR-SE50 at full size: load, forward, 15-step guided decode",
    )
    editing.add_argument("--steps", type=int, default=15, help="guided DDIM steps (default 15 = strength 0.3)")
    editing.add_argument("--json", help="also write the figures to this JSON file")
    add_threads_option(editing)
    editing.set_defaults(run=run_editing, threads=2)
    edit = targets.add_parser("edit", help="the whole edit pipeline at full size: load, edit, one view, orbit")
    edit.add_argument("--image", help="portrait to edit (default: a synthetic stand-in; the cost is the same)")
    edit.add_argument("--frames", type=int, default=60, help="orbit frames (default 60)")
    edit.add_argument("--json", help="also write the figures to this JSON file")
    add_threads_option(edit)
    edit.set_defaults(run=run_edit, threads=2)


def run_render(args) -> int:
    apply_threads(args.threads)
    import torch

    from ip2n.bench.render import run_render_benchmark

    timer = run_render_benchmark(args.preset, args.frames, args.grid)
    print(f"ip2n bench render: preset {args.preset}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(timer.table())
    if args.json:
        write_text_atomic(args.json, json.dumps({"preset": args.preset, "threads": torch.get_num_threads(),
                                                 "rows": timer.rows}, indent=2) + "\n")
    return 0


def run_editing(args) -> int:
    apply_threads(args.threads)
    import torch

    from ip2n.bench.editing import run_editing_benchmark

    timer = run_editing_benchmark(args.steps)
    print(f"ip2n bench editing: {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(timer.table())
    if args.json:
        write_text_atomic(args.json, json.dumps({"threads": torch.get_num_threads(), "rows": timer.rows}, indent=2) + "\n")
    return 0


def run_edit(args) -> int:
    apply_threads(args.threads)
    import torch

    from ip2n.bench.edit import run_edit_benchmark

    timer = run_edit_benchmark(args.frames, args.image)
    print(f"ip2n bench edit: {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(timer.table())
    if args.json:
        write_text_atomic(args.json, json.dumps({"threads": torch.get_num_threads(), "rows": timer.rows}, indent=2) + "\n")
    return 0
