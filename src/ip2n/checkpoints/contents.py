"""What official files hold besides the weights a model needs, and what a file is, for people.

Released checkpoints are written by training runs, not by fresh constructors: beside the weights
they carry training state (optimizer moments, the discriminator, augmentation state, the options of
the run) and buffers that only training reads. ip2n reads the tensors a model needs, ignores the
rest and says what it ignored (`ReadWeights.ignored`, printed by `ip2n weights convert|check`).

`identify` names what a loaded file looks like (an EG3D discriminator, a PREIM3D checkpoint, the
image tower of OpenCLIP, ...) so that a file passed under the wrong name gets an error that says
what it is and where it belongs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ip2n.checkpoints.safe_unpickle import (
    EasyDictRecord,
    ModuleRecord,
    NamespaceRecord,
    ObjectRecord,
    PersistentRecord,
)

__all__ = [
    "TRAINING_EXTRAS",
    "FileKind",
    "ReadWeights",
    "describe_entry",
    "describe_value",
    "identify",
    "ignored_entries",
    "ignored_note",
]


@dataclass(frozen=True)
class ReadWeights:
    """One model's weights as read from a file: its config, its state dict, and what was left out.

    `ignored` lists, for people, every entry of the file the model does not use (training state,
    extra buffers, unknown objects): "opt: the optimizer state (training only)".
    """

    config: Any
    state_dict: dict[str, torch.Tensor]
    ignored: tuple[str, ...] = ()


# Entries that training runs leave in the official files, and why inference does not need them.
# Keys are top-level checkpoint keys, state-dict keys, or state-dict key prefixes ending in ".".
TRAINING_EXTRAS: dict[str, str] = {
    # EG3D (network-snapshot-*.pkl, and the G_ema.pkl InstructPix2NeRF ships)
    "dataset_label_std": "a buffer EG3D's training loop registers on the generator (the spread of the "
    "data set's camera labels); rendering never reads it",
    "G": "the generator's raw training weights (G_ema, their moving average, is the one for inference)",
    "D": "the discriminator (training only)",
    "augment_pipe": "the augmentation pipeline (training only)",
    "training_set_kwargs": "the options of the training data set",
    "progress": "the training progress counters",
    # InstructPix2NeRF DiT (instructpix2nerf.pt)
    "model": "the DiT's raw training weights (ema, their moving average, is the one for inference)",
    "opt": "the optimizer state (training only)",
    "args": "the options of the training run",
    # PREIM3D (preim3d.pt)
    "decoder.": "PREIM3D's copy of the EG3D generator (the generator is read from G_ema.pkl, as the "
    "official code does)",
    "latent_avg": "PREIM3D's average latent (recomputed from the generator, as the official code does)",
    "global_step": "the training step counter",
    "best_val_loss": "the best validation loss of the training run",
    "optimizer": "the optimizer state (training only)",
    "discriminator_state_dict": "the latent discriminator (training only)",
    "discriminator_optimizer_state_dict": "the latent discriminator's optimizer state (training only)",
    # OpenCLIP
    "visual.": "the OpenCLIP image tower (only the text tower is used)",
}


def _shape(value: Any) -> str:
    return "[" + ", ".join(str(size) for size in value.shape) + "]"


def describe_value(value: Any) -> str:
    """What a non-tensor value found where a tensor belongs is, for messages."""
    if isinstance(value, ObjectRecord):
        return f"the result of calling {value.class_path}, which ip2n never runs"
    return f"a {type(value).__name__}"


def describe_entry(key: str, value: Any = None) -> str:
    """'key [shape]: what it is' for an entry the model does not use."""
    shown = f"{key} {_shape(value)}" if isinstance(value, torch.Tensor) else key
    why = TRAINING_EXTRAS.get(key)
    if why is None:
        why = next(
            (
                text
                for prefix, text in TRAINING_EXTRAS.items()
                if prefix.endswith(".") and key.startswith(prefix)
            ),
            None,
        )
    if why is None and isinstance(value, ObjectRecord):
        why = f"{value.describe()}, kept as an inert record (ip2n never runs code from a file)"
    return f"{shown}: {why or 'not used by this model'}"


def ignored_entries(entries: Mapping[str, Any], *, group_prefixes: bool = True) -> tuple[str, ...]:
    """`describe_entry` for every entry; entries under a known prefix ("decoder.") become one line."""
    lines: list[str] = []
    grouped: dict[str, int] = {}
    for key, value in entries.items():
        prefix = next((p for p in TRAINING_EXTRAS if p.endswith(".") and key.startswith(p)), None)
        if group_prefixes and prefix is not None:
            grouped[prefix] = grouped.get(prefix, 0) + 1
        else:
            lines.append(describe_entry(key, value))
    for prefix, count in grouped.items():
        lines.append(f"{prefix}* ({count} tensors): {TRAINING_EXTRAS[prefix]}")
    return tuple(lines)


def ignored_note(ignored: tuple[str, ...] | list[str], max_lines: int = 8) -> str:
    """The lines of `ignored` as an indented paragraph for reports ("" when there is nothing)."""
    if not ignored:
        return ""
    lines = [f"  - {line}" for line in ignored[:max_lines]]
    if len(ignored) > max_lines:
        lines.append(f"  ... and {len(ignored) - max_lines} more")
    return "\nLeft out (not needed to edit):\n" + "\n".join(lines)


# --- what a file is -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileKind:
    """What a loaded file looks like: `what` for people, `component` the ip2n model it holds
    (a key of `editing_weights.WEIGHT_FILES`, None when it is none of them) and `advice`."""

    what: str
    component: str | None = None
    advice: str = ""


_OFFICIAL_NAME = {
    "generator": "G_ema.pkl",
    "dit": "instructpix2nerf.pt",
    "text_encoder": "open_clip_pytorch_model.bin",
    "encoder": "preim3d.pt",
    "identity": "model_ir_se50.pth",
}


def _belongs(component: str) -> str:
    return f"it belongs in the weights folder as {_OFFICIAL_NAME[component]}"


def identify(loaded: Any) -> FileKind:
    """Name what a loaded checkpoint is, from its structure and key names alone."""
    if isinstance(loaded, PersistentRecord):
        return _identify_persistent(loaded.class_name)
    if isinstance(loaded, (ModuleRecord, NamespaceRecord, EasyDictRecord, ObjectRecord)):
        return FileKind(f"a pickled {loaded.class_path}")
    if not isinstance(loaded, Mapping):
        return FileKind(f"a {type(loaded).__name__}")
    if "G_ema" in loaded:
        return FileKind("an EG3D network pickle (G, D, G_ema)", "generator", _belongs("generator"))
    if "D" in loaded and "G" in loaded:
        return FileKind(
            "an EG3D network pickle without G_ema (it has G and D)",
            advice="use the snapshot that holds G_ema, or the G_ema.pkl released with the model",
        )
    if "D" in loaded and isinstance(loaded["D"], PersistentRecord):
        return _identify_persistent(loaded["D"].class_name)
    if "state_dict" in loaded and "opts" in loaded:
        return FileKind("a PREIM3D encoder checkpoint (state_dict + opts)", "encoder", _belongs("encoder"))
    if "ema" in loaded or ("model" in loaded and "args" in loaded):
        return FileKind(
            "an InstructPix2NeRF DiT training checkpoint (model/ema/opt/args)", "dit", _belongs("dit")
        )
    return _identify_state_dict(loaded)


def _identify_persistent(class_name: str) -> FileKind:
    if class_name == "TriPlaneGenerator":
        return FileKind("an EG3D generator (TriPlaneGenerator)", "generator", _belongs("generator"))
    if "Discriminator" in class_name:
        return FileKind(
            f"EG3D's discriminator ({class_name}), which only training uses",
            advice="the generator is G_ema in the same training snapshot, or the G_ema.pkl released with "
            "the model",
        )
    return FileKind(f"a pickled EG3D network ({class_name})")


def _identify_state_dict(state: Mapping[str, Any]) -> FileKind:
    keys = [key for key in state if isinstance(key, str)]
    tensors = sum(isinstance(value, torch.Tensor) for value in state.values())
    size = f"{tensors} tensors" + (
        f" and {len(state) - tensors} other entries" if tensors < len(state) else ""
    )

    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    if has("x_embedder."):
        return FileKind(f"the InstructPix2NeRF DiT's weights ({size})", "dit", _belongs("dit"))
    if has("token_embedding.") or has("cond_stage_model.model.token_embedding"):
        return FileKind(f"OpenCLIP weights ({size})", "text_encoder", _belongs("text_encoder"))
    if has("visual.") and not has("transformer."):
        return FileKind(
            f"the image tower of an OpenCLIP model only ({size}: visual.*)",
            advice="ip2n needs the text tower (token_embedding, transformer, ln_final), which this file "
            "lacks: use the complete ViT-H-14 laion2b_s32b_b79k file (open_clip_pytorch_model.bin), or the "
            "InstructPix2NeRF DiT file that embeds it",
        )
    if has("input_layer.") and has("output_layer.") and has("body."):
        return FileKind(f"IR-SE ArcFace identity weights ({size})", "identity", _belongs("identity"))
    if has("encoder.") and has("decoder.backbone."):
        return FileKind(
            f"a PREIM3D state dict without its opts ({size})",
            "encoder",
            "use the complete preim3d.pt (with 'opts'), which says which encoder variant it is",
        )
    if has("backbone.") and has("superresolution.") and has("decoder."):
        return FileKind(f"EG3D generator weights ({size})", "generator", _belongs("generator"))
    if has("b4.out.") and has("b4.fc."):  # the epilogue of a StyleGAN2 / EG3D discriminator
        return FileKind(
            f"EG3D discriminator weights ({size}), which only training uses",
            advice="the generator is G_ema in the training snapshot, or the G_ema.pkl released with the "
            "model",
        )
    if tensors:
        sample = ", ".join(keys[:3])
        return FileKind(f"a state dict of {size} (first keys: {sample})")
    return FileKind(f"a dict with keys {sorted(map(str, state))[:8]}")
