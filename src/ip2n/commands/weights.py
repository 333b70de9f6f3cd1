"""`ip2n weights convert|check`: official checkpoints → safetensors, and a completeness report."""

from __future__ import annotations

import json
from pathlib import Path

from ip2n.commands.common import UserError


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "weights",
        help="convert official checkpoints to safetensors, or check a weights folder",
        description=(
            "Work with model weight files. Official pickles are read without executing any code from them."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    convert = actions.add_parser(
        "convert",
        help="convert official files (G_ema.pkl, instructpix2nerf.pt, ...) to safetensors + JSON",
        description=(
            "Convert the official files found in SOURCE (a folder or a single generator file) into OUT."
        ),
    )
    convert.add_argument("source", help="a folder with the official files, or one generator file")
    convert.add_argument("-o", "--out", required=True, help="output weights folder")
    convert.set_defaults(run=run_convert)
    check = actions.add_parser(
        "check",
        help="say, file by file, whether a weights folder is complete and matches the architecture",
    )
    check.add_argument("folder", help="weights folder (official or converted files)")
    check.set_defaults(run=run_check)


def run_convert(args) -> int:
    from ip2n.checkpoints.editing_weights import WEIGHT_FILES, convert_editing_models
    from ip2n.checkpoints.generator_weights import OFFICIAL_NAMES, convert_generator

    source = Path(args.source)
    if not source.exists():
        raise UserError(f"{source} does not exist; pass the folder with the downloaded official files")
    if source.is_file():
        written = convert_generator(source, args.out)
    else:
        generator_file = next((source / name for name in OFFICIAL_NAMES if (source / name).is_file()), None)
        written = convert_generator(generator_file, args.out) if generator_file else []
        written += convert_editing_models(source, args.out)
        if not written:
            names = ", ".join(name for files in WEIGHT_FILES.values() for name in files.official)
            raise UserError(f"no official weight files in {source}: expected any of {names}")
    for path in written:
        _print_conversion(path)
    return 0


def _print_conversion(path: Path) -> None:
    """One converted file: where it came from and what was left out of it (from its JSON)."""
    from ip2n.checkpoints.contents import ignored_note
    from ip2n.checkpoints.safetensors_io import weights_paths

    config_path = weights_paths(path)[1]
    record = json.loads(config_path.read_text()) if config_path.is_file() else {}
    source = f" (from {record['source']})" if record.get("source") else ""
    print(f"{path}{source}{ignored_note(record.get('ignored', []), max_lines=20)}")


def run_check(args) -> int:
    from ip2n.checkpoints.editing_weights import check_weights_dir

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the folder that holds the weight files")
    reports = check_weights_dir(folder)
    for report in reports:
        status = "ok     " if report.ok else "PROBLEM"
        summary = report.summary.replace("\n", "\n          ")
        print(f"[{status}] {report.name}: {summary}")
    return 0 if all(report.ok for report in reports) else 1
