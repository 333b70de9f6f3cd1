"""EG3D generator weights: find, load, convert and check them; the seeded built-in generator.

Accepted files (docs/checkpoints.md): an official `G_ema.pkl` (whole pickled module or NVIDIA
network pickle, read without executing anything), a plain state dict, or our converted
`generator.safetensors`. Converting also caches PREIM3D's `latent_avg` (`latent_avg.safetensors`),
which the official code recomputes from 10 000 mapping samples at every start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ip2n.checkpoints.contents import ReadWeights, ignored_entries, ignored_note
from ip2n.checkpoints.finite import non_finite_tensor
from ip2n.checkpoints.official import read_eg3d_generator
from ip2n.checkpoints.safe_unpickle import CheckpointError
from ip2n.checkpoints.safetensors_io import load_weights, save_weights
from ip2n.generator.config import EG3DConfig, preset
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.generator.latent_avg import compute_latent_avg
from ip2n.limits import ConfigError, check_config
from ip2n.weight_report import check_state_dict

logger = logging.getLogger(__name__)

CONVERTED_NAME = "generator.safetensors"
LATENT_AVG_NAME = "latent_avg.safetensors"
# Names under which people keep the official generator, in the order we look for them.
OFFICIAL_NAMES = ("G_ema.pkl", "ffhq512-128.pkl")
KIND = "eg3d_generator"


def find_generator_file(path: str | os.PathLike) -> Path:
    """A generator file, or the generator file inside a weights directory."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in (CONVERTED_NAME, *OFFICIAL_NAMES):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"no generator weights in {path}: expected {CONVERTED_NAME} (from `ip2n weights convert`) "
            f"or the official {' / '.join(OFFICIAL_NAMES)}."
        )
    raise CheckpointError(f"generator weights not found: {path} does not exist.")


def read_generator(path: str | os.PathLike) -> ReadWeights:
    """Config and state dict from any accepted generator file, checked against the config's layout.

    From official files, what the generator does not need (the snapshot's other networks, training
    buffers, unknown extra tensors) is left out and listed in `ignored`; a converted file must fit
    exactly.
    """
    path = find_generator_file(path)
    state_dict, config_data = load_weights(path) if path.suffix == ".safetensors" else ({}, {})
    ignored: tuple[str, ...] = ()
    official = config_data.get("kind") != KIND
    if not official:
        try:
            config = EG3DConfig.from_dict(config_data.get("config"))
        except ConfigError as exc:
            raise CheckpointError(
                f"{path}: its model config is not valid ({exc}); convert the official generator again."
            ) from None
    else:
        checkpoint = read_eg3d_generator(path)
        state_dict, ignored = dict(checkpoint.state_dict), checkpoint.ignored
        if checkpoint.init_kwargs:
            try:
                config = EG3DConfig.from_official(
                    checkpoint.init_kwargs, checkpoint.neural_rendering_resolution
                )
                check_config(config, "options")
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CheckpointError(
                    f"{path}: the generator's constructor options (init_kwargs) are incomplete or not valid "
                    f"({type(exc).__name__}: {exc}); use the generator file that came with the model "
                    "(G_ema.pkl)."
                ) from None
        else:
            # A bare state dict carries no options: assume the released FFHQ-512 generator, then verify.
            config = preset("ffhq512")
    report = check_state_dict(state_dict, _expected_shapes(config))
    if not (report.complete if official else report.ok):
        raise CheckpointError(
            f"{path} does not match the EG3D generator layout it describes:\n{report.summary()}\n"
            "Use the generator file that came with the model (G_ema.pkl), or convert it again."
        )
    extra = {key: state_dict.pop(key) for key, _shape in report.unexpected}
    require_finite(path, state_dict)
    return ReadWeights(config, state_dict, ignored + ignored_entries(extra))


