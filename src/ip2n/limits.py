"""The resource budget: an upper bound for every size a file, a flag or a web request can set.

Sizes decide memory and time: a converted weights file whose config asks for a 100 000² neural
render, a flag asking for a 3000³ mesh grid or a latent file declaring 10¹² numbers must be refused
with a message, not attempted. The bounds are generous for real models (the released FFHQ-512 sizes
times a few) and listed, with where each is enforced, in docs/security.md.

`config_from_dict` builds a model config (a frozen dataclass) from the JSON of a weights file,
checking every key, type and size against `CONFIG_LIMITS` before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

# --- flags and requests ---------------------------------------------------------------------------

MAX_THREADS = 256  # --threads
MAX_VIEWS = 32  # edited views in views.png (ip2n edit / demo --views, EditResult.save)
MAX_VIDEO_FRAMES = 720  # orbit frames (30 s at 24 fps; each frame is held as 512² uint8)
MAX_FPS = 120
MAX_MESH_RESOLUTION = 512  # density grid N³ (512³ floats = 0.5 GB; the minimum is in ip2n.defaults)
MIN_ALIGN_SIZE = 64
MAX_ALIGN_SIZE = 4096  # ip2n align --size (the long side ip2n works at, pipeline.inputs.WORKING_SIDE)
MAX_SWEEP_COMBINATIONS = 64  # strength × text × image values of one `ip2n edit` sweep
MAX_SEED = 2**63 - 1
MAX_GUIDANCE_SCALE = 30.0  # text and image guidance, from 0 (the paper uses 2.5 and 1.0)
MAX_INSTRUCTION_CHARACTERS = 4000  # longer text never fits 77 tokens; refused before tokenizing
MAX_PROMPT_LIST_BYTES = 16 * 2**20  # an `ip2n edit --batch` prompt-list JSON
MAX_TRAINING_CONFIG_BYTES = 2**20  # an `ip2n train --config` file
MAX_UPLOAD_MB = 1024.0  # ip2n serve --max-upload-mb
MAX_UPLOAD_FILES = 4  # files in one upload request of the web app
MAX_CONCURRENCY = 64
MAX_QUEUE_SIZE = 10_000
MAX_KEEP = 100_000  # request folders (and uploads) the web app keeps
MAX_TIMEOUT_SECONDS = 86_400.0

# --- sizes in model configs read from files ---------------------------------------------------------

Bound = tuple[float, float]

# class name → field → (lowest, highest) allowed value. Every int field of a config read from a file
# must have a bound here; floats are checked to be finite, and against a bound when one is given.
CONFIG_LIMITS: dict[str, dict[str, Bound]] = {
    "RenderingConfig": {
        "depth_resolution": (2, 192),  # released: 48
        "depth_resolution_importance": (0, 192),  # released: 48
        "ray_start": (0.0, 1000.0),
        "ray_end": (0.0, 1000.0),
        "box_warp": (0.0, 1000.0),
        "density_noise": (0.0, 100.0),
    },
    "EG3DConfig": {
        "z_dim": (1, 2048),  # released: 512
        "w_dim": (1, 2048),  # 512
        "c_dim": (0, 128),  # 25
        "mapping_layers": (1, 32),  # 2
        "mapping_hidden": (1, 4096),  # 512
        "channel_base": (1, 131_072),  # 32768
        "channel_max": (1, 2048),  # 512
        "plane_resolution": (4, 1024),  # 256
        "plane_channels": (1, 128),  # 32
        "img_resolution": (64, 2048),  # 512
        "neural_rendering_resolution": (8, 512),  # 128
        "decoder_hidden": (1, 1024),  # 64
        "avg_camera_radius": (0.0, 1000.0),
    },
    "DiTConfig": {
        "input_size": (1, 16),  # released: 4
        "patch_size": (1, 16),  # 1
        "in_channels": (1, 8192),  # 1024
        "out_channels": (1, 4096),  # 512
        "hidden_size": (4, 4096),  # 768
        "depth": (1, 64),  # 12
        "num_heads": (1, 128),  # 12
        "mlp_ratio": (0.0, 16.0),  # 4
        "num_classes": (1, 10_000),  # 1
        "class_dropout_prob": (0.0, 1.0),
        "context_dim": (1, 8192),  # 1024
        "identity_dim": (1, 4096),  # 512
        "attribute_dim": (1, 1024),  # 40
        "camera_dim": (1, 256),  # 25
        "clip_feature_dim": (1, 8192),  # 1024
        "frequency_dim": (2, 4096),  # 256
        "latent_scale": (1e-6, 1e6),
    },
    "TextEncoderConfig": {
        "width": (1, 8192),  # released (ViT-H-14): 1024
        "heads": (1, 128),  # 16
        "layers": (1, 96),  # 24
        "context_length": (1, 77),  # 77: the tokenizer's window
        "vocab_size": (1, 262_144),  # 49408
        "mlp_ratio": (0.0, 16.0),
        "skip_last_layers": (0, 95),
    },
    "IRSEConfig": {
        "stem_channels": (1, 1024),  # released (IR-SE50): 64
        "stage_channels": (1, 4096),  # each; up to 512
        "stage_units": (1, 64),  # each; up to 14
        "se_reduction": (1, 1024),  # 16
    },
    "PREIM3DEncoderConfig": {
        "num_styles": (1, 64),  # released: 14
        "style_dim": (1, 4096),  # 512
        "resolution": (32, 1024),  # 256
    },
    "IdentityConfig": {
        "input_size": (16, 1024),  # released: 112
        "feature_dim": (1, 4096),  # 512
        "dropout": (0.0, 1.0),
    },
    "SyntheticHeadsConfig": {
        "w_dim": (1, 1024),  # built-in: 64
        "z_dim": (1, 4096),  # 64
        "img_resolution": (8, 1024),  # 128
        "neural_rendering_resolution": (8, 512),  # 64
    },
    "AttributeClassifierConfig": {
        "input_size": (16, 1024),  # built-in: 64
    },
}
MAX_TUPLE_LENGTH = 64  # e.g. the stages of a trunk

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A model config (from a weights file) with a missing, unknown, mistyped or out-of-bounds value."""


