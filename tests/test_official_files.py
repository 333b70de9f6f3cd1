"""Official files as training runs leave them: every kind converts, checks and edits end to end.

The files are written by `helpers.official_files` / `helpers.eg3d_files` the way each official tool
writes them: EG3D snapshots and `torch.save(G_ema)` with the `dataset_label_std` buffer the training
loop registers before copying G to G_ema; InstructPix2NeRF train.py checkpoints (`model`, `ema`,
`opt` from a real AdamW step, `args` Namespace with paths), with and without the embedded OpenCLIP
model; PREIM3D checkpoints (`opts` with numpy values and paths, `latent_avg`, the generator copy,
optimizer and discriminator states); IR-SE50 with and without BatchNorm counters. Also here: what
ip2n says about a file that is not what its name says, and files with unknown objects or code.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import pickle
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ip2n.pipeline.edit
from helpers import eg3d_files
from helpers.images import portrait
from helpers.official_files import (
    TINY_SIZES,
    WIDE_TEXT,
    WIDE_TEXT_CONFIG,
    dit_checkpoint,
    identity_state_dict,
    open_clip_state_dict,
    preim3d_checkpoint,
)
from ip2n.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    editing_weights,
    load_checkpoint,
    read_eg3d_generator,
    read_torch_checkpoint,
    to_plain_data,
)
from ip2n.checkpoints.editing_weights import check_weights_dir
from ip2n.checkpoints.safe_unpickle import ALLOWED_GLOBALS, ObjectRecord, Unpickler
from ip2n.cli import main
from ip2n.text import TEXT_ENCODER_PRESETS

LABEL_STD_LINE = "dataset_label_std [25]: a buffer EG3D's training loop registers on the generator"


@pytest.fixture(autouse=True)
def tiny_official_sizes(monkeypatch):
    """Official files carry no sizes; make the commands read them at the tiny test sizes."""
    monkeypatch.setitem(TEXT_ENCODER_PRESETS, WIDE_TEXT, WIDE_TEXT_CONFIG)
    monkeypatch.setattr(ip2n.pipeline.edit, "RELEASED_SIZES", TINY_SIZES)
    for command in (editing_weights.convert_editing_models, editing_weights.check_weights_dir):
        monkeypatch.setattr(editing_weights, command.__name__, functools.partial(command, presets=TINY_SIZES))


def run_ip2n(capsys, *args) -> tuple[int, str, str]:
    try:
        status = main([str(arg) for arg in args])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


# --- EG3D files as the training loop writes them ---------------------------------------------------


@pytest.fixture(scope="module")
def reference_generator(fixtures_dir):
    return load_file(fixtures_dir / "eg3d_small" / "state_dict.safetensors")


@pytest.mark.parametrize("writer", ["snapshot", "torch_save"])
def test_generator_files_with_training_buffers_read_bit_for_bit(
    fixtures_dir, tmp_path, reference_generator, writer
):
    path = tmp_path / "G_ema.pkl"
    if writer == "snapshot":
        eg3d_files.write_snapshot(fixtures_dir, path)
    else:
        eg3d_files.write_torch_save(fixtures_dir, path)

    checkpoint = read_eg3d_generator(path)

    official_order = json.loads((fixtures_dir / "eg3d_pickle" / "snapshot_info.json").read_text())
    assert list(checkpoint.state_dict) == list(official_order["G_state_dict_sha256_16"])
    assert all(torch.equal(checkpoint.state_dict[key], value) for key, value in reference_generator.items())
    assert checkpoint.ignored[-1].startswith(LABEL_STD_LINE)
    if writer == "snapshot":
        assert [line.split(":")[0] for line in checkpoint.ignored[:-1]] == [
            "training_set_kwargs",
            "G",
            "D",
            "augment_pipe",
        ]


def test_the_writers_name_the_globals_of_the_official_files(fixtures_dir, tmp_path):
    """The re-written files reference the same globals as the official fixtures (globals.json)."""
    expected = json.loads((fixtures_dir / "eg3d_pickle" / "globals.json").read_text())
    snapshot = eg3d_files.write_snapshot(fixtures_dir, tmp_path / "snapshot.pkl")
    written = _globals(snapshot.read_bytes())
    # numpy 2 spells its scalar reconstructor numpy._core; the released files say numpy.core.
    official = {
        name.replace("numpy.core.", "numpy._core.")
        for name in expected["network-snapshot-small.pkl"]["globals"]
    }
    assert written == official
    # Every global the official files name resolves to an allowed function, never to a stand-in.
    for name in expected["network-snapshot-small.pkl"]["globals"] + expected["G_ema-small.pkl"]["globals"]:
        module, _, attribute = name.rpartition(".")
        assert Unpickler(io.BytesIO()).find_class(module, attribute) is ALLOWED_GLOBALS[(module, attribute)]


def _globals(data: bytes) -> set[str]:
    """Every global a pickle names, as ip2n's unpickler is asked for them."""
    names: set[str] = set()

    class Recorder(Unpickler):
        def find_class(self, module: str, name: str):
            names.add(f"{module}.{name}")
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return names


