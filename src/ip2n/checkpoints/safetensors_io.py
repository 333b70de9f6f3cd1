"""ip2n's converted weight format: safetensors with the model config beside the tensors.

`save_weights("weights/dit", state_dict, config)` writes

- `weights/dit.safetensors`: the tensors, with the config as JSON under the metadata key
  `ip2n_config` (so the file alone is enough to rebuild the model), and
- `weights/dit.json`: the same config, pretty-printed for people.

Both are written atomically (temporary file in the same directory, then a rename): an interrupted
conversion never leaves a half-written file under the final name. Safetensors holds no code, so
these files are safe to load from anywhere.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ip2n.atomic import atomic_path, write_text_atomic
from ip2n.checkpoints.safe_unpickle import CheckpointError

__all__ = ["CONFIG_METADATA_KEY", "load_weights", "save_weights", "weights_paths"]

logger = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "ip2n_config"
_SUFFIX = ".safetensors"


def weights_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(`<name>.safetensors`, `<name>.json`) for `path` given with or without the .safetensors suffix."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix == _SUFFIX else path
    return base.with_name(base.name + _SUFFIX), base.with_name(base.name + ".json")


def save_weights(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> Path:
    """Write `state_dict` and its JSON-serializable `config`; returns the .safetensors path.

    Tensors are stored contiguous and detached; tensors that share memory with an earlier entry
    are stored as their own copies (safetensors cannot express aliasing). Raises `TypeError` for
    non-string keys, non-tensor values or a config that JSON cannot represent.
    """
    tensors_path, config_path = weights_paths(path)
    tensors = _storable_tensors(state_dict)
    try:
        config_json = json.dumps(dict(config), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the config for {tensors_path} is not JSON-serializable: {exc}") from exc
    with atomic_path(tensors_path) as tmp:
        save_file(tensors, tmp, metadata={CONFIG_METADATA_KEY: config_json})
    # The metadata copy is the authoritative one; the JSON file is for reading, so it comes second.
    write_text_atomic(config_path, json.dumps(json.loads(config_json), indent=2) + "\n")
    logger.info("wrote %d tensors to %s (config in %s)", len(tensors), tensors_path, config_path.name)
    return tensors_path


def load_weights(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read `<name>.safetensors` → (state_dict, config).

    The config comes from the file's metadata; for a safetensors file written elsewhere (no
    `ip2n_config`), from `<name>.json` beside it when that exists, else it is `{}`. Raises
    `CheckpointError` when the file is missing or damaged.
    """
    tensors_path, config_path = weights_paths(path)
    if not tensors_path.is_file():
        raise CheckpointError(
            f"weights not found: {tensors_path}. Convert the official checkpoint first (see "
            "docs/checkpoints.md)."
        )
    try:
        with safe_open(tensors_path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        state_dict = load_file(tensors_path, device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {tensors_path} ({exc}); the file is damaged or incomplete, convert it again."
        ) from exc
    if CONFIG_METADATA_KEY in metadata:
        config_text, source = metadata[CONFIG_METADATA_KEY], tensors_path
    elif config_path.is_file():
        config_text, source = config_path.read_text(encoding="utf-8"), config_path
    else:
        return state_dict, {}
    try:
        config = json.loads(config_text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"the config in {source} is not valid JSON ({exc}); convert the checkpoint again."
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"the config in {source} is not a JSON object; convert the checkpoint again.")
    return state_dict, config


def _storable_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[tuple[torch.device, int]] = set()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be strings, got {key!r}")
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"state_dict[{key!r}] holds a {type(value).__name__}, not a tensor; only tensors can be "
                "saved as weights"
            )
        tensor = value.detach().contiguous()
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        if storage in seen_storages and tensor.numel():
            tensor = tensor.clone()
        seen_storages.add((tensor.device, tensor.untyped_storage().data_ptr()))
        tensors[key] = tensor
    return tensors
