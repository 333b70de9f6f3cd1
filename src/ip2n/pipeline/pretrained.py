"""`EditPipeline.from_pretrained` / `save_pretrained`: a pipeline by name, from a folder, or from the Hub.

A folder `save_pretrained` writes holds ip2n's converted files (safetensors + JSON, the names of
`ip2n.checkpoints.editing_weights.WEIGHT_FILES`) and an index, `ip2n_pipeline.json`, written last,
saying which kind of model it is (as diffusers' `model_index.json` does):

- "eg3d": the EG3D generator and the four editing networks (`generator.safetensors`, `dit`,
  `text_encoder`, `encoder`, `identity`) plus `latent_avg.safetensors` — read by
  `EditPipeline.from_weights`, and by `ip2n edit --weights` and `ip2n weights check`;
- "synthetic-world": the synthetic world's four trained networks and `world.json` (its procedural
  generator has no weights) — read by the loader its folder kind registers (`ip2n.registry`; the
  built-in model's, `ip2n.builtin.load_synthetic_pipeline`), like the folders
  `ip2n synth train-all` writes.

The index also records the sampling defaults, the model's name and whether it is a world model, so a
round trip gives the same pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ip2n.atomic import write_text_atomic
from ip2n.checkpoints.editing_weights import WEIGHT_FILES
from ip2n.checkpoints.generator_weights import LATENT_AVG_NAME
from ip2n.checkpoints.safe_unpickle import CheckpointError
from ip2n.checkpoints.safetensors_io import save_weights
from ip2n.defaults import EditDefaults
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.registry import FOLDER_KINDS, MODEL_PRESETS, SYNTHETIC_WORLD_KIND
from ip2n.version import __version__

if TYPE_CHECKING:
    from ip2n.checkpoints.editing_weights import EditingPresets
    from ip2n.pipeline.edit import EditPipeline

INDEX_NAME = "ip2n_pipeline.json"
WORLD_MANIFEST = "world.json"  # a synthetic world's folder (`ip2n synth train-all`) holds one
KIND_EG3D = "eg3d"
KIND_WORLD = SYNTHETIC_WORLD_KIND
# Names `from_pretrained` takes for the built-in model, as well as its preset names.
BUILTIN_ALIASES = {"builtin": "synthetic", "built-in": "synthetic"}
# Editing networks by pipeline attribute → WEIGHT_FILES component.
_NETWORKS = {
    "dit": "dit",
    "text_encoder": "text_encoder",
    "encoder": "encoder",
    "identity_encoder": "identity",
}
# A Hugging Face model id: "owner/name" (letters, digits, '-', '_', '.'), not a path.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")


def hub_file_patterns() -> list[str]:
    """The files `from_pretrained` fetches from a Hub repository: those ip2n reads, nothing else."""
    names = {INDEX_NAME, WORLD_MANIFEST, LATENT_AVG_NAME}
    for files in WEIGHT_FILES.values():
        names.update(files.official)
        names.add(files.converted)
        names.add(files.converted.removesuffix(".safetensors") + ".json")
    return sorted(names)


def load_pretrained(
    cls: type[EditPipeline],
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device,
    sizes: EditingPresets | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    progress: bool = False,
) -> EditPipeline:
    """See `EditPipeline.from_pretrained`."""
    text = os.fspath(name_or_path)
    preset = BUILTIN_ALIASES.get(text, text)
    if isinstance(name_or_path, str) and preset in MODEL_PRESETS and not Path(text).exists():
        return cls.from_preset(preset, device, progress=progress)
    folder = Path(text).expanduser()
    if not folder.exists():
        if not (isinstance(name_or_path, str) and _REPO_ID.match(text)):
            raise FileNotFoundError(
                f"{text} is not a built-in model ({', '.join(sorted([*MODEL_PRESETS, *BUILTIN_ALIASES]))}), "
                "an existing folder, or a Hugging Face model id (owner/name)"
            )
        folder = hub_snapshot(
            text, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is a file; pass the folder that holds it (with the other weight files)"
        )
    return load_folder(cls, folder, device=device, sizes=sizes, progress=progress)


def load_folder(
    cls: type[EditPipeline],
    folder: Path,
    *,
    device: str | torch.device,
    sizes: EditingPresets | None = None,
    progress: bool = False,
) -> EditPipeline:
    """A pipeline from a local folder: by its index, as a synthetic world, or as weight files."""
    from ip2n.pipeline.edit import resolve_device

    index = read_index(folder)
    if index:
        kind = index.get("kind")
    else:  # a folder `ip2n synth train-all` or another trainer wrote: known by its manifest
        marked = [name for name, known in FOLDER_KINDS.items() if (folder / known.manifest).is_file()]
        kind = marked[0] if marked else KIND_EG3D
    if kind == KIND_EG3D:
        pipeline = cls.from_weights(folder, device, sizes=sizes, progress=progress)
    elif isinstance(kind, str) and kind in FOLDER_KINDS:
        pipeline = FOLDER_KINDS[kind].load(folder, resolve_device(device), progress)
    else:
        known = ", ".join(repr(name) for name in [KIND_EG3D, *FOLDER_KINDS])
        raise CheckpointError(
            f"{folder / INDEX_NAME} describes a model of kind {kind!r}, which this version of ip2n "
            f"({__version__}) does not know ({known}); upgrade ip2n, or save the pipeline again"
        )
    if index:
        try:
            if "edit_defaults" in index:
                pipeline.defaults = EditDefaults.from_dict(dict(index["edit_defaults"]))
            pipeline.world_model = bool(index.get("world_model", pipeline.world_model))
            pipeline.model_name = str(index.get("model_name") or pipeline.model_name)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{folder / INDEX_NAME} is damaged ({exc}); save the pipeline again"
            ) from None
    return pipeline


def read_index(folder: Path) -> dict[str, Any] | None:
    """The folder's `ip2n_pipeline.json`, or None when it has none."""
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); save the pipeline again") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"{path} is not a JSON object; save the pipeline again")
    return index