def test_discriminator_or_encoder_given_as_the_generator(fixtures_dir, tmp_path, capsys):
    eg3d_files.write_discriminator(fixtures_dir, tmp_path / "G_ema.pkl")
    status, _out, err = run_ip2n(capsys, "weights", "convert", tmp_path / "G_ema.pkl", "-o", tmp_path / "out")
    assert status == 2
    assert "holds EG3D's discriminator (DualDiscriminator), which only training uses" in err
    assert "the generator is G_ema in the same training snapshot" in err
    assert not (tmp_path / "out").exists()

    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(preim3d_checkpoint(), folder / "G_ema.pkl")
    status, out, _err = run_ip2n(capsys, "weights", "check", folder)
    assert status == 1
    assert "is a PREIM3D encoder checkpoint (state_dict + opts), but an EG3D generator" in out
    assert "it belongs in the weights folder as preim3d.pt" in out


def test_open_clip_image_tower_alone_is_named(fixtures_dir, tmp_path, capsys):
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(dit_checkpoint(fixtures_dir, embed_text=False), folder / "instructpix2nerf.pt")
    torch.save(open_clip_state_dict(text=False), folder / "open_clip_pytorch_model.bin")
    report = {item.name: item for item in check_weights_dir(folder, TINY_SIZES)}["text_encoder"]
    assert not report.ok
    assert "the image tower of an OpenCLIP model only" in report.summary
    assert "ip2n needs the text tower" in report.summary


# --- whole folders: convert, check, edit -----------------------------------------------------------

FOLDERS = {
    # EG3D snapshot; DiT embedding OpenCLIP; PREIM3D with its training state; IR-SE50 of old PyTorch.
    "snapshot": dict(
        generator="snapshot", embed_text=True, training_state=True, counters=False, legacy=False
    ),
    # torch.save(G_ema); DiT without text + open_clip's own file; bare PREIM3D; IR-SE50 in torch's
    # legacy (pre-zip) format with its counters.
    "torch_save": dict(
        generator="torch_save", embed_text=False, training_state=False, counters=True, legacy=True
    ),
}


def _write_folder(
    folder: Path, fixtures_dir: Path, *, generator, embed_text, training_state, counters, legacy
):
    folder.mkdir(parents=True)
    if generator == "snapshot":
        eg3d_files.write_snapshot(fixtures_dir, folder / "G_ema.pkl")
    else:
        eg3d_files.write_torch_save(fixtures_dir, folder / "G_ema.pkl")
    torch.save(dit_checkpoint(fixtures_dir, embed_text=embed_text), folder / "instructpix2nerf.pt")
    if not embed_text:
        torch.save(open_clip_state_dict(), folder / "open_clip_pytorch_model.bin")
    copy = {
        "backbone.mapping.fc0.weight": torch.ones(4, 4),
        "superresolution.b128.conv0.bias": torch.zeros(4),
    }
    torch.save(preim3d_checkpoint(generator_copy=copy, training_state=training_state), folder / "preim3d.pt")
    torch.save(
        identity_state_dict(counters=counters),
        folder / "model_ir_se50.pth",
        _use_new_zipfile_serialization=not legacy,
    )
    return folder


