"""Training configuration: frozen dataclasses, read from a YAML or JSON file.

A file maps section by section onto `TrainingConfig` (see configs/paper.yaml and configs/tiny.yaml);
unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ip2n.diffusion import DiTConfig, dit_config
from ip2n.limits import MAX_TRAINING_CONFIG_BYTES, config_from_dict

# Neural rendering resolution of the identity loss and of the sample grids (the released generator: 128).
MAX_RENDER_RESOLUTION = 512

MIXED_PRECISION_MODES = ("no", "bf16")
GENERATOR_FAMILIES = ("eg3d", "synthetic")


@dataclass(frozen=True)
class DataConfig:
    """Where the triplets are and where their encodings may be cached."""

    root: str = "triplets"  # folder of pair folders + dataset.json (relative paths: to the working directory)
    cache: str | None = None  # safetensors file of pre-encoded latents and identity features
    # With `cache`: write it as shards of this many pairs, read memory-mapped (data sets whose
    # encodings exceed memory; ~16 KB per pair at paper size). None: one file, loaded into memory.
    cache_shard_pairs: int | None = None
    encode_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.cache_shard_pairs is not None and (self.cache is None or self.cache_shard_pairs < 1):
            raise ValueError("data.cache_shard_pairs needs data.cache and must be at least 1")
        _check_whole("data.encode_batch_size", self.encode_batch_size, 1, 65_536)


@dataclass(frozen=True)
class ModelConfig:
    """The trained DiT and the frozen networks around it.

    `weights_dir` holds the frozen networks (converted or official files, see docs/checkpoints.md).
    None builds them with seeded random weights: only meaningful for tests and benchmarks.
    `generator_family` "eg3d" renders the identity loss with the EG3D generator `generator`
    ("ffhq512", "eg3d-small"; from `weights_dir`); "synthetic" with the procedural synthetic-heads
    generator `synthetic_preset(generator)` ("synthetic", "tiny"), which has no weights to load.
    """

    dit: str = "DiT-B_G/1_pair"
    dit_overrides: Mapping[str, Any] = field(default_factory=dict)  # DiTConfig fields replacing the preset's
    text_encoder: str = "ViT-H-14"
    encoder: str = "ir_se50"
    encoder_type: str = "Encoder4Editing"
    # PREIM3DEncoderConfig fields replacing the preset's (e.g. style_dim = the generator's w_dim); only
    # for random encoders: a weights file carries its own sizes.
    encoder_overrides: Mapping[str, Any] = field(default_factory=dict)
    identity: str = "ir_se50"
    generator_family: str = "eg3d"
    generator: str = "ffhq512"
    weights_dir: str | None = "weights"
    init_seed: int = 0  # DiT init (and the random frozen networks when weights_dir is None)

    def __post_init__(self) -> None:
        if self.generator_family not in GENERATOR_FAMILIES:
            raise ValueError(
                f"generator_family must be one of {GENERATOR_FAMILIES}, got {self.generator_family!r}"
            )

    def dit_config(self) -> DiTConfig:
        """The preset's DiT with `dit_overrides`, every value checked (`ip2n.limits.config_from_dict`)."""
        try:
            preset = dataclasses.asdict(dit_config(self.dit))
        except KeyError as exc:
            raise ValueError(f"model.dit: {exc.args[0]}") from None
        return config_from_dict(DiTConfig, {**preset, **dict(self.dit_overrides)}, "model.dit_overrides")


@dataclass(frozen=True)
class ObjectiveConfig:
    """The training objective: epsilon MSE + learned-variance bound, condition dropout, TPR, identity loss."""

    identity_weight: float = 0.1  # λ_id; 0 switches the identity loss (and its rendering) off
    identity_threshold: int = 600  # identity loss only for timesteps t < threshold
    render_resolution: int | None = (
        None  # neural rendering resolution of the identity render; None = generator's
    )
    token_position_randomization: bool = True
    condition_dropout: bool = True
    # At most this many samples of a batch (the first with t < threshold) get the identity loss;
    # None: all of them. Rendering dominates a small model's step on a CPU.
    identity_max_samples: int | None = None
    # Ablations (paper Table 3): False trains without the identity embedding (always dropped), and
    # without the source latent (the img2img baseline: a text-only model of edited latents).
    identity_conditioning: bool = True
    source_conditioning: bool = True

    def __post_init__(self) -> None:
        if self.render_resolution is not None:
            _check_whole("objective.render_resolution", self.render_resolution, 8, MAX_RENDER_RESOLUTION)
        if self.identity_max_samples is not None:
            _check_whole("objective.identity_max_samples", self.identity_max_samples, 1, None)


