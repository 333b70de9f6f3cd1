"""Readers for the checkpoint files of the official InstructPix2NeRF release.

They return plain data (dicts of tensors, dicts of options); turning those into ip2n modules is the
job of each model's converter. Every reader is safe on untrusted files: pickles go through
torch's weights-only loader or ip2n's restricted unpickler, never a full `pickle.load`.

Files and what they hold (see docs/checkpoints.md):

- EG3D generator `G_ema.pkl`: NVIDIA's network pickle (dict with `G`, `D`, `G_ema`), or a whole
  pickled `TriPlaneGenerator` written by `torch.save` (what InstructPix2NeRF ships), or a state dict.
- DiT `instructpix2nerf.pt`: a training checkpoint (`model`, `ema`, `opt`, `args`) or a bare state dict.
- PREIM3D `preim3d.pt`: `state_dict` (keys `encoder.*`, `decoder.*`) and `opts`, maybe more.
- IR-SE50 `model_ir_se50.pth`: a plain state dict.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from ip2n.checkpoints.contents import describe_entry, describe_value, identify, ignored_entries
from ip2n.checkpoints.safe_unpickle import (
    CheckpointError,
    NamespaceRecord,
    PersistentRecord,
    PickledObject,
    load_checkpoint,
    sniff_checkpoint,
)
from ip2n.checkpoints.safetensors_io import load_weights

__all__ = [
    "EG3DCheckpoint",
    "describe_checkpoint",
    "wrong_kind_message",
    "read_eg3d_generator",
    "read_module_state",
    "read_torch_checkpoint",
    "select_dit_weights",
    "split_prefix",
    "to_plain_data",
]

logger = logging.getLogger(__name__)

_GENERATOR_CLASS = "TriPlaneGenerator"
# Every EG3D generator state dict has these top-level submodules.
_GENERATOR_KEY_PREFIXES = ("backbone.", "superresolution.", "decoder.")
# Buffers EG3D's training loop adds to the generator (before copying it to G_ema): not weights.
_GENERATOR_TRAINING_BUFFERS = ("dataset_label_std",)
# Containers nested deeper than this, or networks deeper than this, are not a checkpoint (real
# files nest a few levels); the limit keeps hostile files from exhausting the interpreter's stack.
MAX_NESTING = 100


@dataclass(frozen=True)
class EG3DCheckpoint:
    """An EG3D generator as read from an official file.

    `state_dict` maps the official keys (e.g. `backbone.synthesis.b4.conv1.weight`) to CPU tensors
    in the official order. `init_kwargs` / `rendering_kwargs` are the constructor options as plain
    JSON-like data (empty when the file is a bare state dict); `neural_rendering_resolution` is the
    pickled attribute (128 for ffhq512-128), None when the file does not carry it. `source_format`
    is one of "network_pickle", "torch_module", "state_dict", "safetensors". `ignored` describes
    what the file holds besides the generator's weights (`contents.ignored_entries`).
    """

    state_dict: dict[str, torch.Tensor]
    init_kwargs: dict[str, Any]
    rendering_kwargs: dict[str, Any]
    neural_rendering_resolution: int | None
    source_format: str
    ignored: tuple[str, ...] = ()


# --- module records ---------------------------------------------------------------------------


def read_module_state(module: PersistentRecord | PickledObject) -> dict[str, torch.Tensor]:
    """The `state_dict()` of a pickled torch module, recovered from its record without its class.

    Walks `_parameters`, then `_buffers` (minus `_non_persistent_buffers_set`), then `_modules`
    recursively, as `torch.nn.Module.state_dict` does; keys are joined with ".". Tensors are
    detached views of the loaded data, not copies. A module that contains itself, or networks
    nested deeper than `MAX_NESTING`, raise `CheckpointError`.
    """
    state_dict: dict[str, torch.Tensor] = {}
    _collect_module_state(module, "", state_dict, set())
    return state_dict


def _collect_module_state(
    module: Any, prefix: str, out: dict[str, torch.Tensor], open_modules: set[int]
) -> None:
    state = _module_dict(module, prefix)
    if id(module) in open_modules or prefix.count(".") > MAX_NESTING:
        raise CheckpointError(
            f"the pickled network at {prefix.rstrip('.')} contains itself or is nested beyond "
            f"{MAX_NESTING} levels; this is not a real checkpoint"
        )
    open_modules.add(id(module))
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, tensor in state["_parameters"].items():
        if tensor is not None:
            out[prefix + name] = _as_tensor(tensor, prefix + name)
    for name, tensor in state["_buffers"].items():
        if tensor is not None and name not in non_persistent:
            out[prefix + name] = _as_tensor(tensor, prefix + name)
    for name, child in state["_modules"].items():
        if child is not None:
            _collect_module_state(child, f"{prefix}{name}.", out, open_modules)
    open_modules.discard(id(module))


def _module_dict(module: Any, prefix: str) -> dict[str, Any]:
    where = prefix.rstrip(".") or "the top-level object"
    if not isinstance(module, (PersistentRecord, PickledObject)) or not isinstance(module.state, dict):
        raise CheckpointError(f"expected a pickled torch module at {where}, found {type(module).__name__}")
    state = module.state
    for field in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(field), dict):
            raise CheckpointError(f"the pickled object at {where} is not a torch module (no {field})")
    return state


def _as_tensor(value: Any, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{key} is {describe_value(value)}, not a tensor")
    return value.detach()


def to_plain_data(value: Any) -> Any:
    """Records and numpy scalars → plain Python data (dicts, lists, numbers); tensors unchanged.

    `EasyDictRecord` and `NamespaceRecord` become dicts, tuples stay tuples, numpy scalars become
    Python numbers, paths strings. Records of networks and of unknown objects stay as they are
    (inert). An object the file references several times is converted once and shared, so data
    built from repeated references stays as small as the file; containers that contain themselves
    or nest deeper than `MAX_NESTING` raise `CheckpointError`.
    """
    return _plain(value, {}, set(), 0)


def _plain(value: Any, done: dict[int, Any], open_containers: set[int], depth: int) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    if not isinstance(value, (dict, list, tuple, NamespaceRecord)):
        return value
    key = id(value)
    if key in done:
        return done[key]
    if key in open_containers or depth > MAX_NESTING:
        raise CheckpointError(
            f"its data contains itself or is nested beyond {MAX_NESTING} levels; this is not a real "
            "checkpoint"
        )
    open_containers.add(key)
    if isinstance(value, NamespaceRecord):
        items = value.state if isinstance(value.state, dict) else {}
        plain: Any = {name: _plain(item, done, open_containers, depth + 1) for name, item in items.items()}
    elif isinstance(value, dict):  # includes EasyDictRecord and OrderedDict
        plain = {name: _plain(item, done, open_containers, depth + 1) for name, item in value.items()}
    elif isinstance(value, list):
        plain = [_plain(item, done, open_containers, depth + 1) for item in value]
    else:
        plain = tuple(_plain(item, done, open_containers, depth + 1) for item in value)
    open_containers.discard(key)
    done[key] = plain
    return plain


# --- EG3D generator ---------------------------------------------------------------------------


def read_eg3d_generator(path: str | os.PathLike) -> EG3DCheckpoint:
    """Read an EG3D generator from a network pickle, a `torch.save`d module or a state dict.

    From a network pickle the `G_ema` network is taken (the one meant for inference; `G` holds the
    raw training weights). What the file holds besides the generator's weights (the snapshot's
    other networks and options, the `dataset_label_std` buffer EG3D's training loop adds) is left
    out and listed in `ignored`. Raises `CheckpointError` when the file is missing, unreadable or
    holds something else (e.g. a DiT or PREIM3D checkpoint), `UnsafeCheckpointError` when it asks
    to run code.
    """
    if sniff_checkpoint(path) == "safetensors":
        return _generator_from_safetensors(path)
    loaded = _load_untrusted(path)
    if isinstance(loaded, PersistentRecord):
        return _generator_from_record(path, loaded, "torch_module", ())
    if isinstance(loaded, dict) and "G_ema" in loaded:
        others = ignored_entries({key: value for key, value in loaded.items() if key != "G_ema"})
        return _generator_from_record(path, loaded["G_ema"], "network_pickle", others)
    if _is_state_dict(loaded):
        state_dict, ignored = _without_training_buffers(dict(loaded))
        _check_generator_keys(path, state_dict)
        return EG3DCheckpoint(state_dict, {}, {}, None, "state_dict", ignored)
    raise _wrong_kind(
        path, loaded, "an EG3D generator (G_ema.pkl: a network pickle or a pickled TriPlaneGenerator)"
    )


def _without_training_buffers(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    extras = {key: state_dict.pop(key) for key in _GENERATOR_TRAINING_BUFFERS if key in state_dict}
    return state_dict, ignored_entries(extras)


def _generator_from_record(
    path: str | os.PathLike, record: Any, source_format: str, ignored: tuple[str, ...]
) -> EG3DCheckpoint:
    if not isinstance(record, PersistentRecord) or record.class_name != _GENERATOR_CLASS:
        kind = identify(record)
        advice = f"; {kind.advice}" if kind.advice else ""
        raise CheckpointError(
            f"{path} holds {kind.what}, not an EG3D {_GENERATOR_CLASS}{advice}. Pass the EG3D generator "
            "file (G_ema.pkl)."
        )
    try:
        state_dict, training_buffers = _without_training_buffers(read_module_state(record))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: the pickled generator is malformed: {exc}") from None
    state = record.state
    init_kwargs = to_plain_data(state.get("_init_kwargs") or {})
    if not isinstance(init_kwargs, dict):
        raise CheckpointError(f"{path}: the generator's _init_kwargs are {describe_entry('', init_kwargs)}")
    rendering_kwargs = to_plain_data(
        state.get("rendering_kwargs") or init_kwargs.get("rendering_kwargs") or {}
    )
    resolution = to_plain_data(state.get("neural_rendering_resolution"))
    if not (resolution is None or isinstance(resolution, int)) or not isinstance(rendering_kwargs, dict):
        raise CheckpointError(f"{path}: the generator's rendering options are not plain data")
    if state.get("_init_args"):
        logger.warning(
            "%s: the generator was built with positional arguments %r; they are ignored",
            path,
            state["_init_args"],
        )
    return EG3DCheckpoint(
        state_dict=state_dict,
        init_kwargs=init_kwargs,
        rendering_kwargs=rendering_kwargs,
        neural_rendering_resolution=resolution,
        source_format=source_format,
        ignored=ignored + training_buffers,
    )


def _generator_from_safetensors(path: str | os.PathLike) -> EG3DCheckpoint:
    state_dict, config = load_weights(path)
    _check_generator_keys(path, state_dict)
    resolution = config.get("neural_rendering_resolution")
    init_kwargs = config.get("init_kwargs", {})
    return EG3DCheckpoint(
        state_dict=state_dict,
        init_kwargs=init_kwargs,
        rendering_kwargs=config.get("rendering_kwargs", init_kwargs.get("rendering_kwargs", {})),
        neural_rendering_resolution=None if resolution is None else int(resolution),
        source_format="safetensors",
    )


def _check_generator_keys(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor]) -> None:
    missing = [
        prefix for prefix in _GENERATOR_KEY_PREFIXES if not any(key.startswith(prefix) for key in state_dict)
    ]
    if missing:
        raise CheckpointError(
            f"{path} is a state dict but not of an EG3D generator (no {', '.join(p + '*' for p in missing)} "
            "keys); pass the EG3D generator file (G_ema.pkl)."
        )


# --- torch checkpoints (DiT, PREIM3D, IR-SE50) ------------------------------------------------


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a `torch.save` checkpoint (DiT, PREIM3D, IR-SE50) as a dict of plain data and tensors.

    The DiT training `args` (an `argparse.Namespace`) becomes a dict; objects of unknown classes stay
    inert records (`to_plain_data`). Large files are memory-mapped. Raises `CheckpointError` for
    missing/unreadable files or files holding a pickled EG3D network (use `read_eg3d_generator`
    for those), `UnsafeCheckpointError` when the file asks to run code.
    """
    if sniff_checkpoint(path) == "safetensors":
        raise CheckpointError(
            f"{path} is already converted (safetensors); read it with ip2n.checkpoints.load_weights."
        )
    loaded = _load_untrusted(path)
    if isinstance(loaded, PersistentRecord) or (isinstance(loaded, dict) and "G_ema" in loaded):
        raise _wrong_kind(path, loaded, "a torch.save checkpoint of weights (DiT, PREIM3D or IR-SE50)")
    if not isinstance(loaded, dict):
        raise _wrong_kind(path, loaded, "a dict (a state dict or a training checkpoint)")
    try:
        return to_plain_data(loaded)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}.") from None


