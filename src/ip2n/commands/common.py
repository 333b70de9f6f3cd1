"""Pieces shared by the sub-commands: user errors, threads, weights, latents, output folders."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ip2n.atomic import DISK_FULL_ERRORS, write_text_atomic
from ip2n.limits import MAX_THREADS
from ip2n.version import __version__

logger = logging.getLogger("ip2n")


class UserError(Exception):
    """A problem with the user's input: printed as one clear message, no traceback."""


def user_facing_message(exc: BaseException) -> str | None:
    """The message to show for an expected failure, or None for a bug (which keeps its traceback)."""
    from ip2n.checkpoints.safe_unpickle import CheckpointError
    from ip2n.pipeline.scope import CLI_WORDING, OutsideWorldError

    if isinstance(exc, OutsideWorldError):  # worded for the command line's options
        return exc.explain(CLI_WORDING)
    if isinstance(exc, (UserError, CheckpointError, ValueError)):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRORS:
        where = Path(exc.filename).parent if exc.filename else None
        return (
            f"the disk is full ({exc.strerror}) while writing {exc.filename or 'a file'}: free some space "
            f"on the disk holding {where or 'the output folder'}, or choose an output folder on another disk"
        )
    from ip2n.export.video import VideoWriteError

    if isinstance(exc, VideoWriteError):
        return str(exc)
    return None


def bounded_int(low: int, high: int):
    """An argparse `type`: a whole number from `low` to `high` (ip2n.limits), refused at parse time."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {value}")
        return value

    return parse


def bounded_float(low: float, high: float, *, above_low: bool = False):
    """An argparse `type`: a finite number from `low` (or above it, `above_low`) to `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if above_low else value < low
        if not math.isfinite(value) or too_low or value > high:
            lowest = f"above {low:g}" if above_low else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be a number {lowest} and at most {high:g}, got {text}")
        return value

    return parse


def add_threads_option(parser, default: int | None = None) -> None:
    parser.add_argument(
        "--threads",
        type=bounded_int(1, MAX_THREADS),
        default=default,
        metavar="N",
        help=f"CPU threads for torch (default: {default or 'all cores torch sees'})",
    )


def apply_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder and check it is writable before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output path {path} exists and is not a folder; choose another -o/--out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".ip2n-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to output folder {path} ({exc.strerror}); choose a writable -o/--out"
        ) from None
    return path


def latent_generator_record(latent: Path) -> dict[str, Any] | None:
    """Which generator a latent belongs to, from the result.json that `EditResult.save` wrote beside it
    (its `generator`: {"kind": "synthetic-world", "preset": NAME} or {"kind": "eg3d", "weights": DIR}),
    or None when there is no such record."""
    record_path = latent.parent / "result.json"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or latent.name not in record.get("files", ()):
        return None
    generator = record.get("generator")
    return generator if isinstance(generator, dict) and generator.get("kind") else None


def generator_for_latent(weights: str | None, latent: Path) -> tuple[Any, str]:
    """The generator that renders `latent` → (generator, description for render.json).

    --weights wins. Without it, the latent's record (`latent_generator_record`) decides: the built-in
    world's generator for the built-in model's latents, the EG3D generator of the weights folder an
    edit used. A latent without a record is taken for the built-in world's when its width is the
    world's; otherwise --weights is needed.
    """
    from ip2n.checkpoints.generator_weights import load_generator

    record = latent_generator_record(latent)
    if weights:
        if record and record.get("kind") == "synthetic-world":
            raise UserError(
                f"{latent} was written by the built-in model (its result.json says so): it belongs to the "
                "built-in world's generator, not to --weights; render it without --weights"
            )
        return load_generator(weights), f"--weights {weights}"
    if record and record.get("kind") == "eg3d":
        folder = Path(str(record.get("weights", "")))
        if folder.is_dir():
            return load_generator(folder), f"the generator of {folder} (the edit's weights)"
        raise UserError(
            f"{latent} is a latent of the EG3D generator in {folder or 'an official weights folder'}, which "
            "is not there any more; pass the generator with --weights DIR (a weights folder, G_ema.pkl or "
            "generator.safetensors)"
        )
    from ip2n.builtin import PRESET_NAME
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset

    world = SyntheticHeadGenerator(synthetic_preset(PRESET_NAME)).eval()
    if record is None and not _has_width(latent, world.config.w_dim):
        raise UserError(
            f"{latent} has no result.json beside it saying which generator it belongs to, and it is not a "
            f"latent of the built-in world ({world.num_ws}×{world.config.w_dim}); pass its generator with "
            "--weights DIR (a weights folder, G_ema.pkl or generator.safetensors)"
        )
    return world, "the built-in synthetic world's generator"


def _has_width(path: Path, width: int) -> bool:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return True  # load_latent says what is wrong with the file
    return bool(array.ndim >= 2 and array.shape[-1] == width)


def load_latent(path: str | os.PathLike, num_ws: int, w_dim: int):
    """A W+ latent from .npy: (num_ws, w_dim) or (1, num_ws, w_dim), absolute (w_avg already added)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"latent file not found: {path}")
    # The header says how much data follows; refuse anything but a latent before reading any of it
    # (a few bytes of header may declare 10¹² numbers).
    shape, dtype = _npy_header(path)
    if shape not in ((num_ws, w_dim), (1, num_ws, w_dim)) or dtype.kind != "f" or dtype.itemsize > 8:
        raise UserError(
            f"{path} holds a {dtype} array of shape {shape}; expected a float W+ latent of shape "
            f"({num_ws}, {w_dim}) or (1, {num_ws}, {w_dim}) such as edited_latent.npy"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read {path} as a NumPy .npy array ({exc})") from None
    if array.shape == (num_ws, w_dim):
        array = array[None]
    if array.shape != (1, num_ws, w_dim) or not np.issubdtype(array.dtype, np.floating):
        raise UserError(
            f"{path} holds a {array.dtype} array of shape {array.shape}; expected a float W+ latent of shape "
            f"({num_ws}, {w_dim}) or (1, {num_ws}, {w_dim}) such as edited_latent.npy"
        )
    if not np.isfinite(array).all():
        raise UserError(f"{path} contains NaN or infinite values")
    return torch.from_numpy(array.astype(np.float32))


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of a .npy file, without reading its data."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            if version == (1, 0):
                shape, _fortran, dtype = npy_format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _fortran, dtype = npy_format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except (ValueError, OSError, SyntaxError) as exc:
        raise UserError(f"cannot read {path} as a NumPy .npy array ({exc})") from None
    return tuple(shape), np.dtype(dtype)


def save_latent(path: Path, ws) -> None:
    from ip2n.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, ws.detach().cpu().numpy().astype(np.float32))


def write_result_json(path: Path, data: dict[str, Any]) -> None:
    import torch

    record = {
        "ip2n_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **data,
    }
    # allow_nan=False: a NaN would make the file invalid JSON; every value is checked before this.
    write_text_atomic(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
