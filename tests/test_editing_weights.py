"""Loading, converting and checking the editing models' weight files (DiT, OpenCLIP text, PREIM3D, IR-SE50).

Official-format files are written at tiny sizes: the DiT and the text tower carry the weights of the
official reference fixtures (so loaded models are compared with official outputs), the PREIM3D
encoders and the identity network seeded random weights (compared with the modules they came from).
Full-size layouts are checked on the meta device against the manifests.
"""

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import randomize_ as _randomize_
from ip2n.checkpoints import CheckpointError, save_weights
from ip2n.checkpoints.editing_weights import (
    WEIGHT_FILES,
    EditingPresets,
    check_weights_dir,
    convert_editing_models,
    dit_weights,
    find_weights_file,
    identity_weights,
    load_dit,
    load_identity,
    load_preim3d_encoder,
    load_text_encoder,
    preim3d_encoder_weights,
)
from ip2n.diffusion.dit import dit_config
from ip2n.encoding import ENCODER_TYPES, IdentityEncoder, build_encoder, encoder_preset, identity_preset
from ip2n.encoding.preim3d import ENCODER_CLASSES
from ip2n.text import DIT_CHECKPOINT_PREFIX, text_encoder_config, text_state_dict_from
from ip2n.weight_report import shapes_from_manifest

TOLERANCE = 1e-4
# Same weights, same module: only kernel paths differ (safetensors tensors are not 64-byte aligned).
SAME_WEIGHTS_TOLERANCE = 1e-6
TINY = EditingPresets(dit="tiny", text_encoder="tiny", encoder="tiny", identity="small")
EDITING = ("dit", "text_encoder", "encoder", "identity")


def _max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


def _images(size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=generator) * 2 - 1  # (2, 3, S, S) in [-1, 1]


# --- official-format files --------------------------------------------------------------------------


