"""`ip2n edit`: edit portraits with instructions; one folder of results per input.

A thin layer over `EditPipeline`. It gathers the inputs (image files, folders of images, or the
official prompt-list JSON), checks all of them before any model is loaded, then edits them one by
one with a progress bar. An input whose folder holds result.json is finished and skipped, so an
interrupted batch resumes when the same command is run again. A failing input leaves no files
behind; failures are listed at the end and make the exit status non-zero.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ip2n.atomic import DISK_FULL_ERRORS
from ip2n.commands.common import (
    UserError,
    add_threads_option,
    apply_threads,
    bounded_int,
    prepare_output_dir,
    user_facing_message,
    write_result_json,
)
from ip2n.commands.render import add_mesh_options
from ip2n.defaults import (
    DEFAULT_FPS,
    DEFAULT_IMAGE_SCALE,
    DEFAULT_ORBIT_FRAMES,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    DEFAULT_TEXT_SCALE,
    DEFAULT_VIEWS,
)
from ip2n.export.video import VIDEO_FORMATS
from ip2n.limits import (
    MAX_FPS,
    MAX_PROMPT_LIST_BYTES,
    MAX_SEED,
    MAX_SWEEP_COMBINATIONS,
    MAX_VIDEO_FRAMES,
    MAX_VIEWS,
)

logger = logging.getLogger(__name__)

# A backslash at the end of a line joins it with the next: `ip2n edit --help` shows each example on one line.
_EXAMPLES = """examples:
  ip2n synth sample -o head.png && ip2n edit head.png -i "give him glasses and make him smile" -o out
      (the built-in model: it edits heads of its synthetic world only; `ip2n models` lists what it knows)
  ip2n edit face.png -i "make her smile" -o out --weights pretrained/
  ip2n edit photo.jpg --align -i "give him glasses" -i "make him smile" -o out --weights pretrained/ \
--video --mesh glb
  ip2n edit --batch prompts.json -o out --weights pretrained/
      (the official prompt list: {"prompt": [[image, text_scale, image_scale, instruction], ...]})
  ip2n edit portraits/ -i "make it a child" -o out --weights pretrained/ --strength 0.2,0.3,0.4 \
  (comparison grid)