def config_from_dict(cls: type[ConfigT], data: Any, where: str = "config") -> ConfigT:
    """Build the dataclass `cls` from `data` (JSON), checking every value first.

    Unknown keys, missing nested configs, values of the wrong type, non-finite numbers and sizes
    outside `CONFIG_LIMITS` raise `ConfigError` naming the field (`where.field`), the value and the
    bound. Missing plain fields take their defaults (files written by earlier versions lack newer
    fields).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {_kind(data)}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(str(key)[:60] for key in data if key not in fields)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConfigError(f"{where} has unknown key(s) {shown}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    limits = CONFIG_LIMITS.get(cls.__name__, {})
    values: dict[str, Any] = {}
    for name, field in fields.items():
        path = f"{where}.{name}"
        hint = hints[name]
        if name not in data:
            has_default = (
                field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            )
            if not has_default or dataclasses.is_dataclass(_without_none(hint)[0]):
                raise ConfigError(f"{path} is missing")
            continue
        values[name] = _checked(hint, data[name], path, limits.get(name))
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_config(config: Any, where: str = "config") -> None:
    """Check a config built by other means (e.g. from an official pickle's options) the same way."""
    config_from_dict(type(config), _as_dict(config), where)


def _as_dict(config: Any) -> dict[str, Any]:
    # dataclasses.asdict would deep-copy whatever a hostile file put in a field; read one level at a time.
    values = {}
    for field in dataclasses.fields(config):
        if field.init:
            value = getattr(config, field.name)
            values[field.name] = _as_dict(value) if dataclasses.is_dataclass(value) else value
    return values


def _without_none(hint: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) for `X | None` and `Optional[X]`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(options) == 1:
            return options[0], len(options) < len(typing.get_args(hint))
    return hint, False


def _checked(hint: Any, value: Any, path: str, bound: Bound | None) -> Any:
    hint, optional = _without_none(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path} must not be null")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return config_from_dict(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {_shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be a whole number, got {_shown(value)}")
        if bound is None:
            raise ConfigError(f"{path}: no bound is declared for this size (ip2n.limits.CONFIG_LIMITS)")
        _check_bound(value, bound, path)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {_shown(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value}")
        if bound is not None:
            _check_bound(value, bound, path)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be text, got {_shown(value)}")
        return value
    if typing.get_origin(hint) is tuple:
        return _checked_tuple(hint, value, path, bound)
    return value


def _checked_tuple(hint: Any, value: Any, path: str, bound: Bound | None) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path} must be a list, got {_shown(value)}")
    if len(value) > MAX_TUPLE_LENGTH:
        raise ConfigError(f"{path} has {len(value)} entries, above the limit of {MAX_TUPLE_LENGTH}")
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        item_types = [args[0]] * len(value)
    elif len(args) != len(value):
        raise ConfigError(f"{path} must have {len(args)} entries, got {len(value)}")
    else:
        item_types = list(args)
    return tuple(
        _checked(item_type, item, f"{path}[{index}]", bound)
        for index, (item_type, item) in enumerate(zip(item_types, value))
    )


def _check_bound(value: float, bound: Bound, path: str) -> None:
    low, high = bound
    if value > high:
        raise ConfigError(f"{path} = {_scalar(value)} is above the limit of {_number(high)}")
    if value < low:
        raise ConfigError(f"{path} = {_scalar(value)} is below the minimum of {_number(low)}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _scalar(value: float) -> str:
    # int → str is refused by Python beyond 4300 digits; a file may hold such a number.
    if isinstance(value, int) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit number"
    return str(value)


def _shown(value: Any) -> str:
    """A value for a message: scalars as they are (shortened), containers only by their type (their
    repr could be huge: files may hold deeply shared structures)."""
    if isinstance(value, (bool, int, float)):
        return f"{_scalar(value)} ({_kind(value)})"
    if isinstance(value, str):
        text = repr(value)
        return f"{text[:60]}… (text)" if len(text) > 60 else f"{text} (text)"
    return f"a {_kind(value)}"