@dataclass(frozen=True)
class OptimizationConfig:
    """AdamW, EMA, clipping and the step budget. `batch_size` is the GLOBAL batch (all processes)."""

    steps: int = 400_000
    batch_size: int = 80
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    max_grad_norm: float | None = None  # None: no clipping (the official script does not clip)
    # The learning rate falls linearly to 0 over the budget's last `lr_decay_steps` steps; 0 keeps it
    # constant, as the official script. Part of the schedule, not of the model: a resumed run may change it.
    lr_decay_steps: int = 0
    mixed_precision: str = "no"  # "bf16": autocast the DiT forward in bfloat16

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION_MODES:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION_MODES}, got {self.mixed_precision!r}"
            )
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if not 0 <= self.lr_decay_steps <= self.steps:
            raise ValueError(
                f"lr_decay_steps must be between 0 and steps ({self.steps}), got {self.lr_decay_steps}"
            )

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of the update that takes the model from `step` to `step + 1`."""
        decay_start = self.steps - self.lr_decay_steps
        if step < decay_start:
            return self.learning_rate
        return self.learning_rate * max(self.steps - step, 0) / self.lr_decay_steps


@dataclass(frozen=True)
class LoggingConfig:
    """Progress output, checkpoints and sample grids (none of it changes what is trained)."""

    log_every: int = 100  # loss history / log file interval (steps)
    checkpoint_every: int = 5000
    progress_bar: bool = True
    sample_every: int = 5000  # sample grid interval (steps), plus one at the end; 0 switches grids off
    sample_pairs: int = 4  # grid rows: the first instruction of each of the first pairs
    sample_steps: int = 50  # DDIM steps of the edit (strength and guidance: the edit pipeline's defaults)
    sample_resolution: int | None = (
        None  # neural rendering resolution of the grid renders; None = generator's
    )

    def __post_init__(self) -> None:
        if self.sample_every < 0 or self.sample_pairs < 1:
            raise ValueError("sample_every must be ≥ 0 and sample_pairs ≥ 1")
        # Intervals divide the step count: 0 would be a division by zero.
        _check_whole("logging.log_every", self.log_every, 1, None)
        _check_whole("logging.checkpoint_every", self.checkpoint_every, 1, None)
        _check_whole("logging.sample_pairs", self.sample_pairs, 1, 64)
        _check_whole("logging.sample_steps", self.sample_steps, 1, 1000)
        if self.sample_resolution is not None:
            _check_whole("logging.sample_resolution", self.sample_resolution, 8, MAX_RENDER_RESOLUTION)


@dataclass(frozen=True)
class TrainingConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0  # data order and every training-time draw (timesteps, noise, dropout, TPR)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"]["dit_overrides"] = dict(self.model.dit_overrides)
        data["model"]["encoder_overrides"] = dict(self.model.encoder_overrides)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        return _build(cls, data, "config")

    def replace(self, **sections: Any) -> TrainingConfig:
        """A copy with whole sections or section fields replaced: replace(data={"root": "x"})."""
        merged = self.to_dict()
        for name, value in sections.items():
            merged[name] = {**merged[name], **value} if isinstance(value, Mapping) else value
        return TrainingConfig.from_dict(merged)


def _check_whole(name: str, value: Any, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}; known: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        section = _SECTIONS.get(name) if cls is TrainingConfig else None
        values[name] = _build(section, value, f"{where}.{name}") if section else value
    return cls(**values)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "objective": ObjectiveConfig,
    "optimization": OptimizationConfig,
    "logging": LoggingConfig,
}


def load_config(path: str | os.PathLike) -> TrainingConfig:
    """Read a training config from YAML (.yaml/.yml) or JSON (.json).

    Every problem — not text, a syntax error, an unknown key, a value of the wrong type or out of
    its range — raises `ValueError` naming the file (and the line of a syntax error).
    """
    path = Path(path)
    if path.stat().st_size > MAX_TRAINING_CONFIG_BYTES:
        raise ValueError(
            f"{path} is {path.stat().st_size} bytes long, far more than a training config "
            f"(at most {MAX_TRAINING_CONFIG_BYTES} bytes); check that it is the right file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"{path} is not a UTF-8 text file; expected a YAML or JSON training config"
        ) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"{path} is not valid YAML ({where}{problem})") from None
    try:
        config = TrainingConfig.from_dict(data or {})
        config.model.dit_config()  # the DiT's sizes, checked now rather than when training starts
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return config
