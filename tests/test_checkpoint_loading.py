"""Checkpoint loaders: official formats against the eg3d_pickle fixtures, refusal of malicious
files, human errors for broken files, and the safetensors + JSON conversion format."""

from __future__ import annotations

import argparse
import builtins
import collections
import hashlib
import json
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ip2n.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_weights,
    read_eg3d_generator,
    read_module_state,
    read_torch_checkpoint,
    safetensors_io,
    save_weights,
    select_dit_weights,
    split_prefix,
)
from ip2n.checkpoints.safe_unpickle import ModuleRecord, PersistentRecord, loads

GENERATOR_FILES = ["network-snapshot-small.pkl", "G_ema-small.pkl"]


def _sha16(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def pickle_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "eg3d_pickle"


@pytest.fixture(scope="module")
def reference_generator(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(fixtures_dir / "eg3d_small" / "state_dict.safetensors")


@pytest.fixture(scope="module")
def snapshot_info(pickle_dir: Path) -> dict:
    return json.loads((pickle_dir / "snapshot_info.json").read_text())


@pytest.fixture(scope="module")
def snapshot(pickle_dir: Path):
    return load_checkpoint(pickle_dir / "network-snapshot-small.pkl")


# --- official EG3D formats --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "source_format"), list(zip(GENERATOR_FILES, ["network_pickle", "torch_module"]))
)
def test_generator_pickles_give_the_reference_state_dict(
    pickle_dir, fixtures_dir, reference_generator, snapshot_info, file_name, source_format
):
    checkpoint = read_eg3d_generator(pickle_dir / file_name)

    assert checkpoint.source_format == source_format
    # Official state_dict() order (G and G_ema share their keys).
    assert list(checkpoint.state_dict) == list(snapshot_info["G_state_dict_sha256_16"])
    assert len(checkpoint.state_dict) == len(reference_generator) == 177
    for key, expected in reference_generator.items():
        loaded = checkpoint.state_dict[key]
        assert loaded.dtype == expected.dtype and loaded.shape == expected.shape, key
        assert torch.equal(loaded, expected), key  # bit-for-bit
        assert not loaded.requires_grad and type(loaded) is torch.Tensor

    config = json.loads((fixtures_dir / "eg3d_small" / "config.json").read_text())
    assert checkpoint.init_kwargs == config["init_kwargs"]
    assert checkpoint.rendering_kwargs == config["init_kwargs"]["rendering_kwargs"]
    assert checkpoint.neural_rendering_resolution == 32
    assert type(checkpoint.init_kwargs["mapping_kwargs"]) is dict  # EasyDict records made plain


def test_network_pickle_reader_takes_g_ema_not_g(pickle_dir, snapshot, snapshot_info):
    g_digests = snapshot_info["G_state_dict_sha256_16"]
    g_state = read_module_state(snapshot["G"])
    assert {key: _sha16(tensor) for key, tensor in g_state.items()} == g_digests

    g_ema = read_eg3d_generator(pickle_dir / "network-snapshot-small.pkl").state_dict
    differing = [key for key in g_digests if _sha16(g_ema[key]) != g_digests[key]]
    # G = G_ema + noise on every parameter; buffers (filters, noise constants) are equal.
    assert "backbone.synthesis.b4.conv1.weight" in differing
    assert "decoder.net.0.weight" in differing
    assert "backbone.synthesis.b4.resample_filter" not in differing


def test_discriminator_state_matches_fixture(pickle_dir, snapshot):
    expected = load_file(pickle_dir / "snapshot_D_state_dict.safetensors")
    state = read_module_state(snapshot["D"])

    assert snapshot["D"].class_name == "DualDiscriminator"
    assert set(state) == set(expected)
    assert all(torch.equal(state[key], expected[key]) for key in expected)


def test_records_are_inert_and_drop_module_src(snapshot, pickle_dir):
    g_ema = snapshot["G_ema"]
    assert isinstance(g_ema, PersistentRecord) and g_ema.class_name == "TriPlaneGenerator"
    assert not hasattr(g_ema, "module_src")
    renderer = g_ema.state["_modules"]["renderer"]
    assert isinstance(renderer, ModuleRecord)
    assert renderer.class_path == "training.volumetric_rendering.renderer.ImportanceRenderer"
    # plane_axes is a plain attribute of the renderer, not a buffer: it must not enter the state dict.
    assert isinstance(renderer.state["plane_axes"], torch.Tensor)
    assert "renderer.plane_axes" not in read_module_state(g_ema)
    assert snapshot["training_set_kwargs"]["resolution"] == 128
    assert snapshot["augment_pipe"] is None


def test_generator_from_plain_state_dict_files(tmp_path, reference_generator):
    torch.save(collections.OrderedDict(reference_generator), tmp_path / "G_ema.pt")
    from_torch = read_eg3d_generator(tmp_path / "G_ema.pt")
    assert from_torch.source_format == "state_dict"
    assert from_torch.init_kwargs == {} and from_torch.neural_rendering_resolution is None
    assert all(torch.equal(from_torch.state_dict[key], value) for key, value in reference_generator.items())

    config = {
        "init_kwargs": {"z_dim": 512, "rendering_kwargs": {"box_warp": 1}},
        "neural_rendering_resolution": 32,
    }
    save_weights(tmp_path / "eg3d", reference_generator, config)
    converted = read_eg3d_generator(tmp_path / "eg3d.safetensors")
    assert converted.source_format == "safetensors"
    assert converted.rendering_kwargs == {"box_warp": 1} and converted.neural_rendering_resolution == 32
    assert all(torch.equal(converted.state_dict[key], value) for key, value in reference_generator.items())


# --- torch checkpoints: DiT, PREIM3D, IR-SE50 -------------------------------------------------


def _small_state(seed: int, prefix: str = "") -> collections.OrderedDict:
    generator = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    # A real state_dict(): an OrderedDict carrying `_metadata`, as the official files do.
    state = layer.state_dict(prefix=prefix)
    state[prefix + "extra"] = torch.arange(4)
    return state


def test_dit_training_checkpoint_with_namespace(tmp_path):
    model, ema = _small_state(0, "x_embedder.proj."), _small_state(1, "x_embedder.proj.")
    args = argparse.Namespace(model="DiT-B_G/1_pair", num_classes=1, lambda_id=0.1)
    opt = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2, 3)}},
        "param_groups": [{"lr": 1e-4, "params": [0, 1]}],
    }
    torch.save({"model": model, "ema": ema, "opt": opt, "args": args}, tmp_path / "dit.pt")

    checkpoint = read_torch_checkpoint(tmp_path / "dit.pt")

    assert checkpoint["args"] == {"model": "DiT-B_G/1_pair", "num_classes": 1, "lambda_id": 0.1}
    assert checkpoint["opt"]["param_groups"][0]["lr"] == 1e-4
    weights = select_dit_weights(checkpoint)
    assert list(weights) == list(ema)
    assert all(torch.equal(weights[key], ema[key]) for key in ema)


