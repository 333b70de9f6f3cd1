"""Weights of the editing models: find, load, convert and check them.

The four networks around an edit — the conditional DiT, the OpenCLIP text tower, the PREIM3D
inversion encoder and the IR-SE50 identity network — come either as the official files (untrusted
pickles, read by `ip2n.checkpoints.official` without running code) or as ip2n's converted
safetensors + JSON (`convert_editing_models`). Every loader accepts either, or a weights directory
holding one; it checks keys and shapes before building anything, builds the module on the meta
device and assigns the file's tensors (no random init), and returns it in eval mode without
gradients. Official files are memory-mapped, so tensors a loader does not use (the OpenCLIP
vision tower, the DiT's optimizer state, PREIM3D's copy of the generator) are never read.

The EG3D generator has its own module (`generator_weights`); `check_weights_dir` covers all five.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ip2n.checkpoints import generator_weights
from ip2n.checkpoints.contents import ReadWeights, identify, ignored_entries, ignored_note
from ip2n.checkpoints.finite import non_finite_in_safetensors, non_finite_tensor
from ip2n.checkpoints.official import read_torch_checkpoint, select_dit_weights, wrong_kind_message
from ip2n.checkpoints.safe_unpickle import CheckpointError
from ip2n.checkpoints.safetensors_io import CONFIG_METADATA_KEY, load_weights, save_weights
from ip2n.diffusion.dit import DIT_PRESETS, DiT, DiTConfig, dit_config
from ip2n.encoding.identity import IdentityConfig, IdentityEncoder
from ip2n.encoding.identity import preset as identity_preset
from ip2n.encoding.preim3d import PREIM3DEncoderConfig, build_encoder, encoder_weights_from_psp
from ip2n.encoding.preim3d import preset as encoder_preset
from ip2n.limits import config_from_dict
from ip2n.text.encoder import (
    DIT_CHECKPOINT_PREFIX,
    TextEncoder,
    TextEncoderConfig,
    text_encoder_config,
    text_state_dict_from,
)
from ip2n.weight_report import check_state_dict

__all__ = [
    "WEIGHT_FILES",
    "ComponentReport",
    "EditingPresets",
    "WeightFiles",
    "check_weights_dir",
    "convert_editing_models",
    "dit_weights",
    "find_weights_file",
    "identity_weights",
    "load_dit",
    "load_identity",
    "load_preim3d_encoder",
    "load_text_encoder",
    "preim3d_encoder_weights",
    "read_dit",
    "read_identity",
    "read_preim3d_encoder",
    "read_text_encoder",
]

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass(frozen=True)
class WeightFiles:
    """Where one model's weights live in a weights directory."""

    official: tuple[str, ...]  # names of the official files, in the order they are looked for
    converted: str  # name of ip2n's converted file
    kind: str  # the "kind" recorded in the converted file's config
    what: str  # for people


# The one table of file names (CLI, docs and error messages read it from here). In a directory the
# converted file wins over the official ones.
WEIGHT_FILES: dict[str, WeightFiles] = {
    "generator": WeightFiles(
        generator_weights.OFFICIAL_NAMES,
        generator_weights.CONVERTED_NAME,
        generator_weights.KIND,
        "EG3D tri-plane generator (FFHQ 512)",
    ),
    "dit": WeightFiles(
        ("instructpix2nerf.pt",),
        "dit.safetensors",
        "instructpix2nerf_dit",
        "conditional DiT (DiT-B_G/1_pair, which may embed the OpenCLIP weights)",
    ),
    "text_encoder": WeightFiles(
        ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"),
        "text_encoder.safetensors",
        "openclip_text",
        "OpenCLIP ViT-H-14 text tower (laion2b_s32b_b79k, needed only when the DiT file does not embed it)",
    ),
    "encoder": WeightFiles(
        ("preim3d.pt",),
        "encoder.safetensors",
        "preim3d_encoder",
        "PREIM3D inversion encoder (variant from the checkpoint's opts)",
    ),
    "identity": WeightFiles(
        ("model_ir_se50.pth",),
        "identity.safetensors",
        "ir_se50_identity",
        "IR-SE50 ArcFace identity network",
    ),
}
_EDITING = ("dit", "text_encoder", "encoder", "identity")