def _tiny_clip(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    """The tiny OpenCLIP fixture's weights, plus a vision-tower entry as a real CLIP file has."""
    clip = load_file(fixtures_dir / "tokens" / "text_encoder_tiny_state_dict.safetensors")
    clip["visual.conv1.weight"] = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    return clip


def _dit_checkpoint(fixtures_dir: Path, *, embed_text: bool = True) -> dict:
    """A train.py-style checkpoint: EMA = the dit_small fixture weights; `model` differs from it."""
    ema = load_file(fixtures_dir / "dit_small" / "state_dict.safetensors")
    if embed_text:
        ema |= {DIT_CHECKPOINT_PREFIX + key: value for key, value in _tiny_clip(fixtures_dir).items()}
    generator = torch.Generator().manual_seed(1)
    model = {key: value + 0.01 * torch.randn(value.shape, generator=generator) for key, value in ema.items()}
    return {
        "model": model,
        "ema": ema,
        "opt": {
            "state": {},
            "param_groups": [{"lr": 1e-4, "weight_decay": 0, "params": list(range(len(model)))}],
        },
        "args": argparse.Namespace(
            model="DiT-B_G/1_pair", num_classes=1, global_batch_size=6, ckpt_every=30000
        ),
    }


def _preim3d_checkpoint(encoder: torch.nn.Module, encoder_type: str) -> dict:
    """What PREIM3D's coach saves: the whole pSp state dict (encoder + generator copy) and opts."""
    state_dict = {"encoder." + key: value for key, value in encoder.state_dict().items()}
    state_dict["decoder.backbone.mapping.fc0.weight"] = torch.ones(4, 4)  # the generator copy is ignored
    opts = {
        "encoder_type": encoder_type,
        "stylegan_size": 256,
        "encoder_number_layers": 50,
        "train_decoder": False,
    }
    return {"state_dict": state_dict, "opts": opts, "latent_avg": torch.zeros(14, 32)}


def _identity_file_state(identity: IdentityEncoder) -> dict[str, torch.Tensor]:
    """An old-style IR-SE50 file: no BatchNorm num_batches_tracked entries."""
    return {
        key: value for key, value in identity.state_dict().items() if not key.endswith("num_batches_tracked")
    }


@dataclass
class OfficialFiles:
    directory: Path
    encoder: torch.nn.Module  # the modules the random weights came from
    identity: IdentityEncoder


@pytest.fixture(scope="module")
def official(fixtures_dir, tmp_path_factory) -> OfficialFiles:
    directory = tmp_path_factory.mktemp("official")
    torch.save(_dit_checkpoint(fixtures_dir), directory / "instructpix2nerf.pt")
    encoder = _randomize_(build_encoder(encoder_preset("tiny", "Encoder4Editing")), seed=4)
    torch.save(_preim3d_checkpoint(encoder, "Encoder4Editing"), directory / "preim3d.pt")
    identity = _randomize_(IdentityEncoder(identity_preset("small")), seed=5)
    torch.save(_identity_file_state(identity), directory / "model_ir_se50.pth")
    shutil.copy(fixtures_dir / "eg3d_pickle" / "G_ema-small.pkl", directory / "G_ema.pkl")
    return OfficialFiles(directory, encoder, identity)


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("converted")
    convert_editing_models(official.directory, out_dir, TINY)
    return out_dir


@pytest.fixture(scope="module")
def dit_io(fixtures_dir):
    return load_file(fixtures_dir / "dit_small" / "io.safetensors")


@pytest.fixture(scope="module")
def text_io(fixtures_dir):
    return load_file(fixtures_dir / "tokens" / "text_encoder_tiny_io.safetensors")


def _assert_ready(model: torch.nn.Module) -> None:
    assert not model.training
    tensors = [*model.parameters(), *model.buffers()]
    assert all(not tensor.requires_grad and tensor.device.type == "cpu" for tensor in tensors)


def _assert_dit_matches_official(model, dit_io) -> None:
    with torch.no_grad():
        with_id = model(
            dit_io["x"], dit_io["t"], dit_io["y"], dit_io["context_prompts"], dit_io["idfeatures"]
        )
        without_id = model(dit_io["x"], dit_io["t"], dit_io["y"], dit_io["context_prompts"])
    assert _max_error(with_id, dit_io["decode_out"]) <= TOLERANCE
    assert _max_error(without_id, dit_io["decode_out_no_id"]) <= TOLERANCE


def _assert_text_matches_official(encoder, text_io) -> None:
    with torch.no_grad():
        assert _max_error(encoder(text_io["tokens_plain"]), text_io["z_plain"]) <= TOLERANCE


# --- loading official files -------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "directory"])
def test_load_dit_takes_the_ema_weights(official, dit_io, where):
    path = official.directory / "instructpix2nerf.pt" if where == "file" else official.directory
    model = load_dit(path, preset="tiny")
    _assert_ready(model)
    assert not any(key.startswith("cond_stage_model.") for key in model.state_dict())
    _assert_dit_matches_official(model, dit_io)  # the `model` weights would miss by ~1e-2


def test_load_text_encoder_from_the_dit_file(official, text_io):
    encoder = load_text_encoder(official.directory / "instructpix2nerf.pt", preset="tiny")
    _assert_ready(encoder)
    assert len(encoder.transformer.resblocks) == 2  # layer "penultimate": the last block is not even built
    _assert_text_matches_official(encoder, text_io)
    assert find_weights_file("text_encoder", official.directory).name == "instructpix2nerf.pt"


@pytest.mark.parametrize("name", WEIGHT_FILES["text_encoder"].official)
def test_load_text_encoder_from_an_open_clip_file(fixtures_dir, tmp_path, text_io, name):
    clip = _tiny_clip(fixtures_dir)
    if name.endswith(".safetensors"):
        save_file(clip, tmp_path / name)  # open_clip's own file: no ip2n config
    else:
        torch.save(clip, tmp_path / name)
    _assert_text_matches_official(load_text_encoder(tmp_path / name, preset="tiny"), text_io)
    _assert_text_matches_official(load_text_encoder(tmp_path, preset="tiny"), text_io)


def test_dit_file_without_text_weights_asks_for_open_clip(fixtures_dir, tmp_path):
    torch.save(_dit_checkpoint(fixtures_dir, embed_text=False), tmp_path / "instructpix2nerf.pt")
    with pytest.raises(
        CheckpointError, match=r"instructpix2nerf\.pt.*does not embed the OpenCLIP.*open_clip_pytorch"
    ):
        load_text_encoder(tmp_path / "instructpix2nerf.pt", preset="tiny")
    with pytest.raises(CheckpointError, match="no OpenCLIP .* open_clip_model.safetensors"):
        load_text_encoder(tmp_path, preset="tiny")


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_load_preim3d_encoder_builds_the_variant_in_opts(tmp_path, encoder_type):
    source = _randomize_(build_encoder(encoder_preset("tiny", encoder_type)), seed=6)
    torch.save(_preim3d_checkpoint(source, encoder_type), tmp_path / "preim3d.pt")
    encoder, config = load_preim3d_encoder(tmp_path / "preim3d.pt", preset="tiny")
    assert config == encoder_preset("tiny", encoder_type)
    assert type(encoder) is ENCODER_CLASSES[encoder_type]
    _assert_ready(encoder)
    images = _images(config.resolution, seed=7)
    with torch.no_grad():
        assert _max_error(encoder(images), source(images)) <= SAME_WEIGHTS_TOLERANCE


def test_load_identity_tolerates_missing_batchnorm_counters(official):
    identity = load_identity(official.directory / "model_ir_se50.pth", preset="small")
    _assert_ready(identity)
    counters = {
        key: value for key, value in identity.state_dict().items() if key.endswith("num_batches_tracked")
    }
    assert counters and all(value.item() == 0 for value in counters.values())
    images = _images(256, seed=8)
    with torch.no_grad():
        assert _max_error(identity(images), official.identity(images)) <= SAME_WEIGHTS_TOLERANCE


# --- converting --------------------------------------------------------------------------------------


def test_convert_writes_one_file_per_model_with_its_config(converted):
    for component in EDITING:
        files = WEIGHT_FILES[component]
        config = json.loads((converted / files.converted).with_suffix(".json").read_text())
        assert config["kind"] == files.kind
    text = load_file(converted / "text_encoder.safetensors")
    assert not any(key.startswith(("visual.", "transformer.resblocks.2.", "text_projection")) for key in text)
    assert set(load_file(converted / "dit.safetensors")) == set(load_dit(converted).state_dict())


def test_converted_models_give_the_same_outputs(official, converted, dit_io, text_io):
    _assert_dit_matches_official(load_dit(converted / "dit.safetensors"), dit_io)
    _assert_text_matches_official(load_text_encoder(converted), text_io)
    encoder, config = load_preim3d_encoder(converted)
    identity = load_identity(converted)
    for model in (encoder, identity):
        _assert_ready(model)
    encoder_images, identity_images = _images(config.resolution, seed=9), _images(256, seed=10)
    with torch.no_grad():
        assert _max_error(encoder(encoder_images), official.encoder(encoder_images)) <= SAME_WEIGHTS_TOLERANCE
        assert (
            _max_error(identity(identity_images), official.identity(identity_images))
            <= SAME_WEIGHTS_TOLERANCE
        )


def test_convert_takes_open_clip_file_when_the_dit_has_no_text(fixtures_dir, tmp_path, text_io):
    source, out_dir = tmp_path / "official", tmp_path / "converted"
    source.mkdir()
    torch.save(_dit_checkpoint(fixtures_dir, embed_text=False), source / "instructpix2nerf.pt")
    torch.save(_tiny_clip(fixtures_dir), source / "open_clip_pytorch_model.bin")
    written = convert_editing_models(source, out_dir, TINY)
    assert sorted(path.name for path in written) == ["dit.safetensors", "text_encoder.safetensors"]
    assert json.loads((out_dir / "text_encoder.json").read_text())["source"] == "open_clip_pytorch_model.bin"
    _assert_text_matches_official(load_text_encoder(out_dir), text_io)


def test_convert_without_editing_files_writes_nothing(tmp_path):
    assert convert_editing_models(tmp_path, tmp_path / "out") == []
    assert not (tmp_path / "out").exists()


def test_cli_convert_names_the_expected_files_when_the_folder_is_empty(tmp_path, capsys):
    from ip2n.cli import main

    assert main(["weights", "convert", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert (
        "no official weight files" in message and "instructpix2nerf.pt" in message and "G_ema.pkl" in message
    )


def test_cli_convert_and_check_a_generator_only_folder(fixtures_dir, tmp_path, capsys):
    import shutil

    from ip2n.cli import main

    source = tmp_path / "official"
    source.mkdir()
    shutil.copy(fixtures_dir / "eg3d_pickle" / "G_ema-small.pkl", source / "G_ema.pkl")
    assert main(["weights", "convert", str(source), "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "generator.json",
        "generator.safetensors",
        "latent_avg.json",
        "latent_avg.safetensors",
    ]
    capsys.readouterr()
    assert main(["weights", "check", str(tmp_path / "out")]) == 1  # the editing models are missing
    report = capsys.readouterr().out
    assert "[ok     ] generator: generator.safetensors: EG3D generator, 177 tensors" in report
    assert "[PROBLEM] dit: no conditional DiT" in report


# --- loader errors ---------------------------------------------------------------------------------


def test_loaders_name_the_file_and_the_problem(official, converted, tmp_path):
    dit_file = official.directory / "instructpix2nerf.pt"
    with pytest.raises(CheckpointError) as error:
        load_dit(dit_file)  # the released sizes: the tiny file does not fit
    message = str(error.value)
    assert str(dit_file) in message and "hidden 64, depth 2" in message
    assert "170 missing, 61 with a wrong shape" in message and "missing: blocks.2.attn.qkv.weight" in message
    with pytest.raises(
        CheckpointError,
        match=r"preim3d\.pt: this is a PREIM3D encoder checkpoint.*but the IR-SE50 ArcFace weights .*was "
        r"expected; it belongs in the weights folder as preim3d\.pt",
    ):
        load_identity(official.directory / "preim3d.pt", preset="small")
    with pytest.raises(
        CheckpointError, match=r"encoder\.safetensors: it holds the weights of a preim3d_encoder"
    ):
        load_dit(converted / "encoder.safetensors")
    with pytest.raises(
        CheckpointError, match="no IR-SE50 ArcFace .* identity.safetensors .* model_ir_se50.pth"
    ):
        load_identity(tmp_path)
    with pytest.raises(CheckpointError, match="nowhere does not exist"):
        load_identity(tmp_path / "nowhere")


# --- checking a weights directory ---------------------------------------------------------------------


def test_check_reports_every_model_ok(official, converted):
    reports = check_weights_dir(official.directory, TINY)
    assert [report.name for report in reports] == list(WEIGHT_FILES)
    assert all(report.ok for report in reports), [report.summary for report in reports if not report.ok]
    found = {report.name: report.file.name for report in reports}
    assert found == {
        "generator": "G_ema.pkl",
        "dit": "instructpix2nerf.pt",
        "text_encoder": "instructpix2nerf.pt",
        "encoder": "preim3d.pt",
        "identity": "model_ir_se50.pth",
    }
    assert "Encoder4Editing" in reports[3].summary
    for report in check_weights_dir(converted, TINY)[1:]:
        assert report.ok and report.file.name == WEIGHT_FILES[report.name].converted, report.summary


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _remove_encoder(directory: Path, fixtures_dir: Path) -> None:
    (directory / "preim3d.pt").unlink()


def _truncate_dit(directory: Path, fixtures_dir: Path) -> None:
    _truncate(directory / "instructpix2nerf.pt")


def _identity_file_as_encoder(directory: Path, fixtures_dir: Path) -> None:
    shutil.copy(directory / "model_ir_se50.pth", directory / "preim3d.pt")


def _resize_identity_tensor(directory: Path, fixtures_dir: Path) -> None:
    state_dict = torch.load(directory / "model_ir_se50.pth", weights_only=True)
    state_dict["output_layer.3.weight"] = torch.zeros(512, 7)
    torch.save(state_dict, directory / "model_ir_se50.pth")


def _drop_dit_key(directory: Path, fixtures_dir: Path) -> None:
    checkpoint = _dit_checkpoint(fixtures_dir)
    del checkpoint["ema"]["blocks.1.norm3.weight"]
    torch.save(checkpoint, directory / "instructpix2nerf.pt")


def _truncated_converted_identity(directory: Path, fixtures_dir: Path) -> None:
    state_dict = load_identity(directory, preset="small").state_dict()
    save_weights(directory / "identity", state_dict, {"kind": "ir_se50_identity", "config": {}})
    _truncate(directory / "identity.safetensors")


@dataclass(frozen=True)
class Breakage:
    name: str
    damage: Callable[[Path, Path], None]  # (weights directory, fixtures directory)
    component: str
    expected: tuple[str, ...]  # fragments of the report summary


BREAKAGES = [
    Breakage("missing file", _remove_encoder, "encoder", ("no PREIM3D", "preim3d.pt", "encoder.safetensors")),
    Breakage("truncated file", _truncate_dit, "dit", ("instructpix2nerf.pt", "truncated")),
    Breakage(
        "wrong file in place",
        _identity_file_as_encoder,
        "encoder",
        (
            "preim3d.pt: this is IR-SE ArcFace identity weights",
            "but a PREIM3D encoder checkpoint",
            "it belongs in the weights folder as model_ir_se50.pth",
        ),
    ),
    Breakage(
        "wrong shape",
        _resize_identity_tensor,
        "identity",
        ("shape mismatch: output_layer.3.weight: expected [512, 6272], found [512, 7]",),
    ),
    Breakage(
        "missing key", _drop_dit_key, "dit", ("1 missing", "missing: blocks.1.norm3.weight (expected [64])")
    ),
    Breakage(
        "truncated converted file",
        _truncated_converted_identity,
        "identity",
        ("identity.safetensors", "damaged or incomplete"),
    ),
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[breakage.name for breakage in BREAKAGES])
def test_check_names_the_problem(official, fixtures_dir, tmp_path, breakage):
    directory = tmp_path / "weights"
    shutil.copytree(official.directory, directory)
    breakage.damage(directory, fixtures_dir)
    reports = {report.name: report for report in check_weights_dir(directory, TINY)}
    broken = reports[breakage.component]
    assert not broken.ok
    for fragment in breakage.expected:
        assert fragment in broken.summary, broken.summary
    assert "Traceback" not in broken.summary
    healthy = {"encoder", "identity"} - {breakage.component}
    if breakage.component != "dit":  # the text encoder lives in the DiT file
        healthy |= {"dit", "text_encoder"}
    assert all(reports[name].ok for name in healthy), {name: reports[name].summary for name in healthy}


def test_check_explains_a_missing_text_encoder(fixtures_dir, tmp_path):
    torch.save(_dit_checkpoint(fixtures_dir, embed_text=False), tmp_path / "instructpix2nerf.pt")
    reports = {report.name: report for report in check_weights_dir(tmp_path, TINY)}
    assert reports["dit"].ok
    assert not reports["text_encoder"].ok and reports["text_encoder"].file is None
    assert "does not embed the OpenCLIP weights" in reports["text_encoder"].summary


def test_check_of_a_missing_directory(tmp_path):
    reports = check_weights_dir(tmp_path / "nowhere")
    assert len(reports) == len(WEIGHT_FILES) and not any(report.ok for report in reports)
    assert "is not a directory" in reports[0].summary


# --- full-size layouts (meta device) against the manifests ---------------------------------------------


def _manifest(fixtures_dir: Path, name: str) -> dict:
    return json.loads((fixtures_dir / "manifests" / name).read_text())


def _meta_tensors(entries: dict) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in shapes_from_manifest(entries).items()}


def test_released_dit_and_text_layouts_match_the_manifests(fixtures_dir):
    dit_manifest = _manifest(fixtures_dir, "dit_b_g1_pair.json")
    ema = _meta_tensors(dit_manifest["state_dict_without_cond_stage_model"])
    ema |= _meta_tensors(_manifest(fixtures_dir, "openclip_vit_h14.json")["state_dict"])
    checkpoint = {"model": ema, "ema": ema, "args": {"model": "DiT-B_G/1_pair"}}
    read = dit_weights(checkpoint, dit_config("DiT-B_G/1_pair"))
    assert list(read.state_dict) == list(dit_manifest["state_dict_without_cond_stage_model"])
    assert read.ignored == (
        "model: the DiT's raw training weights (ema, their moving average, is the one for inference)",
        "args: the options of the training run",
    )
    text = text_state_dict_from(ema, text_encoder_config("ViT-H-14"))
    assert len(text) == 4 + 23 * 12  # embeddings, ln_final, and blocks 0-22 of 24


def test_released_identity_layout_matches_the_manifest(fixtures_dir):
    expected = _manifest(fixtures_dir, "irse50.json")["state_dict"]
    old_file = {
        key: value
        for key, value in _meta_tensors(expected).items()
        if not key.endswith("num_batches_tracked")
    }
    read = identity_weights(old_file, identity_preset("ir_se50"))
    assert set(read.state_dict) == set(expected) and read.ignored == ()


@pytest.mark.parametrize("encoder_type", ENCODER_TYPES)
def test_released_encoder_layouts_match_the_manifest(fixtures_dir, encoder_type):
    manifest = _manifest(fixtures_dir, "preim3d_encoder.json")
    checkpoint = {
        "state_dict": _meta_tensors(manifest["encoders"][encoder_type]["state_dict"]),
        "opts": manifest["preim3d_train_options_defaults"] | {"encoder_type": encoder_type},
    }
    read = preim3d_encoder_weights(checkpoint)
    assert read.config == encoder_preset("ir_se50", encoder_type)
    assert len(read.state_dict) == manifest["encoders"][encoder_type]["num_tensors"]