def test_dit_checkpoint_in_legacy_torch_format(tmp_path):
    ema = _small_state(2, "x_embedder.proj.")
    saved = {"ema": ema, "args": argparse.Namespace(seed=0)}
    torch.save(saved, tmp_path / "dit.pt", _use_new_zipfile_serialization=False)
    checkpoint = read_torch_checkpoint(tmp_path / "dit.pt")
    assert checkpoint["args"] == {"seed": 0}
    assert all(torch.equal(select_dit_weights(checkpoint)[key], ema[key]) for key in ema)


def test_dit_weight_selection_order(tmp_path):
    model = _small_state(3, "x_embedder.proj.")
    torch.save({"model": model}, tmp_path / "model_only.pt")
    torch.save(model, tmp_path / "bare.pt")
    for name in ("model_only.pt", "bare.pt"):
        weights = select_dit_weights(read_torch_checkpoint(tmp_path / name))
        assert all(torch.equal(weights[key], model[key]) for key in model)


def test_preim3d_and_irse50_checkpoints(tmp_path):
    state = _small_state(4, "encoder.body.0.")
    state.update(_small_state(5, "decoder.backbone."))
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 256, "start_from_latent_avg": True}
    torch.save(
        {"state_dict": state, "opts": opts, "latent_avg": torch.ones(14, 512)}, tmp_path / "preim3d.pt"
    )
    checkpoint = read_torch_checkpoint(tmp_path / "preim3d.pt")
    assert checkpoint["opts"] == opts
    encoder = split_prefix(checkpoint["state_dict"], "encoder.")
    assert list(encoder) == ["body.0.weight", "body.0.bias", "body.0.extra"]
    assert torch.equal(encoder["body.0.weight"], state["encoder.body.0.weight"])
    with pytest.raises(CheckpointError, match="PREIM3D"):
        select_dit_weights(checkpoint)

    irse = _small_state(6, "input_layer.0.")
    torch.save(irse, tmp_path / "model_ir_se50.pth")
    loaded = read_torch_checkpoint(tmp_path / "model_ir_se50.pth")
    assert list(loaded) == list(irse) and all(torch.equal(loaded[key], irse[key]) for key in irse)
    with pytest.raises(CheckpointError, match="x_embedder"):
        select_dit_weights(loaded)


