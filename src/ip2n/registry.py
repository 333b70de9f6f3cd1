"""The registry of named models: what `EditPipeline.from_preset(name)` and `from_pretrained` can load.

The pipeline looks models up here and knows none of them itself; a model registers from the layer
above it (`ip2n.builtin` registers the built-in synthetic world when `ip2n` is imported). Two kinds
of entry:

- a named model (`register_model`): how to load it, its sampling defaults without loading it, and
  whether it was trained on the synthetic world (then it edits that world's heads only);
- a kind of weights folder (`register_folder_kind`): how to load a folder whose `ip2n_pipeline.json`
  names that kind, or which holds the kind's manifest file (a synthetic world's `world.json`), and
  whether a pipeline can be saved as one.

This module imports nothing heavy: the CLI's help reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ip2n.defaults import EditDefaults
    from ip2n.pipeline.edit import EditPipeline


@dataclass(frozen=True)
class ModelPreset:
    """A trained model known by name: how to load it, and its sampling defaults without loading it."""

    load: Callable[[torch.device, bool], EditPipeline]  # (device, progress) → pipeline
    edit_defaults: Callable[[], EditDefaults]
    world_model: bool = False  # trained on the synthetic world: edits its heads only (`pipeline.scope`)


@dataclass(frozen=True)
class FolderKind:
    """A kind of weights folder other than EG3D's converted or official files."""

    manifest: str  # a file that marks a folder of this kind when it has no ip2n_pipeline.json
    load: Callable[[Path, torch.device, bool], EditPipeline]  # (folder, device, progress) → pipeline
    can_save: Callable[[EditPipeline], bool]  # whether `save_pretrained` can write the pipeline as one


# The folder kind of a synthetic world's trained networks (`ip2n synth train-all`, `save_pretrained`).
SYNTHETIC_WORLD_KIND = "synthetic-world"

MODEL_PRESETS: dict[str, ModelPreset] = {}
FOLDER_KINDS: dict[str, FolderKind] = {}


def register_model(name: str, preset: ModelPreset) -> None:
    """Make `name` loadable by `EditPipeline.from_preset` / `from_pretrained` and `ip2n edit --model`."""
    if name in MODEL_PRESETS and MODEL_PRESETS[name] != preset:
        raise ValueError(f"a model named {name!r} is registered already")
    MODEL_PRESETS[name] = preset


def register_folder_kind(kind: str, folder_kind: FolderKind) -> None:
    """Make `from_pretrained` load folders of `kind` (and `save_pretrained` write them)."""
    if kind in FOLDER_KINDS and FOLDER_KINDS[kind] != folder_kind:
        raise ValueError(f"a folder kind {kind!r} is registered already")
    FOLDER_KINDS[kind] = folder_kind