def require_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or infinite values (they render black images without any error)."""
    bad = non_finite_tensor(tensors)
    if bad is not None:
        raise CheckpointError(
            f"{path}: the weight {bad} holds NaN or infinite values; the file is damaged, or the training "
            "run that wrote it diverged. Download or convert the weights again."
        )


def _expected_shapes(config: EG3DConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = TriPlaneGenerator(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def build_generator(
    config: EG3DConfig, state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu"
) -> TriPlaneGenerator:
    """Generator with the given weights, in eval mode, without gradients (no random init wasted)."""
    with torch.device("meta"):
        model = TriPlaneGenerator(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> TriPlaneGenerator:
    """Load any accepted generator file (or weights directory) → ready-to-render generator."""
    read = read_generator(path)
    return build_generator(read.config, read.state_dict, device)


def random_generator(preset_name: str = "ffhq512", seed: int = 0) -> TriPlaneGenerator:
    """A generator with seeded random weights (the built-in default until trained weights ship).

    The global RNG is forked so building it leaves the caller's random state untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TriPlaneGenerator(preset(preset_name))
    return model.eval().requires_grad_(False)


def load_latent_avg(weights_dir: str | os.PathLike | None, generator: TriPlaneGenerator) -> torch.Tensor:
    """PREIM3D's latent_avg (1, 14, 512): the cached copy in `weights_dir` if present, else computed."""
    path = None if weights_dir is None else Path(weights_dir) / LATENT_AVG_NAME
    if path is not None and path.is_file():
        tensors, _ = load_weights(path)
        latent_avg = tensors.get("latent_avg")
        expected = (1, generator.num_ws, generator.config.w_dim)
        if latent_avg is None or tuple(latent_avg.shape) != expected:
            found = (
                "no latent_avg" if latent_avg is None else f"latent_avg of shape {tuple(latent_avg.shape)}"
            )
            raise CheckpointError(
                f"{path} holds {found}, not the {expected} average latent of the generator; delete it "
                "(it is recomputed) or convert the generator again."
            )
        require_finite(path, {"latent_avg": latent_avg})
        return latent_avg
    return compute_latent_avg(generator)


def convert_generator(source: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Official generator file → `generator.safetensors` (+ .json) and `latent_avg.safetensors`.

    The JSON records the source file and what was left out of it (`ignored`).
    """
    read = read_generator(source)
    out_dir = Path(out_dir)
    metadata = {
        "kind": KIND,
        "config": read.config.to_dict(),
        "source": Path(source).name,
        "ignored": list(read.ignored),
    }
    written = [save_weights(out_dir / CONVERTED_NAME, read.state_dict, metadata)]
    latent_avg = compute_latent_avg(build_generator(read.config, read.state_dict))
    written.append(
        save_weights(
            out_dir / LATENT_AVG_NAME,
            {"latent_avg": latent_avg},
            {
                "kind": "latent_avg",
                "recipe": "PREIM3D: mean mapping(RandomState(123).randn(10000, 512), c_front, psi 0.7)",
            },
        )
    )
    return written


def check_generator_file(path: str | os.PathLike) -> tuple[bool, str]:
    """(ok, one-paragraph summary) for `ip2n weights check`; never raises for a bad file."""
    try:
        file = find_generator_file(path)
        read = read_generator(file)
    except CheckpointError as exc:
        return False, str(exc)
    config, state_dict = read.config, read.state_dict
    parameters = sum(value.numel() for value in state_dict.values())
    return True, (
        f"{file.name}: EG3D generator, {len(state_dict)} tensors ({parameters / 1e6:.1f} M numbers), "
        f"{config.img_resolution}² output, neural rendering {config.neural_rendering_resolution}², "
        f"super-resolution {config.superresolution}{ignored_note(read.ignored)}"
    )


__all__ = [
    "CONVERTED_NAME",
    "LATENT_AVG_NAME",
    "OFFICIAL_NAMES",
    "build_generator",
    "check_generator_file",
    "convert_generator",
    "find_generator_file",
    "load_generator",
    "load_latent_avg",
    "random_generator",
    "read_generator",
]
