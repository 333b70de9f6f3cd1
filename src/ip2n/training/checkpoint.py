"""Training checkpoints (resumable) and the export of the EMA weights for the edit pipeline.

A checkpoint holds the DiT, its EMA copy, the optimizer, the step, the training RNG state and the
config. It is written with `torch.save` through `atomic_path` (temporary file, then rename), so a
crash while writing leaves the previous checkpoint untouched; it is read back with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ip2n.atomic import atomic_path
from ip2n.checkpoints.editing_weights import WEIGHT_FILES
from ip2n.checkpoints.safe_unpickle import CheckpointError
from ip2n.checkpoints.safetensors_io import save_weights
from ip2n.diffusion import DiTConfig

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped."""

    step: int  # optimizer steps taken
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng_state: torch.Tensor  # state of the training torch.Generator (uint8)
    config: dict[str, Any]
    loss_history: list[tuple[int, float]]


def save_checkpoint(path: str | os.PathLike, state: TrainingState) -> Path:
    """Write `state` atomically; the previous file at `path` stays intact if writing fails."""
    path = Path(path)
    payload = dataclasses.asdict(state)
    payload["config"] = json.dumps(state.config)  # a string keeps the weights-only reader simple
    payload["loss_history"] = torch.tensor(state.loss_history, dtype=torch.float64).reshape(-1, 2)
    payload["format_version"] = FORMAT_VERSION
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    logger.info("checkpoint at step %d written to %s", state.step, path)
    return path


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> TrainingState:
    """Read a checkpoint written by `save_checkpoint` (weights-only: no code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training checkpoint at {path}; start without --resume")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, i.e. running whatever the file holds: never.
        raise CheckpointError(
            f"cannot read training checkpoint {path}: it holds objects other than tensors and plain data, "
            "which ip2n never loads (it was not written by `ip2n train`, or has been changed since); "
            "start a new run in another output folder"
        ) from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read training checkpoint {path} ({exc}); it is damaged") from None
    try:
        history = payload["loss_history"]
        return TrainingState(
            step=int(payload["step"]),
            model=payload["model"],
            ema=payload["ema"],
            optimizer=payload["optimizer"],
            rng_state=payload["rng_state"].cpu(),
            config=json.loads(payload["config"]),
            loss_history=[(int(step), float(loss)) for step, loss in history.tolist()],
        )
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"cannot read training checkpoint {path} ({type(exc).__name__}: {exc}); it is damaged or was not "
            "written by `ip2n train`"
        ) from None


def export_ema(
    path: str | os.PathLike, ema_state: dict[str, torch.Tensor], dit_config: DiTConfig, step: int
) -> Path:
    """EMA weights → `<path>.safetensors` + `.json` in the converted-DiT format `load_dit` reads."""
    metadata = {
        "kind": WEIGHT_FILES["dit"].kind,
        "config": dataclasses.asdict(dit_config),
        "source": f"ip2n train, EMA weights after {step} steps",
    }
    return save_weights(path, {key: value.float() for key, value in ema_state.items()}, metadata)