def test_wrong_kind_of_checkpoint(tmp_path, pickle_dir):
    torch.save(
        {"ema": _small_state(7, "x_embedder.proj."), "args": argparse.Namespace()}, tmp_path / "dit.pt"
    )
    with pytest.raises(CheckpointError, match=r"dit\.pt.*DiT.*EG3D generator"):
        read_eg3d_generator(tmp_path / "dit.pt")
    torch.save(_small_state(8, "blocks.0."), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt.*not of an EG3D generator"):
        read_eg3d_generator(tmp_path / "other.pt")
    with pytest.raises(
        CheckpointError, match=r"G_ema-small\.pkl: this is an EG3D generator \(TriPlaneGenerator\)"
    ):
        read_torch_checkpoint(pickle_dir / "G_ema-small.pkl")


# --- malicious files --------------------------------------------------------------------------


class _Payload:
    """Pickles as a call of `function(*args)` — what a malicious checkpoint does."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _payloads(sentinel: Path) -> dict[str, _Payload]:
    return {
        "system": _Payload(os.system, f"touch {sentinel}"),
        "eval": _Payload(builtins.eval, f"open({str(sentinel)!r}, 'w').close()"),
        "subprocess": _Payload(subprocess.call, ["touch", str(sentinel)]),
    }


def _write(container: str, obj, path: Path) -> None:
    if container == "torch_zip":
        torch.save({"model": {"w": torch.ones(2)}, "args": obj}, path)
    elif container == "torch_legacy":
        torch.save({"args": obj}, path, _use_new_zipfile_serialization=False)
    elif container == "pickle_protocol2":
        path.write_bytes(pickle.dumps({"G_ema": obj}, protocol=2))
    else:
        path.write_bytes(pickle.dumps({"G_ema": obj}, protocol=4))


@pytest.mark.parametrize("container", ["torch_zip", "torch_legacy", "pickle_protocol2", "pickle_protocol4"])
@pytest.mark.parametrize("payload", ["system", "eval", "subprocess"])
def test_code_in_checkpoints_is_refused_and_never_runs(tmp_path, container, payload):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    _write(container, _payloads(sentinel)[payload], path)

    for reader in (load_checkpoint, read_eg3d_generator, read_torch_checkpoint):
        with pytest.raises(UnsafeCheckpointError) as refused:
            reader(path)
        message = str(refused.value)
        assert str(path) in message and "not on ip2n's allow-list" in message
        # Protocol 2 spells globals the Python 2 way (posix.system, __builtin__.eval, commands.call).
        assert {"system": ".system", "eval": ".eval", "subprocess": ".call"}[payload] in message
    assert not sentinel.exists()


def test_nested_storage_blob_is_loaded_weights_only(tmp_path):
    sentinel = tmp_path / "pwned"
    inner = pickle.dumps(_Payload(os.system, f"touch {sentinel}"), protocol=2)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Payload(torch.storage._load_from_bytes, inner)}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl.*weights-only"):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_build_cannot_rewire_allowed_functions():
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    # GLOBAL torch._utils._rebuild_tensor_v2; BUILD (None, {"__defaults__": (1,)}); STOP
    attack = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b."
    with pytest.raises(UnsafeCheckpointError, match="set the state of a function"):
        loads(attack)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults
    # An OrderedDict may get a `_metadata` attribute (state dicts), nothing special.
    dunder = b"\x80\x02ccollections\nOrderedDict\n)RN}X\x09\x00\x00\x00__class__K\x01s\x86b."
    with pytest.raises(UnsafeCheckpointError, match="OrderedDict"):
        loads(dunder)


def test_numpy_values_only_plain_numbers():
    assert loads(pickle.dumps(np.float64(1.5), protocol=2)) == 1.5
    assert loads(pickle.dumps(np.int32(-7), protocol=4)) == -7
    with pytest.raises(UnsafeCheckpointError, match="dtype"):
        loads(pickle.dumps(np.dtype(object), protocol=4))


def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("scripted/data.pkl", pickle.dumps({}))
        archive.writestr("scripted/constants.pkl", pickle.dumps(()))
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_torch_checkpoint(path)


def test_forced_weights_only_environment_is_explained(pickle_dir, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
        read_eg3d_generator(pickle_dir / "G_ema-small.pkl")


# --- broken files -----------------------------------------------------------------------------


def _broken_files(directory: Path, pickle_dir: Path) -> dict[str, Path]:
    zipped = (pickle_dir / "G_ema-small.pkl").read_bytes()
    plain = (pickle_dir / "network-snapshot-small.pkl").read_bytes()
    files = {
        "missing": directory / "nowhere.pkl",
        "empty": directory / "empty.pkl",
        "random": directory / "random.pkl",
        "png": directory / "picture.pkl",
        "truncated_zip": directory / "truncated_zip.pkl",
        "truncated_pickle": directory / "truncated_pickle.pkl",
        "other_zip": directory / "other_zip.pt",
    }
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["png"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    files["truncated_zip"].write_bytes(zipped[: len(zipped) // 2])
    files["truncated_pickle"].write_bytes(plain[: len(plain) // 2])
    with zipfile.ZipFile(files["other_zip"], "w") as archive:
        archive.writestr("readme.txt", "hello")
    return files


@pytest.mark.parametrize("reader", [load_checkpoint, read_eg3d_generator, read_torch_checkpoint])
def test_broken_files_give_checkpoint_errors(tmp_path, pickle_dir, reader):
    expectations = {
        "missing": "not found",
        "empty": "empty",
        "random": "not a checkpoint",
        "png": "PNG image",
        "truncated_zip": "truncated",
        "truncated_pickle": "cannot read",
        "other_zip": "not a PyTorch checkpoint",
    }
    for kind, path in _broken_files(tmp_path, pickle_dir).items():
        with pytest.raises(CheckpointError) as failed:
            reader(path)
        assert type(failed.value) is CheckpointError, kind
        assert str(path) in str(failed.value) and expectations[kind] in str(failed.value), (
            kind,
            str(failed.value),
        )


def test_damaged_zip_record_gives_checkpoint_error(tmp_path):
    torch.save({"w": torch.arange(1000.0)}, tmp_path / "model.pt")
    data = bytearray((tmp_path / "model.pt").read_bytes())
    start = data.index(b"data.pkl") + 60  # inside the pickle record
    data[start : start + 40] = bytes(40)
    (tmp_path / "model.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.pt"):
        read_torch_checkpoint(tmp_path / "model.pt")


# --- safetensors + JSON -----------------------------------------------------------------------


def test_save_and_load_weights_round_trip(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    state_dict = {
        "transposed": base.t(),  # non-contiguous
        "first_half": base[:2],  # two views of one storage
        "second_half": base[2:],
        "parameter": torch.nn.Parameter(torch.ones(3)),
        "index": torch.arange(5, dtype=torch.int64),
    }
    config = {"preset": "tiny", "hidden": 64, "scales": [2.5, 1.0], "nested": {"flag": True}}

    written = save_weights(tmp_path / "model", state_dict, config)

    assert written == tmp_path / "model.safetensors"
    assert json.loads((tmp_path / "model.json").read_text()) == config
    with safe_open(written, framework="pt") as handle:
        assert json.loads(handle.metadata()["ip2n_config"]) == config
    loaded, loaded_config = load_weights(tmp_path / "model.safetensors")
    assert loaded_config == config
    assert set(loaded) == set(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(loaded[key], value.detach()) and loaded[key].dtype == value.dtype
    assert load_weights(tmp_path / "model")[1] == config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_save_weights_refuses_non_tensors(tmp_path):
    with pytest.raises(TypeError, match=r"\['step'\] holds a int, not a tensor"):
        save_weights(tmp_path / "model", {"w": torch.ones(1), "step": 3}, {})
    with pytest.raises(TypeError, match="JSON"):
        save_weights(tmp_path / "model", {"w": torch.ones(1)}, {"dtype": torch.float32})
    assert list(tmp_path.iterdir()) == []


def test_save_weights_is_atomic(tmp_path, monkeypatch):
    save_weights(tmp_path / "model", {"w": torch.zeros(2)}, {"version": 1})

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors_io, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_weights(tmp_path / "model", {"w": torch.ones(2)}, {"version": 2})
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    state_dict, config = load_weights(tmp_path / "model")
    assert torch.equal(state_dict["w"], torch.zeros(2)) and config == {"version": 1}


def test_load_weights_foreign_missing_and_damaged(tmp_path):
    save_file({"w": torch.ones(2)}, tmp_path / "foreign.safetensors")
    assert load_weights(tmp_path / "foreign.safetensors")[1] == {}
    (tmp_path / "foreign.json").write_text('{"preset": "tiny"}')
    assert load_weights(tmp_path / "foreign.safetensors")[1] == {"preset": "tiny"}

    with pytest.raises(CheckpointError, match=r"missing\.safetensors"):
        load_weights(tmp_path / "missing")
    (tmp_path / "damaged.safetensors").write_bytes((tmp_path / "foreign.safetensors").read_bytes()[:-4])
    with pytest.raises(CheckpointError, match=r"damaged\.safetensors"):
        load_weights(tmp_path / "damaged.safetensors")