"""


@dataclass(frozen=True)
class EditItem:
    """One input to edit and where its results go."""

    name: str  # sub-folder of the output folder
    image: Path
    instructions: tuple[str, ...]
    text_scales: tuple[float, ...]
    image_scales: tuple[float, ...]


def _model_default(key: str, paper: float | int) -> str:
    """How a sampling default reads in the help: the paper's (official weights) and the built-in model's."""
    from ip2n.builtin import builtin_edit_default_values  # reads world.json; no torch

    builtin = builtin_edit_default_values().get(key, paper)
    return (
        f"default: the model's — {paper:g} (the paper's) with --weights, {builtin:g} for the built-in model"
    )


def add_parser(commands) -> None:
    # Numeric defaults stay None here and come from the model in `run`; the help texts quote the
    # values the code uses (ip2n.defaults, the built-in model's world.json) without importing torch,
    # so that `ip2n edit --help` answers at once.
    parser = commands.add_parser(
        "edit",
        help="edit portraits with a plain-English instruction: views, depth, latent, orbit video, mesh",
        description=(
            "Edit each portrait with the instruction(s) and write, into OUT/<image name>/: source.png "
            "(reconstruction), edited.png (frontal edit), views.png, depth.png, edited_latent.npy, optional "
            "orbit.mp4 and mesh, crop.png with --align, and result.json (settings, seed, versions, "
            "timings, notes). Inputs whose result.json exists are skipped, so re-running a command resumes "
            "it. Comma-separated values for --strength, --cfg-text or --cfg-image run every combination and "
            "add a comparison grid, sweep.png. Without --weights the built-in model edits: it knows only the "
            "heads of its synthetic 3-D world and the instructions `ip2n models` lists, and refuses "
            "anything else (--any-image, --any-instruction run it anyway)."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="portrait image(s), or folder(s) of images"
    )
    parser.add_argument(
        "-i",
        "--instruction",
        action="append",
        dest="instructions",
        metavar="TEXT",
        help='what to change, e.g. "make her smile"; repeat for several (combined into one prompt, '
        "or applied in turn with --chain)",
    )
    parser.add_argument(
        "-o", "--out", required=True, metavar="OUTDIR", help="output folder (one sub-folder per input)"
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--weights", metavar="DIR", help="folder with the official weight files or their conversion"
    )
    model.add_argument(
        "--model", metavar="NAME", help="a built-in trained model (default without --weights: synthetic)"
    )
    parser.add_argument(
        "--batch",
        metavar="FILE.json|FOLDER",
        help='an official prompt-list JSON ({"prompt": [[image, text_scale, image_scale, '
        "instruction], ...]}; paths relative to the file) or a folder of images",
    )
    parser.add_argument(
        "--align",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="detect, crop and align the face first, and save the crop as crop.png (for photos that are "
        "not FFHQ-style crops; without it an image must be a square crop; default: off)",
    )
    parser.add_argument(
        "--any-image",
        action="store_true",
        help="built-in model only: edit pictures that are not heads of its synthetic world too (it turns "
        "them into unrelated synthetic heads; result.json's notes say so)",
    )
    parser.add_argument(
        "--any-instruction",
        action="store_true",
        help="built-in model only: run instructions that name none of its attributes too (it then makes "
        "an unrelated edit; result.json's notes say so)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help=f"DDIM schedule length ({_model_default('num_inference_steps', DEFAULT_STEPS)}; the edit "
        "runs strength × N of them)",
    )
    parser.add_argument(
        "--strength",
        type=_numbers,
        metavar="S[,S...]",
        help="how far the source is noised, 0 < S < 1, larger = bigger changes "
        f"({_model_default('strength', DEFAULT_STRENGTH)})",
    )
    parser.add_argument(
        "--cfg-text",
        type=_numbers,
        metavar="T[,T...]",
        help=f"text guidance ({_model_default('guidance_scale', DEFAULT_TEXT_SCALE)})",
    )
    parser.add_argument(
        "--cfg-image",
        type=_numbers,
        metavar="I[,I...]",
        help=f"image guidance ({_model_default('image_guidance_scale', DEFAULT_IMAGE_SCALE)})",
    )
    parser.add_argument(
        "--seed", type=bounded_int(0, MAX_SEED), default=0, help="seed of the diffusion noise (default 0)"
    )
    parser.add_argument(
        "--no-identity",
        dest="identity",
        action="store_false",
        help="no identity conditioning (the official inference script's default)",
    )
    parser.add_argument(
        "--tpr",
        action="store_true",
        help="token position randomization at inference, as the official code does (adds randomness)",
    )
    parser.add_argument("--chain", action="store_true", help="apply several instructions one after another")
    parser.add_argument(
        "--views",
        type=bounded_int(0, MAX_VIEWS),
        metavar="N",
        help=f"edited views in views.png, yaw −30° … 30° (default {DEFAULT_VIEWS}; 0: none)",
    )
    parser.add_argument("--video", action="store_true", help="also write an orbit video of the edit")
    parser.add_argument(
        "--frames",
        type=bounded_int(2, MAX_VIDEO_FRAMES),
        metavar="N",
        help=f"orbit video frames, 2 to {MAX_VIDEO_FRAMES} (default {DEFAULT_ORBIT_FRAMES})",
    )
    parser.add_argument(
        "--fps",
        type=bounded_int(1, MAX_FPS),
        help=f"orbit video frame rate, 1 to {MAX_FPS} (default {DEFAULT_FPS})",
    )
    parser.add_argument(
        "--video-format", choices=VIDEO_FORMATS, default="mp4", help="orbit video format (default mp4)"
    )
    add_mesh_options(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_threads_option(parser)
    parser.set_defaults(run=run)


def _numbers(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or comma-separated numbers, got {text!r}"
        ) from None
    if not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def run(args) -> int:
    from ip2n.pipeline import edit, result

    apply_threads(args.threads)
    _choose_model(args)
    # Sampling defaults belong to the model: the paper's for official weights, tuned ones for a
    # built-in model.
    model_defaults = edit.preset_edit_defaults(args.model) if args.model else edit.PAPER_DEFAULTS
    args = _with_defaults(
        args,
        {
            "steps": model_defaults.num_inference_steps,
            "views": result.DEFAULT_VIEWS,
            "frames": result.DEFAULT_ORBIT_FRAMES,
            "fps": result.DEFAULT_FPS,
            "strength": (model_defaults.strength,),
            "cfg_text": (model_defaults.guidance_scale,),
            "cfg_image": (model_defaults.image_guidance_scale,),
        },
    )
    # 1. Everything that can be checked without models: options, device, inputs.
    _check_options(args)
    device = edit.resolve_device(args.device)
    items = _gather_items(args, args.cfg_text, args.cfg_image)
    failures = _check_items(items, args)
    valid = [item for item in items if item.name not in failures]
    # 2. Output folder, skipping what an earlier run finished.
    out_path = Path(args.out)
    created_out = not out_path.exists()
    out_dir = prepare_output_dir(out_path) if valid else out_path
    todo = [item for item in valid if not _finished(out_path / item.name)]
    done: list[EditItem] = []
    try:
        if todo:
            # 3. Models, then one input after another.
            pipeline = _load_pipeline(args, device)
            _edit_all(pipeline, todo, out_dir, args, device, failures, done)
    finally:
        if created_out and out_path.is_dir() and not any(out_path.iterdir()):
            out_path.rmdir()
    return _report(items, done, len(valid) - len(todo), failures)


def _with_defaults(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    values = vars(args) | {key: value for key, value in defaults.items() if getattr(args, key) is None}
    return argparse.Namespace(**values)


def _choose_model(args) -> None:
    """--model / --weights, or the built-in model when neither is given (an unknown --model is an error)."""
    from ip2n.pipeline.edit import DEFAULT_PRESET, check_preset

    if not args.weights and not args.model:
        # Without weights the built-in model edits: it only knows its synthetic heads
        # (docs/synthetic_world.md).
        args.model = DEFAULT_PRESET
        logger.warning(
            "no --weights given: using the built-in model '%s', which edits only heads of its synthetic "
            "3-D world (`ip2n models`); for photos pass the official InstructPix2NeRF weights with "
            "--weights DIR",
            DEFAULT_PRESET,
        )
    if args.model:
        check_preset(args.model)


def _world_model(args) -> bool:
    """Whether the model edits only heads of the synthetic world (the built-in model)."""
    from ip2n.pipeline.edit import MODEL_PRESETS

    return bool(args.model) and not args.weights and MODEL_PRESETS[args.model].world_model


def _check_options(args) -> None:
    from ip2n.diffusion.editing import edit_schedule
    from ip2n.pipeline.edit import check_guidance_scales

    if args.weights and not Path(args.weights).is_dir():
        raise UserError(
            f"--weights {args.weights} is not a folder; pass the folder that holds G_ema.pkl, "
            "instructpix2nerf.pt, preim3d.pt and model_ir_se50.pth (or their converted .safetensors)"
        )
    if not args.images and not args.batch:
        raise UserError("no input: pass portrait image(s) or folder(s), or --batch FILE.json|FOLDER")
    try:
        for strength in args.strength:
            edit_schedule(args.steps, strength)
    except ValueError as exc:
        raise UserError(f"{exc} (--steps, --strength)") from None
    try:
        for text_scale, image_scale in itertools.product(args.cfg_text, args.cfg_image):
            check_guidance_scales(text_scale, image_scale)
    except ValueError as exc:
        raise UserError(f"{exc} (--cfg-text, --cfg-image)") from None
    combinations = len(args.strength) * len(args.cfg_text) * len(args.cfg_image)
    if combinations > MAX_SWEEP_COMBINATIONS:
        raise UserError(
            f"--strength, --cfg-text and --cfg-image make {combinations} combinations; a comparison grid "
            f"takes at most {MAX_SWEEP_COMBINATIONS}"
        )
    checks = (
        (args.views >= 0, f"--views must be 0 or more, got {args.views}"),
        (not args.video or args.frames >= 2, f"--frames must be at least 2 for a video, got {args.frames}"),
        (args.fps >= 1, f"--fps must be at least 1, got {args.fps}"),
        (
            not args.mesh or args.mesh_resolution >= 16,
            f"--mesh-resolution must be at least 16, got {args.mesh_resolution}",
        ),
        (_is_level(args.mesh_level), f"--mesh-level must be a number or 'auto', got {args.mesh_level!r}"),
    )
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _is_level(text: str) -> bool:
    try:
        return text == "auto" or math.isfinite(float(text))
    except ValueError:
        return False


# --- inputs -------------------------------------------------------------------------------------------


def _gather_items(args, text_scales: tuple[float, ...], image_scales: tuple[float, ...]) -> list[EditItem]:
    """Every input as an `EditItem`, with unique folder names (repeated names get -2, -3, ...)."""
    instructions = tuple(args.instructions or ())
    items: list[EditItem] = []
    paths: list[Path] = []
    batch = Path(args.batch) if args.batch else None
    if batch is not None and batch.suffix.lower() == ".json":
        if instructions and not args.images:
            raise UserError(
                "-i is not used with a prompt-list --batch file: its entries hold the instructions"
            )
        items += _read_prompt_list(batch)
    elif batch is not None:
        if not batch.is_dir():
            raise UserError(f"--batch {batch}: expected a prompt-list .json file or a folder of images")
        paths += _images_in(batch)
    for image in map(Path, args.images):
        paths += _images_in(image) if image.is_dir() else [image]
    if paths and not instructions:
        raise UserError('no instruction: say what to change with -i, e.g. -i "make her smile"')
    items += [EditItem(path.stem, path, instructions, text_scales, image_scales) for path in paths]
    return _unique_names(items)


def _images_in(folder: Path) -> list[Path]:
    from ip2n.pipeline.inputs import IMAGE_SUFFIXES, is_image_file

    images = sorted(path for path in folder.iterdir() if is_image_file(path))
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {folder}")
    return images


def _read_prompt_list(path: Path) -> list[EditItem]:
    """Items of an official prompt list: {"prompt": [[image, text_scale, image_scale, instruction], ...]}."""
    if not path.is_file():
        raise UserError(f"prompt list {path} not found")
    if path.stat().st_size > MAX_PROMPT_LIST_BYTES:
        raise UserError(
            f"{path} is {path.stat().st_size} bytes long; a prompt list may be at most "
            f"{MAX_PROMPT_LIST_BYTES // 2**20} MB: split it into several files"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; expected a JSON prompt list") from None
    entries = data.get("prompt") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(
            f"{path} is not a prompt list: expected "
            '{"prompt": [[image, text_scale, image_scale, instruction], ...]}'
        )
    items = []
    for number, entry in enumerate(entries, start=1):
        if not (
            isinstance(entry, list)
            and len(entry) == 4
            and isinstance(entry[0], str)
            and isinstance(entry[3], str)
            and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in entry[1:3])
        ):
            raise UserError(
                f"{path}: entry {number} is {json.dumps(entry)}; each entry must be "
                '[image, text_scale, image_scale, instruction], e.g. ["face.png", 2.5, 1.0, "make her smile"]'
            )
        image = Path(entry[0])
        if not image.is_absolute() and not (path.parent / image).exists() and image.exists():
            logger.info(
                "%s: %s is not beside the prompt list; using it relative to the current folder", path, image
            )
        elif not image.is_absolute():
            image = path.parent / image
        items.append(EditItem(image.stem, image, (entry[3],), (float(entry[1]),), (float(entry[2]),)))
    return items


def _unique_names(items: list[EditItem]) -> list[EditItem]:
    """Output folder names that are safe single path components and unique across the run.

    A repeated name gets the first free `-2`, `-3`, ... suffix, free among every name of the run
    (inputs `a`, `a` and `a-2` give `a`, `a-2`, `a-2-2`), compared without case (macOS and Windows
    file systems do not tell `A` from `a`).
    """
    used: set[str] = set()
    unique = []
    for item in items:
        base = _folder_name(item.name)
        name, number = base, 1
        while name.casefold() in used:
            number += 1
            name = f"{base}-{number}"
        used.add(name.casefold())
        unique.append(item if name == item.name else replace(item, name=name))
    return unique


def _folder_name(stem: str) -> str:
    """An image's name as one safe folder name: no separators or control characters, no leading dot
    (`..` would leave the output folder, `.x` would be hidden), at most 100 characters."""
    name = "".join("_" if char in '/\\:*?"<>|' or ord(char) < 32 else char for char in stem)
    name = name.strip(" .")[:100].strip(" .")
    return name or "image"


def _check_items(items: list[EditItem], args) -> dict[str, str]:
    """Decode every image and check every instruction now: item name → problem.

    Besides what every model needs (a readable image, usable instructions, a square crop unless
    --align), the built-in model refuses pictures that are not heads of its world and instructions
    that name none of its attributes, unless --any-image / --any-instruction (`ip2n.pipeline.scope`).
    """
    from ip2n.pipeline.inputs import check_square_crop, edit_prompts, load_image
    from ip2n.pipeline.scope import (
        CLI_WORDING,
        OutsideWorldError,
        check_known_instructions,
        check_world_image,
    )

    world = _world_model(args)
    failures = {}
    # Conversion notes and warnings are logged when each image is loaded for its edit, not twice.
    inputs_logger = logging.getLogger(load_image.__module__)
    level = inputs_logger.level
    inputs_logger.setLevel(logging.ERROR)
    try:
        for item in items:
            try:
                edit_prompts(item.instructions, args.chain)
                image = load_image(item.image)
                if world and not args.any_image:
                    check_world_image(image, str(item.image))
                if world and not args.any_instruction:
                    check_known_instructions(item.instructions)
                if not args.align:
                    check_square_crop(image, str(item.image))
            except OutsideWorldError as exc:
                failures[item.name] = exc.explain(CLI_WORDING)
            except ValueError as exc:
                failures[item.name] = str(exc)
    finally:
        inputs_logger.setLevel(level)
    return failures


def _finished(folder: Path) -> bool:
    from ip2n.pipeline.result import RESULT_NAME

    return (folder / RESULT_NAME).is_file()


# --- editing ------------------------------------------------------------------------------------------


def _load_pipeline(args, device):
    from ip2n.pipeline.edit import EditPipeline

    if args.weights:
        return EditPipeline.from_weights(args.weights, device, progress=True)
    return EditPipeline.from_preset(args.model, device, progress=True)


def _edit_all(
    pipeline,
    todo: list[EditItem],
    out_dir: Path,
    args,
    device,
    failures: dict[str, str],
    done: list[EditItem],
) -> None:
    from tqdm.auto import tqdm

    # One input: a bar per stage (encoding, diffusion, views, orbit, mesh); several: a bar over them.
    progress = tqdm(todo, desc="ip2n edit", unit="image", disable=len(todo) < 2, file=sys.stderr)
    for item in progress:
        folder = out_dir / item.name
        created = not folder.exists()
        try:
            _edit_one(pipeline, item, folder, args, device, stages=len(todo) == 1)
        except BaseException as exc:
            # A failed input leaves nothing behind; on Ctrl-C the folder of the unfinished one goes too.
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            if not isinstance(exc, Exception):
                raise
            if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRORS:
                raise  # every further input would fail the same way
            message = user_facing_message(exc)
            if message is None:
                logger.error("unexpected error while editing %s", item.image, exc_info=True)
                message = f"unexpected error ({type(exc).__name__}: {exc}); please report it"
            failures[item.name] = message
            continue
        done.append(item)
        progress.write(str(folder))


def _edit_one(pipeline, item: EditItem, folder: Path, args, device, stages: bool = False) -> None:
    import torch

    options = {
        "num_inference_steps": args.steps,
        "identity_conditioning": args.identity,
        "chain": args.chain,
        "align": args.align,
        "token_position_randomization": args.tpr,
        "allow_any_image": args.any_image,
        "allow_any_instruction": args.any_instruction,
        "progress": stages,
    }
    save_options = {
        "views": args.views,
        "video": args.video,
        "video_frames": args.frames,
        "video_format": args.video_format,
        "fps": args.fps,
        "mesh": args.mesh,
        "mesh_resolution": args.mesh_resolution,
        "mesh_level": args.mesh_level,
        "progress": stages,
        "metadata": {
            "command": "edit",
            "input": str(item.image),
            "input_file_bytes": item.image.stat().st_size,
            "input_file_pixels": _stored_pixels(item.image),
            "weights" if args.weights else "model": args.weights or args.model,
            "device": str(device),
            "model_load_seconds": pipeline.load_seconds,
        },
    }
    combinations = list(itertools.product(args.strength, item.text_scales, item.image_scales))
    if len(combinations) > 1:
        _sweep_one(pipeline, item, folder, args, options, save_options)
        return
    strength, text_scale, image_scale = combinations[0]
    result = pipeline(
        item.image,
        item.instructions,
        strength=strength,
        guidance_scale=text_scale,
        image_guidance_scale=image_scale,
        generator=torch.Generator().manual_seed(args.seed),
        **options,
    )
    result.save(folder, **save_options)


def _stored_pixels(path: Path) -> list[int]:
    """[width, height] as stored in the file. result.json's `input_image_size` is the image the model
    saw, which differs after EXIF rotation, the reduction of very large photos or --align's crop."""
    from PIL import Image

    with Image.open(path) as image:  # reads the header only; the file was decoded and checked before
        return list(image.size)