def hub_snapshot(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local folder with the files of Hub model `repo_id` that ip2n reads (`hub_file_patterns`)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(
            f"{repo_id} is not a local folder; to fetch it from the Hugging Face Hub install huggingface_hub "
            "(pip install huggingface_hub)"
        ) from None
    folder = snapshot_download(
        repo_id,
        revision=revision,
        cache_dir=None if cache_dir is None else Path(cache_dir),
        token=token,
        local_files_only=local_files_only,
        allow_patterns=hub_file_patterns(),
    )
    return Path(folder)


def save_pretrained(pipeline: EditPipeline, save_directory: str | os.PathLike) -> list[Path]:
    """See `EditPipeline.save_pretrained`."""
    folder = Path(save_directory)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder; choose another folder to save into")
    folder.mkdir(parents=True, exist_ok=True)
    source = f"EditPipeline.save_pretrained from {pipeline.model_name or 'a pipeline'} (ip2n {__version__})"
    written: list[Path] = []
    defaults = dataclasses.asdict(pipeline.defaults)
    generator = pipeline.generator
    if isinstance(generator, TriPlaneGenerator):
        kind = KIND_EG3D
        files = WEIGHT_FILES["generator"]
        config = {"kind": files.kind, "config": generator.config.to_dict(), "source": source}
        written.append(save_weights(folder / files.converted, _cpu_state(generator), config))
        written.append(
            save_weights(
                folder / LATENT_AVG_NAME,
                {"latent_avg": pipeline.latent_avg.detach().cpu()},
                {"kind": "latent_avg", "source": source},
            )
        )
    else:
        kind = KIND_WORLD
        _check_world_generator(pipeline)
    for attribute, component in _NETWORKS.items():
        network = getattr(pipeline, attribute)
        files = WEIGHT_FILES[component]
        config = {"kind": files.kind, "config": dataclasses.asdict(network.config), "source": source}
        written.append(save_weights(folder / files.converted, _cpu_state(network), config))
    if kind == KIND_WORLD:
        manifest = {"edit_defaults": defaults, "provenance": source}
        written.append(folder / WORLD_MANIFEST)
        write_text_atomic(written[-1], json.dumps(manifest, indent=2) + "\n")
    index = {
        "_class_name": "EditPipeline",
        "ip2n_version": __version__,
        "kind": kind,
        "model_name": pipeline.model_name,
        "world_model": pipeline.world_model,
        "edit_defaults": defaults,
        "files": sorted(path.name for path in written),
    }
    written.append(folder / INDEX_NAME)
    write_text_atomic(written[-1], json.dumps(index, indent=2) + "\n")
    return written


def _cpu_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu() for key, value in network.state_dict().items()}


def _check_world_generator(pipeline: EditPipeline) -> None:
    """A world's generator is procedural: only one its folder kind can rebuild can be saved."""
    world = FOLDER_KINDS.get(KIND_WORLD)
    if world is None or not world.can_save(pipeline):
        raise ValueError(
            "save_pretrained saves EG3D pipelines and the synthetic world's on the generator preset "
            "its loader rebuilds; this pipeline's generator is neither"
        )
