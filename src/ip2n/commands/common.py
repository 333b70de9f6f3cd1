"""Pieces shared by the sub-commands: user errors, threads, weights, latents, output folders."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ip2n import __version__
from ip2n.atomic import write_text_atomic

logger = logging.getLogger("ip2n")


class UserError(Exception):
    """A problem with the user's input: printed as one clear message, no traceback."""


def user_facing_message(exc: BaseException) -> str | None:
    """The message to show for an expected failure, or None for a bug (which keeps its traceback)."""
    from ip2n.checkpoints.safe_unpickle import CheckpointError

    if isinstance(exc, (UserError, CheckpointError, ValueError)):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    return None


def add_threads_option(parser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: all cores torch sees)",
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


def load_generator_or_builtin(weights: str | None):
    """The generator from --weights, or the built-in one (seeded random weights, said loudly)."""
    from ip2n.checkpoints.generator_weights import load_generator, random_generator

    if weights:
        return load_generator(weights), False
    logger.warning(
        "no --weights given: using the built-in EG3D generator with seeded RANDOM weights (no trained "
        "generator ships with ip2n yet), so the images show the rendering pipeline, not a face"
    )
    return random_generator("ffhq512", seed=0), True


def load_latent(path: str | os.PathLike, num_ws: int, w_dim: int):
    """A W+ latent from .npy: (num_ws, w_dim) or (1, num_ws, w_dim), absolute (w_avg already added)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"latent file not found: {path}")
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
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
