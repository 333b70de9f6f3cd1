"""Weights files whose config or values would cost unbounded memory or time, or render garbage: every
size in a stored model config is checked against its bound (ip2n.limits.CONFIG_LIMITS), a malformed
config is a message naming the file and the field, and NaN or infinite weights are errors wherever
weights enter (loading, converting, `ip2n weights check`)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ip2n.checkpoints.finite as finite
from helpers.official_files import TINY_SIZES, dit_checkpoint
from ip2n.builtin import WEIGHTS_DIR
from ip2n.checkpoints import CheckpointError, load_weights, save_weights
from ip2n.checkpoints.editing_weights import check_weights_dir, convert_editing_models, read_dit
from ip2n.checkpoints.generator_weights import read_generator
from ip2n.cli import main
from ip2n.diffusion.dit import DIT_PRESETS, DiTConfig
from ip2n.encoding.identity import IdentityConfig
from ip2n.encoding.irse import IRSEConfig
from ip2n.encoding.preim3d import PREIM3DEncoderConfig
from ip2n.generator.config import PRESETS as GENERATOR_PRESETS
from ip2n.generator.config import EG3DConfig, preset
from ip2n.limits import CONFIG_LIMITS, ConfigError, check_config, config_from_dict
from ip2n.rendering.volume import RenderingConfig
from ip2n.synthetic.lab.classifier import AttributeClassifierConfig
from ip2n.synthetic.world.generator import SyntheticHeadsConfig, synthetic_preset
from ip2n.text.encoder import TEXT_ENCODER_PRESETS, TextEncoderConfig

CONFIG_CLASSES = (
    RenderingConfig,
    EG3DConfig,
    DiTConfig,
    TextEncoderConfig,
    IRSEConfig,
    PREIM3DEncoderConfig,
    IdentityConfig,
    SyntheticHeadsConfig,
    AttributeClassifierConfig,
)


def run_ip2n(capsys, *args) -> tuple[int, str, str]:
    try:
        status = main([str(arg) for arg in args])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def small_generator(fixtures_dir) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "eg3d_small" / "state_dict.safetensors")


def _write_converted(path: Path, state_dict: dict, metadata: dict) -> Path:
    """A converted weights file as anyone could write it (save_weights itself refuses NaN in configs)."""
    save_file(
        {key: value.contiguous() for key, value in state_dict.items()},
        path,
        metadata={"ip2n_config": json.dumps(metadata)},
    )
    return path


def _converted_generator(folder: Path, state_dict: dict, config: dict) -> Path:
    return _write_converted(
        folder / "generator.safetensors", state_dict, {"kind": "eg3d_generator", "config": config}
    )


# --- every size has a bound, and the shipped sizes are within them ----------------------------------------


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda cls: cls.__name__)
def test_every_size_of_every_model_config_has_a_bound(cls):
    hints = typing.get_type_hints(cls)
    sizes = {
        field.name
        for field in dataclasses.fields(cls)
        if int in (hints[field.name], *typing.get_args(hints[field.name]))
        or typing.get_args(hints[field.name])[:1] == (int,)  # tuple[int, ...]
    }
    assert sizes <= CONFIG_LIMITS[cls.__name__].keys(), sizes - CONFIG_LIMITS[cls.__name__].keys()


def _presets() -> list:
    return [
        *(make() for make in GENERATOR_PRESETS.values()),
        *DIT_PRESETS.values(),
        *TEXT_ENCODER_PRESETS.values(),
        PREIM3DEncoderConfig(),
        IdentityConfig(),
        synthetic_preset("synthetic"),
        synthetic_preset("tiny"),
        AttributeClassifierConfig(),
    ]


@pytest.mark.parametrize("config", _presets(), ids=lambda config: type(config).__name__)
def test_released_and_builtin_sizes_are_within_the_bounds_and_round_trip(config):
    check_config(config)
    assert config_from_dict(type(config), dataclasses.asdict(config)) == config


# --- converted generator files --------------------------------------------------------------------------


def _changed(config: dict, change) -> dict:
    config = copy.deepcopy(config)
    change(config)
    return config


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda c: c["rendering"].update(depth_resolution=2_000_000),
            "rendering.depth_resolution = 2000000 is above the limit of 192",
        ),
        (
            lambda c: c.update(neural_rendering_resolution=100_000),
            "neural_rendering_resolution = 100000 is above the limit of 512",
        ),
        (lambda c: c.pop("rendering"), "config.rendering is missing"),
        (lambda c: c.update(rendering=[48, 48]), "config.rendering must be a JSON object, got list"),
        (lambda c: c.update(rendering_kwargs={}), "unknown key(s) rendering_kwargs"),
        (
            lambda c: c.update(neural_rendering_resolution=12.5),
            "neural_rendering_resolution must be a whole number, got 12.5",
        ),
        (lambda c: c.update(neural_rendering_resolution="128"), "must be a whole number, got '128' (text)"),
        (lambda c: c["rendering"].update(ray_end=float("inf")), "rendering.ray_end must be a finite number"),
    ],
)
def test_converted_generator_configs_are_checked_naming_file_field_value_and_bound(
    small_generator, tmp_path, capsys, change, message
):
    path = _converted_generator(tmp_path, small_generator, _changed(preset("eg3d-small").to_dict(), change))
    with pytest.raises(CheckpointError) as refused:
        read_generator(tmp_path)
    assert str(path) in str(refused.value) and message in str(refused.value)
    status, stdout, stderr = run_ip2n(capsys, "weights", "check", tmp_path)
    assert status == 1 and "[PROBLEM] generator:" in stdout and message in stdout
    assert "Traceback" not in stderr


# --- converted editing-model files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "component, change, message",
    [
        ("dit", lambda c: c.update(hidden_size=100_000), "hidden_size = 100000 is above the limit of 4096"),
        ("dit", lambda c: c.update(depth=True), "config.depth must be a whole number, got True"),
        ("dit", lambda c: c.update(latent_scale=float("nan")), "latent_scale must be a finite number"),
        (
            "text_encoder",
            lambda c: c.update(context_length=10**6),
            "context_length = 1000000 is above the limit of 77",
        ),
        ("encoder", lambda c: c.update(resolution=65_536), "resolution = 65536 is above the limit of 1024"),
        (
            "encoder",
            lambda c: c["backbone"].update(stage_units=[1, 2, 2000, 1]),
            "backbone.stage_units[2] = 2000 is above the limit of 64",
        ),
        (
            "identity",
            lambda c: c.update(input_size=100_000),
            "input_size = 100000 is above the limit of 1024",
        ),
        ("identity", lambda c: c.update(surprise=1), "unknown key(s) surprise"),
    ],
)
def test_converted_editing_configs_are_checked(tmp_path, capsys, component, change, message):
    state_dict, metadata = load_weights(WEIGHTS_DIR / component)
    metadata["config"] = _changed(metadata["config"], change)
    path = _write_converted(tmp_path / f"{component}.safetensors", state_dict, metadata)
    report = {report.name: report for report in check_weights_dir(tmp_path)}[component]
    assert not report.ok and str(path) in report.summary and message in report.summary
    status, stdout, stderr = run_ip2n(capsys, "weights", "check", tmp_path)
    assert status == 1 and message in stdout and "Traceback" not in stderr


def test_the_synthetic_worlds_configs_are_checked():
    world = synthetic_preset("synthetic").to_dict()
    world["neural_rendering_resolution"] = 100_000
    with pytest.raises(ConfigError, match="neural_rendering_resolution = 100000 is above the limit of 512"):
        SyntheticHeadsConfig.from_dict(world)
    classifier = dataclasses.asdict(AttributeClassifierConfig())
    classifier["input_size"] = 50_000
    with pytest.raises(ConfigError, match="input_size = 50000 is above the limit of 1024"):
        AttributeClassifierConfig.from_dict(classifier)


def test_options_in_an_official_generator_pickle_are_checked():
    options = dataclasses.replace(preset("eg3d-small"), neural_rendering_resolution=100_000)
    with pytest.raises(ConfigError, match="neural_rendering_resolution = 100000 is above the limit of 512"):
        check_config(options)


# --- NaN and infinite weights ---------------------------------------------------------------------------


def test_nan_generator_weights_are_refused_when_loading_and_checking(small_generator, tmp_path, capsys):
    broken = dict(small_generator)
    name = next(key for key, value in broken.items() if value.is_floating_point() and value.numel() > 10)
    broken[name] = broken[name].clone()
    broken[name].view(-1)[-1] = float("nan")
    _converted_generator(tmp_path, broken, preset("eg3d-small").to_dict())
    with pytest.raises(CheckpointError, match=f"the weight {name} holds NaN or infinite values"):
        read_generator(tmp_path)
    status, stdout, _ = run_ip2n(capsys, "weights", "check", tmp_path)
    assert status == 1 and f"[PROBLEM] generator: {tmp_path}" in stdout and "holds NaN or infinite" in stdout


def test_infinite_weights_are_found_by_the_header_only_check_in_chunks(tmp_path, monkeypatch):
    """`weights check` reads converted files a slice at a time: a small chunk size exercises the slicing."""
    monkeypatch.setattr(finite, "CHUNK_NUMBERS", 1000)
    state_dict, metadata = load_weights(WEIGHTS_DIR / "dit")
    name, tensor = max(state_dict.items(), key=lambda item: item[1].numel())
    assert tensor.numel() > 10 * finite.CHUNK_NUMBERS
    state_dict[name] = tensor.clone()
    state_dict[name].view(-1)[-1] = float("inf")  # in the last chunk
    save_weights(tmp_path / "dit", state_dict, metadata)
    report = {report.name: report for report in check_weights_dir(tmp_path)}["dit"]
    assert not report.ok and f"the weight {name} holds NaN or infinite values" in report.summary
    with pytest.raises(CheckpointError, match="holds NaN or infinite values"):
        read_dit(tmp_path)


def test_nan_weights_in_an_official_file_are_not_converted(fixtures_dir, tmp_path, capsys, monkeypatch):
    import functools

    from ip2n.checkpoints import editing_weights

    monkeypatch.setattr(
        editing_weights,
        "convert_editing_models",
        functools.partial(convert_editing_models, presets=TINY_SIZES),
    )
    checkpoint = dit_checkpoint(fixtures_dir, embed_text=False)
    first = next(key for key, value in checkpoint["ema"].items() if value.is_floating_point())
    checkpoint["ema"][first] = torch.full_like(checkpoint["ema"][first], float("nan"))
    source = tmp_path / "official"
    source.mkdir()
    torch.save(checkpoint, source / "instructpix2nerf.pt")
    status, _, stderr = run_ip2n(capsys, "weights", "convert", source, "-o", tmp_path / "converted")
    assert status == 2 and f"the weight {first} holds NaN or infinite values" in stderr
    assert not (tmp_path / "converted" / "dit.safetensors").exists()


def test_chunked_checks_find_the_last_bad_number_of_large_tensors(monkeypatch):
    monkeypatch.setattr(finite, "CHUNK_NUMBERS", 64)
    for shape in ((10_000,), (300, 50), (3, 7, 200), (2, 100, 3)):
        tensor = torch.randn(*shape)
        assert finite.non_finite_tensor({"w": tensor}) is None
        tensor.view(-1)[-1] = float("-inf")
        assert finite.non_finite_tensor({"w": tensor}) == "w"
        assert finite.non_finite_tensor({"w": tensor.transpose(0, -1)}) == "w"  # a non-contiguous view
    huge_but_finite = torch.full((1000,), 3e38)  # its sum overflows float32; no value is infinite
    assert finite.non_finite_tensor({"w": huge_but_finite}) is None


def test_real_weights_pass_every_check(tmp_path):
    """The built-in model's files pass every check (no false alarm on real weights)."""
    shutil.copytree(WEIGHTS_DIR, tmp_path / "builtin")
    reports = check_weights_dir(tmp_path / "builtin")
    assert [report.ok for report in reports[1:]] == [True, True, True, True]