@dataclass(frozen=True)
class EditingPresets:
    """Sizes the official files are read with; the defaults are the released models.

    Official files carry no usable size information, so it is assumed and then verified against
    the file's shapes. Converted files carry their own config and ignore these.
    """

    dit: str = "DiT-B_G/1_pair"
    text_encoder: str = "ViT-H-14"
    encoder: str = "ir_se50"  # the trunk; the variant (e4e, pSp, W+) comes from the checkpoint's opts
    identity: str = "ir_se50"


_RELEASED = EditingPresets()


# --- finding files ---------------------------------------------------------------------------------


def find_weights_file(component: str, path: str | os.PathLike) -> Path:
    """`path` itself when it is a file, else the component's file inside the weights directory `path`.

    Looks for the converted file first, then the official names. The text encoder is looked for in
    the converted file, then in the DiT file (when it embeds OpenCLIP), then in the OpenCLIP files.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist; pass a weights file or the directory holding them.")
    found = _find_in_dir(component, path)
    if found is None:
        raise CheckpointError(_not_found_message(component, path))
    return found


def _find_in_dir(component: str, weights_dir: Path) -> Path | None:
    files = WEIGHT_FILES[component]
    if (weights_dir / files.converted).is_file():
        return weights_dir / files.converted
    official = _official_files(component, weights_dir)
    if component == "text_encoder":
        # Official inference overrides the OpenCLIP download with the DiT file's embedded copy.
        official = [dit for dit in _official_files("dit", weights_dir) if _dit_embeds_text(dit)] + official
    return next(iter(official), None)


def _official_files(component: str, weights_dir: Path) -> list[Path]:
    return [weights_dir / name for name in WEIGHT_FILES[component].official if (weights_dir / name).is_file()]


def _not_found_message(component: str, weights_dir: Path) -> str:
    files = WEIGHT_FILES[component]
    names = " or ".join(files.official)
    message = (
        f"no {files.what} in {weights_dir}: expected {files.converted} (converted) or the official {names}"
    )
    if component == "text_encoder":
        message += f", since {WEIGHT_FILES['dit'].official[0]} there does not embed the OpenCLIP weights"
    return message + "."


def _dit_embeds_text(path: Path) -> bool:
    try:
        return _embeds_text(select_dit_weights(read_torch_checkpoint(path)))
    except CheckpointError:
        return False


def _embeds_text(weights: Mapping[str, Any]) -> bool:
    return any(key.startswith(DIT_CHECKPOINT_PREFIX) for key in weights)


# --- official layouts → module state dicts (pure: tensors, memory-mapped tensors or meta tensors) --


def dit_weights(checkpoint: Mapping[str, Any], config: DiTConfig) -> ReadWeights:
    """The DiT of an official checkpoint (its `ema` weights, else `model`, else the file itself).

    The embedded text model (`cond_stage_model.*`) is left out: it is the text encoder's. So are
    the training state beside the weights (`model` when `ema` is there, `opt`, `args`, ...) and
    tensors the DiT does not have, all listed in `ignored`. Raises `CheckpointError` listing the
    missing and wrongly shaped keys when the weights do not fit `config`.
    """
    chosen = next((key for key in ("ema", "model") if key in checkpoint), None)
    weights = {
        key: value
        for key, value in select_dit_weights(checkpoint).items()
        if not key.startswith("cond_stage_model.")
    }
    with torch.device("meta"):
        expected = _shapes(DiT(config))
    sizes = f"hidden {config.hidden_size}, depth {config.depth}, {config.num_heads} heads"
    extra = _require_layout(
        weights,
        expected,
        f"DiT sizes assumed ({sizes}){_dit_sizes_found(weights)}",
        advice="ip2n reads the released InstructPix2NeRF checkpoint (DiT-B_G/1_pair); for a DiT of other "
        "sizes "
        f"choose the matching preset ({', '.join(DIT_PRESETS)}).",
    )
    others = {key: value for key, value in checkpoint.items() if key != chosen} if chosen else {}
    return ReadWeights(config, weights, ignored_entries(others) + ignored_entries(extra))


def _dit_sizes_found(weights: Mapping[str, Any]) -> str:
    embed = weights.get("x_embedder.proj.weight")
    if embed is None or len(embed.shape) != 4:
        return ""
    depth = len({key.split(".")[1] for key in weights if key.startswith("blocks.")})
    return f"; the file's weights look like hidden {embed.shape[0]}, depth {depth}"


def preim3d_encoder_weights(checkpoint: Mapping[str, Any], preset: str = _RELEASED.encoder) -> ReadWeights:
    """The encoder of an official PREIM3D checkpoint (`state_dict` + `opts`).

    The variant and style count come from `opts` (as in the official code); the trunk and code
    sizes from `preset`. The `decoder.*` copy of the generator, `latent_avg` and any training state
    are left out and listed in `ignored`.
    """
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint or "opts" not in checkpoint:
        expected = "a PREIM3D encoder checkpoint (a dict with 'state_dict' and 'opts')"
        raise CheckpointError(
            wrong_kind_message(checkpoint, expected, f"pass {WEIGHT_FILES['encoder'].official[0]}")
        )
    opts, state_dict = checkpoint["opts"], checkpoint["state_dict"]
    if not isinstance(opts, Mapping):
        raise CheckpointError(
            f"its 'opts' is a {type(opts).__name__}, not the dict of training options PREIM3D saves."
        )
    _require_tensors(state_dict, "a state dict of tensors under 'state_dict'")
    try:
        from_opts = PREIM3DEncoderConfig.from_opts(opts)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    config = dataclasses.replace(
        encoder_preset(preset, from_opts.encoder_type), num_styles=from_opts.num_styles
    )
    weights = encoder_weights_from_psp(state_dict)
    extra = _require_layout(
        weights,
        _encoder_shapes(config),
        f"PREIM3D {config.encoder_type} encoder ('{preset}' trunk)",
        advice="Pass the PREIM3D checkpoint InstructPix2NeRF uses (preim3d.pt); the official code always "
        "builds "
        "the IR-SE50 trunk.",
    )
    others = {key: value for key, value in checkpoint.items() if key not in ("state_dict", "opts")}
    not_encoder = {key: value for key, value in state_dict.items() if not key.startswith("encoder")}
    ignored = ignored_entries(others) + ignored_entries(not_encoder) + ignored_entries(extra)
    return ReadWeights(config, weights, ignored)


def identity_weights(state_dict: Mapping[str, Any], config: IdentityConfig) -> ReadWeights:
    """The IR-SE ArcFace network of a state dict, checked against `config`.

    Files saved by old PyTorch versions lack the BatchNorm `num_batches_tracked` counters; they are
    added as zeros (only training uses them). Tensors the network does not have are listed in
    `ignored`.
    """
    _require_tensors(state_dict, "the IR-SE50 ArcFace weights (a state dict of tensors)")
    with torch.device("meta"):
        expected = _shapes(IdentityEncoder(config))
    weights = dict(state_dict)
    extra = _require_layout(
        weights,
        expected,
        "IR-SE ArcFace identity network",
        optional_suffixes=(".num_batches_tracked",),
        advice="Pass the IR-SE50 ArcFace weights (model_ir_se50.pth).",
    )
    for key in expected.keys() - weights.keys():  # only optional counters can be absent here
        weights[key] = torch.zeros((), dtype=torch.long)
    return ReadWeights(config, weights, ignored_entries(extra))


def _require_tensors(value: Any, expected: str) -> None:
    if not (
        isinstance(value, Mapping)
        and value
        and all(isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items())
    ):
        raise CheckpointError(wrong_kind_message(value, expected))


def _require_layout(
    weights: dict[str, Any],
    expected: Mapping[str, Shape],
    what: str,
    *,
    advice: str,
    optional_suffixes: tuple[str, ...] = (),
    allow_extra: bool = True,
) -> dict[str, Any]:
    """Check `weights` against the expected keys and shapes; remove and return the extra entries.

    Raises `CheckpointError` listing the first differences when a tensor the model needs is missing
    or has another shape, or (without `allow_extra`: ip2n's own converted files) when the file
    holds tensors the model does not have.
    """
    report = check_state_dict(weights, expected, optional_suffixes)
    if not (report.ok if not allow_extra else report.complete):
        raise CheckpointError(f"the weights do not fit the {what}:\n{report.summary(max_lines=8)}\n{advice}")
    return {key: weights.pop(key) for key, _shape in report.unexpected}


def _shapes(model: nn.Module) -> dict[str, Shape]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _encoder_shapes(config: PREIM3DEncoderConfig) -> dict[str, Shape]:
    with torch.device("meta"):
        return _shapes(build_encoder(config))


def _text_weights(weights: Mapping[str, Any], config: TextEncoderConfig) -> ReadWeights:
    """The text tower in an OpenCLIP state dict or a DiT state dict embedding it."""
    try:
        text = text_state_dict_from(weights, config, allow_unexpected=True)
    except ValueError as exc:
        if not _embeds_text(weights) and identify(weights).component != "text_encoder":
            raise CheckpointError(wrong_kind_message(weights, "the OpenCLIP ViT-H-14 weights")) from None
        raise CheckpointError(
            f"{exc}\nPass the OpenCLIP ViT-H-14 weights (laion2b_s32b_b79k) or a DiT checkpoint that embeds "
            "them."
        ) from None
    clip_keys = (
        [key for key in weights if key.startswith(DIT_CHECKPOINT_PREFIX)] if _embeds_text(weights) else []
    )
    left_out = (len(clip_keys) or len(weights)) - len(text)
    ignored = (
        (
            f"{left_out} OpenCLIP tensors that penultimate-layer text features do not use (the image tower, "
            "the projections, the logit scale, the blocks after the penultimate one)",
        )
        if left_out
        else ()
    )
    return ReadWeights(config, text, ignored)


def _converted(config: Any, state_dict: dict[str, torch.Tensor], model: nn.Module, what: str) -> ReadWeights:
    """A converted file's weights, which must fit `model` (built on the meta device) exactly."""
    _require_layout(
        state_dict, _shapes(model), what, advice="Convert the official file again.", allow_extra=False
    )
    return ReadWeights(config, state_dict)


@contextlib.contextmanager
def _about(path: Path) -> Iterator[None]:
    """Name `path` in `CheckpointError`s raised inside the block that do not name it yet."""
    try:
        yield
    except CheckpointError as exc:
        if str(path) in str(exc):
            raise
        raise CheckpointError(f"{path}: {exc}") from None


# --- reading files ----------------------------------------------------------------------------------
#
# Each reader returns the `ReadWeights` (config, state dict, what was left out) of a file or weights
# directory, checked against the layout. With shapes_only, converted files yield meta tensors from
# their header (nothing read); official files are memory-mapped either way.


def read_dit(
    path: str | os.PathLike, *, preset: str = _RELEASED.dit, shapes_only: bool = False
) -> ReadWeights:
    """The DiT in an official `instructpix2nerf.pt` or a converted `dit.safetensors`."""
    path = find_weights_file("dit", path)
    with _about(path):
        if path.suffix == ".safetensors":
            data, state_dict = _read_converted(path, "dit", shapes_only)
            config = _config_from(lambda: config_from_dict(DiTConfig, data))
            with torch.device("meta"):
                read = _converted(config, state_dict, DiT(config), "DiT it describes")
            return _finite(path, read)
        return _finite(path, dit_weights(read_torch_checkpoint(path), dit_config(preset)))


def read_text_encoder(
    path: str | os.PathLike, *, preset: str = _RELEASED.text_encoder, shapes_only: bool = False
) -> ReadWeights:
    """The `TextEncoder` from an OpenCLIP file, a DiT file embedding it, or a converted file.

    Only the text tower is taken: the vision tower is never read (memory-mapped, or skipped in a
    safetensors file).
    """
    path = find_weights_file("text_encoder", path)
    with _about(path):
        if path.suffix == ".safetensors":
            if _ip2n_config(path) is not None:
                data, converted = _read_converted(path, "text_encoder", shapes_only)
                config = _config_from(lambda: config_from_dict(TextEncoderConfig, data))
                return _finite(
                    path,
                    _converted(
                        config, converted, TextEncoder(config, device="meta"), "text encoder it describes"
                    ),
                )
            weights: Mapping[str, Any] = _read_foreign_text_tower(path, shapes_only)
        else:
            weights = _text_source(read_torch_checkpoint(path))
        return _finite(path, _text_weights(weights, text_encoder_config(preset)))


def _text_source(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict holding the OpenCLIP weights: the DiT's (prefixed) or the checkpoint itself."""
    if "ema" in checkpoint or "model" in checkpoint or "x_embedder.proj.weight" in checkpoint:
        weights = select_dit_weights(checkpoint)
        if not _embeds_text(weights):
            raise CheckpointError(
                "this InstructPix2NeRF DiT checkpoint does not embed the OpenCLIP weights "
                f"(no {DIT_CHECKPOINT_PREFIX}* keys); pass the OpenCLIP ViT-H-14 file "
                f"({' or '.join(WEIGHT_FILES['text_encoder'].official)}) instead."
            )
        return weights
    _require_tensors(checkpoint, "the OpenCLIP weights (a state dict of tensors)")
    return checkpoint


def _read_foreign_text_tower(path: Path, shapes_only: bool) -> dict[str, torch.Tensor]:
    """The non-vision entries of a safetensors file written elsewhere (open_clip's own file)."""
    with _safetensors_errors(), safe_open(path, framework="pt") as handle:
        return _tensors(handle, [key for key in handle.keys() if not key.startswith("visual.")], shapes_only)


def _tensors(handle: Any, keys: list[str], shapes_only: bool) -> dict[str, torch.Tensor]:
    """Tensors `keys` of an open safetensors file, or meta tensors of their shapes (nothing read)."""
    if shapes_only:
        return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in keys}
    return {key: handle.get_tensor(key) for key in keys}


def read_preim3d_encoder(
    path: str | os.PathLike, *, preset: str = _RELEASED.encoder, shapes_only: bool = False
) -> ReadWeights:
    """The encoder in an official `preim3d.pt` or a converted `encoder.safetensors`."""
    path = find_weights_file("encoder", path)
    with _about(path):
        if path.suffix == ".safetensors":
            data, weights = _read_converted(path, "encoder", shapes_only)
            config = _config_from(lambda: PREIM3DEncoderConfig.from_dict(data))
            with torch.device("meta"):
                model = build_encoder(config)
            what = f"PREIM3D {config.encoder_type} encoder it describes"
            return _finite(path, _converted(config, weights, model, what))
        return _finite(path, preim3d_encoder_weights(read_torch_checkpoint(path), preset))


def read_identity(
    path: str | os.PathLike, *, preset: str = _RELEASED.identity, shapes_only: bool = False
) -> ReadWeights:
    """The identity network in an official `model_ir_se50.pth` or a converted `identity.safetensors`."""
    path = find_weights_file("identity", path)
    with _about(path):
        if path.suffix == ".safetensors":
            data, state_dict = _read_converted(path, "identity", shapes_only)
            config = _config_from(lambda: IdentityConfig.from_dict(data))
            with torch.device("meta"):
                read = _converted(
                    config, state_dict, IdentityEncoder(config), "identity network it describes"
                )
            return _finite(path, read)
        return _finite(path, identity_weights(read_torch_checkpoint(path), identity_preset(preset)))


def _ip2n_config(path: Path) -> dict[str, Any] | None:
    """The config in a safetensors file's metadata; None for files not written by ip2n."""
    with _safetensors_errors(), safe_open(path, framework="pt") as handle:
        text = (handle.metadata() or {}).get(CONFIG_METADATA_KEY)
    if text is None:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"its config is not valid JSON ({exc}); convert the checkpoint again."
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError("its config is not a JSON object; convert the checkpoint again.")
    return config


def _read_converted(
    path: Path, component: str, shapes_only: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config, tensors) of a converted file, after checking it holds `component`."""
    files = WEIGHT_FILES[component]
    config = _ip2n_config(path) or {}
    if config.get("kind") != files.kind:
        found = f"the weights of a {config['kind']}" if "kind" in config else "no ip2n model config"
        raise CheckpointError(
            f"it holds {found}, not the {files.what}; pass {files.converted} or convert the official "
            f"{' / '.join(files.official)} again."
        )
    if shapes_only:
        with _safetensors_errors(), safe_open(path, framework="pt") as handle:
            tensors = _tensors(handle, list(handle.keys()), shapes_only=True)
    else:
        tensors, _ = load_weights(path)
    return config.get("config", {}), tensors


def _finite(path: Path, read: ReadWeights) -> ReadWeights:
    """`read`, after checking that its weights hold no NaN or infinite value (in chunks: memory-mapped
    tensors are read a slice at a time, and the meta tensors of a header-only read from the file)."""
    bad = non_finite_tensor(read.state_dict)
    meta = [key for key, value in read.state_dict.items() if value.is_meta]
    if bad is None and meta and path.suffix == ".safetensors":
        with _safetensors_errors():
            bad = non_finite_in_safetensors(path, meta)
    if bad is not None:
        raise CheckpointError(
            f"the weight {bad} holds NaN or infinite values; the file is damaged, or the training run that "
            "wrote it diverged. Download or convert the weights again."
        )
    return read


def _config_from(make_config: Callable[[], Any]) -> Any:
    """`make_config()`, with a bad stored config reported as a damaged file."""
    try:
        return make_config()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(
            f"its model config is not valid ({exc}); convert the checkpoint again."
        ) from None


@contextlib.contextmanager
def _safetensors_errors() -> Iterator[None]:
    """safetensors' parsing errors → a `CheckpointError` about a damaged file."""
    try:
        yield
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read it as safetensors ({exc}); the file is damaged or incomplete: convert or download "
            "it again."
        ) from None