@pytest.mark.parametrize("variant", list(FOLDERS))
def test_official_folder_converts_checks_and_edits(fixtures_dir, tmp_path, capsys, variant):
    official = _write_folder(tmp_path / "official", fixtures_dir, **FOLDERS[variant])
    converted = tmp_path / "converted"

    status, out, err = run_ip2n(capsys, "weights", "convert", official, "-o", converted)

    assert status == 0, err
    assert LABEL_STD_LINE in out
    assert (
        "opt: the optimizer state (training only)" in out and "args: the options of the training run" in out
    )
    assert "decoder.* (2 tensors): PREIM3D's copy of the EG3D generator" in out
    assert "latent_avg [14, 512]: PREIM3D's average latent" in out
    if variant == "snapshot":
        assert "D: the discriminator (training only)" in out
        assert "optimizer: the optimizer state" in out and "discriminator_state_dict:" in out
    generator_record = json.loads((converted / "generator.json").read_text())
    assert generator_record["source"] == "G_ema.pkl" and generator_record["ignored"][-1].startswith(
        LABEL_STD_LINE
    )
    text_record = json.loads((converted / "text_encoder.json").read_text())
    expected_source = "instructpix2nerf.pt" if variant == "snapshot" else "open_clip_pytorch_model.bin"
    assert text_record["source"] == expected_source
    assert "OpenCLIP tensors that penultimate-layer text features do not use" in text_record["ignored"][0]

    for folder in (official, converted):
        status, out, _err = run_ip2n(capsys, "weights", "check", folder)
        assert status == 0, out
    assert "Left out (not needed to edit):" in run_ip2n(capsys, "weights", "check", official)[1]

    portrait(0).save(tmp_path / "face.png")
    latents = []
    # Editing straight from the official files is the same code either way: one variant is enough.
    folders = [("from-converted", converted)]
    if variant == "snapshot":
        folders.insert(0, ("from-official", official))
    for name, folder in folders:
        out_dir = tmp_path / name
        status, _out, err = run_ip2n(
            capsys,
            "edit",
            tmp_path / "face.png",
            "-i",
            "make her smile",
            "-o",
            out_dir,
            "--weights",
            folder,
            "--views",
            1,
            "--seed",
            3,
        )
        assert status == 0, err
        latents.append(np.load(out_dir / "face" / "edited_latent.npy"))
    # Conversion changes nothing about the weights: both folders give the same edit (up to the float
    # rounding of other kernel paths: safetensors tensors are not 64-byte aligned).
    if len(latents) == 2:
        assert np.abs(latents[0] - latents[1]).max() <= 2e-5


# --- unknown objects and code inside otherwise valid checkpoints ------------------------------------