def _sweep_one(pipeline, item: EditItem, folder: Path, args, options: dict, save_options: dict) -> None:
    """Every combination of the swept values into its own sub-folder, then sweep.png and result.json."""
    from ip2n.export.images import save_image
    from ip2n.pipeline.result import comparison_grid, software_versions

    start = time.perf_counter()
    results = pipeline.sweep(
        item.image,
        item.instructions,
        strengths=args.strength,
        guidance_scales=item.text_scales,
        image_guidance_scales=item.image_scales,
        seed=args.seed,
        **options,
    )
    names = [_combination_name(result.settings) for result in results]
    for name, result in zip(names, results):
        result.save(folder / name, **save_options)
    save_image(comparison_grid(results), folder / "sweep.png")
    sweep = {
        "strength": list(args.strength),
        "text_scale": list(item.text_scales),
        "image_scale": list(item.image_scales),
    }
    write_result_json(
        folder / "result.json",
        {
            **software_versions(),
            **save_options["metadata"],
            "sweep": sweep,
            "seed": args.seed,
            "instructions": list(item.instructions),
            "results": names,
            "seconds": round(time.perf_counter() - start, 3),
            "files": ["sweep.png", *names, "result.json"],
        },
    )


def _combination_name(settings) -> str:
    return (
        f"strength{settings.strength:g}_text{settings.guidance_scale:g}"
        f"_image{settings.image_guidance_scale:g}"
    )


def _report(items: list[EditItem], done: list[EditItem], skipped: int, failures: dict[str, str]) -> int:
    by_name = {item.name: item for item in items}
    if len(items) == 1 and failures:
        raise UserError(next(iter(failures.values())))
    if len(items) > 1:
        print(
            f"{len(done)} edited, {skipped} skipped (finished earlier; delete a folder to redo it), "
            f"{len(failures)} failed"
        )
    elif skipped:
        print(f"skipped: {items[0].image} was finished earlier (delete its folder to redo it)")
    for name, message in failures.items():
        print(f"failed: {by_name[name].image}: {message}", file=sys.stderr)
    return 1 if failures else 0
