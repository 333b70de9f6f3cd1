"""`ip2n weights convert|check|download`: official checkpoints → safetensors, a completeness report, and
fetching the official files from where they are published."""

from __future__ import annotations

import json
from pathlib import Path

from ip2n.commands.common import UserError, bounded_float


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
    _add_download_parser(actions)


def _add_download_parser(actions) -> None:
    from ip2n.weight_sources import DEFAULT_WAIT_SECONDS, OFFICIAL_FILES

    download = actions.add_parser(
        "download",
        help="fetch the official files from where their authors publish them, convert and check them",
        description=(
            "Fetch the official weight files into OUT/official (NVIDIA NGC, Google Drive and the Hugging "
            "Face Hub by script, resuming interrupted downloads; the authors' Quark Drive links need a "
            "browser: the link and the file name to save are printed and the file is awaited), then "
            "convert them into OUT and check OUT. Where each file comes from: docs/models.md."
        ),
    )
    download.add_argument("-o", "--out", default="pretrained", help="weights folder (default: pretrained)")
    download.add_argument(
        "--timeout",
        type=bounded_float(0, 7 * 24 * 3600),
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for files saved in a browser (default {DEFAULT_WAIT_SECONDS}; 0: no wait)",
    )
    download.add_argument(
        "--downloads",
        metavar="FOLDER",
        help="where your browser saves files (default ~/Downloads): files found there are moved into OUT",
    )
    for component in ("generator", "encoder", "identity"):
        choices = list(OFFICIAL_FILES[component])
        download.add_argument(
            f"--{component}",
            choices=choices,
            default=choices[0],
            help=f"where the {component} comes from (default {choices[0]}; see docs/models.md)",
        )
    download.add_argument("--no-convert", action="store_true", help="only fetch the files")
    download.set_defaults(run=run_download)


def run_download(args) -> int:
    from ip2n.checkpoints.download import download_weights

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out folder")
    downloads = Path(args.downloads) if args.downloads else Path.home() / "Downloads"
    if args.downloads and not downloads.is_dir():
        raise UserError(f"--downloads {downloads} is not a folder")
    result = download_weights(
        out,
        choices={"generator": args.generator, "encoder": args.encoder, "identity": args.identity},
        wait_seconds=args.timeout,
        downloads_dir=downloads if downloads.is_dir() else None,
        convert=not args.no_convert,
    )
    for component, why in result.failed.items():
        print(f"ip2n weights download: {component}: {why}")
    if result.missing:
        names = ", ".join(file.name for file in result.missing)
        print(
            f"ip2n weights download: still missing in {result.official_dir}: {names}. Save them there (the "
            "links are above) and run the command again."
        )
        return 1
    if not result.ok:
        return 1
    if args.no_convert:
        print(f"All files are in {result.official_dir}. Use them with:  --weights {result.official_dir}")
        return 0
    print(
        f"Done. Use the weights with:  --weights {out}\n"
        f'  e.g. ip2n edit photo.jpg -i "make her smile" --align --weights {out} -o edits\n'
        f'  or   EditPipeline.from_pretrained("{out}") in Python. '
        f"({result.official_dir} can be deleted: the converted files are all ip2n reads.)"
    )
    return 0


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