# --- building modules ---------------------------------------------------------------------------------


def _build(model: ModuleT, state_dict: Mapping[str, torch.Tensor], device: str | torch.device) -> ModuleT:
    """Assign checked weights to a module built on the meta device; eval mode, no gradients."""
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_dit(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, preset: str = _RELEASED.dit
) -> DiT:
    """The conditional DiT from `instructpix2nerf.pt`, `dit.safetensors` or a weights directory.

    Official files are read with the `preset` sizes (the released "DiT-B_G/1_pair") and rejected
    with a list of the differences when they do not fit; embedded OpenCLIP weights are not loaded
    here (see `load_text_encoder`).
    """
    read = read_dit(path, preset=preset)
    with torch.device("meta"):
        model = DiT(read.config)
    return _build(model, read.state_dict, device)


def load_text_encoder(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, preset: str = _RELEASED.text_encoder
) -> TextEncoder:
    """The OpenCLIP text tower from an OpenCLIP file, a DiT file embedding it, a converted file or folder."""
    read = read_text_encoder(path, preset=preset)
    return _build(TextEncoder(read.config, device="meta"), read.state_dict, device)


def load_preim3d_encoder(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, preset: str = _RELEASED.encoder
) -> tuple[nn.Module, PREIM3DEncoderConfig]:
    """(encoder, config) from `preim3d.pt`, `encoder.safetensors` or a directory.

    The encoder maps (N, 3, R, R) images in [-1, 1] to W+ codes (N, num_styles, style_dim) relative
    to the generator's average latent; its class follows the checkpoint's `opts["encoder_type"]`.
    """
    read = read_preim3d_encoder(path, preset=preset)
    with torch.device("meta"):
        model = build_encoder(read.config)
    return _build(model, read.state_dict, device), read.config