class _Call:
    """Pickles as `function(*args)`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.fixture
def unknown_module(tmp_path, monkeypatch):
    """A module `lab_tools` that would leave a sentinel file if it were ever imported or run.

    The pickles name its functions through a stand-in registered only while they are written; the
    real module on sys.path is what any import by a loader would run.
    """
    sentinel = tmp_path / "lab_tools_ran"
    (tmp_path / "lab_tools.py").write_text(
        f"open({str(sentinel)!r}, 'w').close()\ndef make(*args):\n    open({str(sentinel)!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    stand_in = types.ModuleType("lab_tools")

    def make(*args):  # pragma: no cover - only its name is pickled
        raise AssertionError("never called")

    make.__module__, make.__qualname__ = "lab_tools", "make"
    stand_in.make = make

    def save(obj, path: Path) -> Path:
        monkeypatch.setitem(sys.modules, "lab_tools", stand_in)
        torch.save(obj, path)
        monkeypatch.delitem(sys.modules, "lab_tools")
        return path

    return types.SimpleNamespace(make=make, save=save, sentinel=sentinel)


def test_unknown_objects_never_block_the_weights(fixtures_dir, tmp_path, unknown_module, capsys):
    checkpoint = dit_checkpoint(fixtures_dir)
    checkpoint["args"].schedule = _Call(unknown_module.make, "cosine", 1000)
    checkpoint["sampler_state"] = _Call(unknown_module.make, [1, 2, 3])
    folder = tmp_path / "official"
    folder.mkdir()
    unknown_module.save(checkpoint, folder / "instructpix2nerf.pt")

    loaded = read_torch_checkpoint(folder / "instructpix2nerf.pt")
    record = loaded["args"]["schedule"]
    assert isinstance(record, ObjectRecord) and record.class_path == "lab_tools.make"
    assert record.args == ("cosine", 1000)
    assert loaded["args"]["results_dir"] == "results"  # the Path, read without touching any file system

    status, out, err = run_ip2n(capsys, "weights", "convert", folder, "-o", tmp_path / "converted")
    assert status == 0, err
    assert "sampler_state: a lab_tools.make object, kept as an inert record" in out
    assert not unknown_module.sentinel.exists() and "lab_tools" not in sys.modules


def test_a_tensor_that_needs_an_unknown_call_is_refused(fixtures_dir, tmp_path, unknown_module):
    checkpoint = dit_checkpoint(fixtures_dir, embed_text=False)
    storage = _Call(unknown_module.make, "weights.bin")
    checkpoint["ema"]["x_embedder.proj.weight"] = _Call(
        torch._utils._rebuild_tensor_v2,
        storage,
        0,
        (64, 1024, 1, 1),
        (1024, 1, 1, 1),
        False,
        collections.OrderedDict(),
    )
    path = unknown_module.save(checkpoint, tmp_path / "instructpix2nerf.pt")
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"build a tensor \(_rebuild_tensor_v2\) from the result of calling lab_tools\.make",
    ):
        read_torch_checkpoint(path)

    checkpoint = dit_checkpoint(fixtures_dir, embed_text=False)
    checkpoint["ema"]["x_embedder.proj.weight"] = _Call(unknown_module.make, "weights.bin")
    path = unknown_module.save(checkpoint, tmp_path / "instructpix2nerf.pt")
    with pytest.raises(
        CheckpointError,
        match=r"the DiT weight x_embedder\.proj\.weight is the result of calling lab_tools\.make",
    ):
        editing_weights.read_dit(path, preset="tiny")
    assert not unknown_module.sentinel.exists()


@pytest.mark.parametrize("where", ["dit_args", "preim3d_opts", "snapshot"])
def test_code_inside_a_valid_checkpoint_is_refused_and_never_runs(fixtures_dir, tmp_path, where):
    sentinel = tmp_path / "pwned"
    payload = _Call(os.system, f"touch {sentinel}")
    path = tmp_path / "file.pt"
    if where == "dit_args":
        checkpoint = dit_checkpoint(fixtures_dir, embed_text=False)
        checkpoint["args"].hook = payload
        torch.save(checkpoint, path)
    elif where == "preim3d_opts":
        checkpoint = preim3d_checkpoint(training_state=True)
        checkpoint["opts"]["callback"] = payload
        torch.save(checkpoint, path)
    else:
        eg3d_files.write_snapshot(fixtures_dir, path, extra={"progress": payload})

    reader = read_eg3d_generator if where == "snapshot" else read_torch_checkpoint
    with pytest.raises(UnsafeCheckpointError) as refused:
        reader(path)
    assert str(path) in str(refused.value) and "system" in str(refused.value)
    assert not sentinel.exists()


# --- hostile structure ---------------------------------------------------------------------------------


def _billion_laughs() -> bytes:
    """{"model": L8} where L0 = ["x"] * 10 and each Lk is a list of ten references to L(k-1)."""
    nested: list = ["x"] * 10
    for _ in range(8):
        nested = [nested] * 10
    return pickle.dumps({"model": nested}, protocol=2)


def test_repeated_references_are_converted_once(tmp_path):
    path = tmp_path / "instructpix2nerf.pt"
    path.write_bytes(_billion_laughs())
    assert path.stat().st_size < 400
    plain = to_plain_data(load_checkpoint(path))
    level = plain["model"]
    for _ in range(8):  # shared, as in the file: 10⁹ leaves are never materialised
        assert all(item is level[0] for item in level)
        level = level[0]
    report = {item.name: item for item in check_weights_dir(tmp_path, TINY_SIZES)}["dit"]
    assert not report.ok and "no DiT weights found" in report.summary


def test_cycles_and_deep_nesting_are_clear_errors(tmp_path):
    cyclic: dict = {"name": "args"}
    cyclic["self"] = cyclic
    depth = 50_000  # too deep for pickle.dumps itself: written opcode by opcode
    deep = b"\x80\x02}X\x04\x00\x00\x00args" + b"]" * depth + b"a" * (depth - 1) + b"s."
    for name, data in (("cyclic", pickle.dumps({"args": cyclic}, protocol=2)), ("deep", deep)):
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="contains itself or is nested beyond 100 levels"):
            read_torch_checkpoint(path)
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(path, folder / "instructpix2nerf.pt")
        report = {item.name: item for item in check_weights_dir(folder, TINY_SIZES)}["dit"]
        assert not report.ok and "contains itself or is nested beyond" in report.summary


def _hostile_weights_folder(folder: Path) -> dict[str, str]:
    """One hostile file per weight file name → {component: what `ip2n weights check` must say}."""
    cyclic: dict = {"name": "opts"}
    cyclic["self"] = cyclic
    depth = 50_000
    files = {
        "instructpix2nerf.pt": _billion_laughs(),
        "preim3d.pt": pickle.dumps({"state_dict": {}, "opts": cyclic}, protocol=2),
        "model_ir_se50.pth": b"\x80\x02}X\x04\x00\x00\x00args" + b"]" * depth + b"a" * (depth - 1) + b"s.",
        # A 20-byte pickle whose frame claims 2⁴⁰ bytes, and one whose bytes object claims 2³¹.
        "G_ema.pkl": b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"}.",
        "open_clip_pytorch_model.bin": b"\x80\x04\x8e" + (2**31).to_bytes(8, "little") + b"abc",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {
        "generator": "G_ema.pkl (MemoryError: it declares more data than fits in memory)",
        "dit": "no DiT weights found",
        "text_encoder": "open_clip_pytorch_model.bin",
        "encoder": "contains itself or is nested beyond 100 levels",
        "identity": "contains itself or is nested beyond 100 levels",
    }


@pytest.mark.slow  # every hostile file through every loader, in subprocesses: 21 s
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to measure memory")
def test_hostile_files_are_refused_within_a_memory_and_time_budget(tmp_path):
    """`ip2n weights check` on a folder of hostile pickles, as a user runs it, with its address space
    limited to what the program needs plus 2 GB and a time limit: a clean report, no traceback."""
    import resource
    import subprocess

    expected = _hostile_weights_folder(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    # The CPU build of torch alone maps gigabytes of library code: the budget is on top of that.
    baseline = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ip2n.cli, ip2n.checkpoints.editing_weights, ip2n.checkpoints.generator_weights; "
            "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    limit = int(baseline.stdout) * 1024 + 2 * 2**30

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "ip2n.cli", "weights", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limit_memory,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines() if line.startswith("[")}
    for component, message in expected.items():
        line = lines[f"[PROBLEM] {component}"]
        assert message in line, line