def select_dit_weights(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The DiT state dict inside a checkpoint: its `ema` weights, else `model`, else itself.

    Mirrors the official loader's preference (the EMA weights are the ones that ship).
    """
    for key in ("ema", "model"):
        if key in checkpoint:
            weights = checkpoint[key]
            break
    else:
        weights = checkpoint
    if isinstance(weights, dict) and any(
        isinstance(key, str) and key.startswith("x_embedder.") for key in weights
    ):
        for key, value in weights.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"the DiT weight {key} is {describe_value(value)}, not a tensor.")
    if not _is_state_dict(weights) or not any(key.startswith("x_embedder.") for key in weights):
        expected = "the InstructPix2NeRF DiT (a state dict with x_embedder.* keys, or a training checkpoint)"
        raise CheckpointError(
            "no DiT weights found: " + wrong_kind_message(checkpoint, expected, "pass instructpix2nerf.pt")
        )
    return dict(weights)


def split_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with `prefix`, with the prefix removed; the rest is dropped.

    The prefix is matched literally: pass it with its dot (`"encoder."`).
    """
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def describe_checkpoint(loaded: Any) -> str:
    """A short human description of what a loaded checkpoint looks like (for error messages)."""
    return identify(loaded).what


def wrong_kind_message(
    loaded: Any, expected: str, default_advice: str = "check which file you passed"
) -> str:
    """'this is <what the file is>, but <expected> was expected; <where it belongs, or advice>.'"""
    kind = identify(loaded)
    return f"this is {kind.what}, but {expected} was expected; {kind.advice or default_advice}."


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items())
    )


def _wrong_kind(path: str | os.PathLike, loaded: Any, expected: str) -> CheckpointError:
    return CheckpointError(f"{path}: {wrong_kind_message(loaded, expected)}")


def _load_untrusted(path: str | os.PathLike) -> Any:
    """torch's weights-only loader first; ip2n's restricted unpickler for what it refuses.

    weights_only covers state dicts; official files also pickle Namespaces, EasyDicts and whole
    networks, which only the restricted unpickler turns into records. Plain pickles (NVIDIA network
    pickles) are not torch files, so they go to the restricted unpickler directly.
    """
    kind = sniff_checkpoint(path)
    mmap = kind == "torch_zip"
    if kind in ("torch_zip", "torch_legacy"):
        try:
            return torch.load(Path(path), map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:  # noqa: BLE001 - whatever weights_only rejects, the restricted loader judges
            logger.debug("weights-only load of %s failed (%s); using the restricted unpickler", path, exc)
    return load_checkpoint(path, mmap=mmap)