def load_identity(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, preset: str = _RELEASED.identity
) -> IdentityEncoder:
    """The IR-SE50 ArcFace network from `model_ir_se50.pth`, `identity.safetensors` or a directory."""
    read = read_identity(path, preset=preset)
    with torch.device("meta"):
        model = IdentityEncoder(read.config)
    return _build(model, read.state_dict, device)


# --- converting ---------------------------------------------------------------------------------------


def convert_editing_models(
    src_dir: str | os.PathLike, out_dir: str | os.PathLike, presets: EditingPresets = _RELEASED
) -> list[Path]:
    """Convert the official editing-model files present in `src_dir` to safetensors + JSON in `out_dir`.

    The text encoder is taken from the DiT file when it embeds OpenCLIP, else from an OpenCLIP
    file. Each converted file's JSON records its source and what was left out of it (`ignored`).
    Returns the written `.safetensors` paths (none when `src_dir` holds no editing-model file).
    Raises `CheckpointError` for a file that cannot be read or does not fit.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    sources = {component: next(iter(_official_files(component, src_dir)), None) for component in _EDITING}
    if not any(sources.values()):
        return []
    if sources["dit"] is not None and _dit_embeds_text(sources["dit"]):
        sources["text_encoder"] = sources["dit"]
    written = []
    for component, source in sources.items():
        files = WEIGHT_FILES[component]
        if source is None:
            logger.warning("no %s in %s (%s); not converted", files.what, src_dir, " / ".join(files.official))
            continue
        read = _READERS[component](source, preset=getattr(presets, component))
        metadata = {
            "kind": files.kind,
            "config": dataclasses.asdict(read.config),
            "source": source.name,
            "ignored": list(read.ignored),
        }
        written.append(save_weights(out_dir / files.converted, read.state_dict, metadata))
        logger.info("converted %s (%s) to %s", source.name, component, written[-1])
    return written


# --- checking -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentReport:
    """What `check_weights_dir` found for one model."""

    name: str  # key of WEIGHT_FILES
    file: Path | None  # the file checked; None when there is none
    ok: bool  # present, safely readable, and its keys and shapes fit the expected architecture
    summary: str  # one paragraph for people


def check_weights_dir(
    weights_dir: str | os.PathLike, presets: EditingPresets = _RELEASED
) -> list[ComponentReport]:
    """Check every model's weights in `weights_dir` (generator, DiT, text encoder, encoder, identity).

    Reads only what the check needs (headers of converted files; official files memory-mapped) and
    never raises for a bad file: each problem becomes the summary of a not-ok report.
    """
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        return [
            ComponentReport(name, None, False, f"{weights_dir} is not a directory.") for name in WEIGHT_FILES
        ]
    return [_check_generator(weights_dir)] + [
        _check_component(name, weights_dir, presets) for name in _EDITING
    ]


def _check_generator(weights_dir: Path) -> ComponentReport:
    try:
        file = generator_weights.find_generator_file(weights_dir)
    except CheckpointError:
        return ComponentReport("generator", None, False, _not_found_message("generator", weights_dir))
    try:
        ok, summary = generator_weights.check_generator_file(file)
    except Exception as exc:  # noqa: BLE001 - a damaged file must become a report line, whatever breaks
        return _unexpected_failure("generator", file, exc)
    return ComponentReport("generator", file, ok, summary)


def _check_component(name: str, weights_dir: Path, presets: EditingPresets) -> ComponentReport:
    file = _find_in_dir(name, weights_dir)
    if file is None:
        return ComponentReport(name, None, False, _not_found_message(name, weights_dir))
    try:
        read = _READERS[name](file, preset=getattr(presets, name), shapes_only=True)
    except CheckpointError as exc:
        return ComponentReport(name, file, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a damaged file must become a report line, whatever breaks
        return _unexpected_failure(name, file, exc)
    count = sum(value.numel() for value in read.state_dict.values())
    origin = "converted" if file.name == WEIGHT_FILES[name].converted else "official"
    description = _DESCRIPTIONS[name](read.config, getattr(presets, name))
    return ComponentReport(
        name,
        file,
        True,
        f"{file.name} ({origin}): {description}; {len(read.state_dict)} tensors, "
        f"{count / 1e6:.1f} M numbers, all with the expected shapes.{ignored_note(read.ignored)}",
    )


def _unexpected_failure(name: str, file: Path, exc: Exception) -> ComponentReport:
    logger.debug("checking %s failed", file, exc_info=True)
    return ComponentReport(
        name,
        file,
        False,
        f"{file}: unexpected error while reading it ({type(exc).__name__}: "
        f"{exc}); the file is probably damaged: download or convert it again.",
    )


def _describe_dit(config: DiTConfig, preset: str) -> str:
    sizes = f"hidden {config.hidden_size}, depth {config.depth}, {config.num_heads} heads"
    return f"conditional DiT ({sizes}){_preset_note(config == dit_config(preset), preset)}"


def _describe_text(config: TextEncoderConfig, preset: str) -> str:
    sizes = f"width {config.width}, {config.layers} blocks of which {config.blocks_run} are run"
    return f"OpenCLIP text tower ({sizes}){_preset_note(config == text_encoder_config(preset), preset)}"


def _describe_encoder(config: PREIM3DEncoderConfig, preset: str) -> str:
    released = dataclasses.replace(encoder_preset(preset, config.encoder_type), num_styles=config.num_styles)
    sizes = f"{config.num_styles}×{config.style_dim} codes from {config.resolution}² images"
    return f"PREIM3D {config.encoder_type} encoder ({sizes}){_preset_note(config == released, preset)}"


def _describe_identity(config: IdentityConfig, preset: str) -> str:
    sizes = f"{sum(config.backbone.stage_units)} IR-SE units, {config.feature_dim}-d features"
    return f"ArcFace identity network ({sizes}){_preset_note(config == identity_preset(preset), preset)}"


def _preset_note(matches: bool, preset: str) -> str:
    return (
        "" if matches else f" (not the '{preset}' sizes, but consistent with the config stored in the file)"
    )


_READERS: dict[str, Callable[..., ReadWeights]] = {
    "dit": read_dit,
    "text_encoder": read_text_encoder,
    "encoder": read_preim3d_encoder,
    "identity": read_identity,
}
_DESCRIPTIONS: dict[str, Callable[[Any, str], str]] = {
    "dit": _describe_dit,
    "text_encoder": _describe_text,
    "encoder": _describe_encoder,
    "identity": _describe_identity,
}
