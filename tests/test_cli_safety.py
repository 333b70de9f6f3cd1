"""The commands under hostile or unlucky conditions: closed pipes and SIGTERM, bounds on every size a
flag sets, output names that collide or escape, files that were there before a run, interrupted and
failing writes (stale temporary files, a failing video encoder, a full disk), and training runs that
must not be overwritten. Each test asserts what the user sees (message, exit status) and which files
are left."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import ip2n.pipeline.edit
from helpers.images import png_header_only, portrait
from helpers.official_files import TINY_SIZES, WIDE_TEXT, WIDE_TEXT_CONFIG, official_weights
from ip2n import atomic
from ip2n.checkpoints import save_weights
from ip2n.cli import main
from ip2n.commands.edit import EditItem, _unique_names
from ip2n.export.video import write_video
from ip2n.generator.config import preset
from ip2n.text import TEXT_ENCODER_PRESETS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def tiny_official_sizes(monkeypatch):
    """Official files carry no sizes; make `--weights` read them at the tiny test sizes."""
    monkeypatch.setitem(TEXT_ENCODER_PRESETS, WIDE_TEXT, WIDE_TEXT_CONFIG)
    monkeypatch.setattr(ip2n.pipeline.edit, "RELEASED_SIZES", TINY_SIZES)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, fixtures_dir) -> Path:
    return official_weights(tmp_path_factory, fixtures_dir)


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory, fixtures_dir) -> Path:
    """A converted small EG3D generator (the reference fixture's weights): quick to render."""
    folder = tmp_path_factory.mktemp("generator")
    state_dict = load_file(fixtures_dir / "eg3d_small" / "state_dict.safetensors")
    save_weights(
        folder / "generator", state_dict, {"kind": "eg3d_generator", "config": preset("eg3d-small").to_dict()}
    )
    return folder


@pytest.fixture(scope="module")
def latent(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("latent") / "latent.npy"
    np.save(path, (np.random.default_rng(0).standard_normal((1, 14, 512)) * 0.1).astype(np.float32))
    return path


def run_ip2n(capsys, *args) -> tuple[int, str, str]:
    """Run `ip2n ARGS` in-process → (exit status, stdout, stderr)."""
    try:
        status = main([str(arg) for arg in args])
    except SystemExit as exc:  # argparse errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def _partials(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if ".partial" in path.name)


def _run_subprocess(script: str, *args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kwargs,
    )


# --- signals and pipes ----------------------------------------------------------------------------------


@pytest.mark.slow  # a command in a subprocess: 11 s
def test_a_closed_output_pipe_ends_a_command_quietly(tmp_path):
    """`ip2n weights check DIR | head -0`: status 141 (128 + SIGPIPE), no traceback, no death by signal."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ip2n.cli", "weights", "check", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()  # the reader goes away before the command prints anything
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


@pytest.mark.slow  # a command in a subprocess: 8 s
def test_sigterm_rolls_back_the_write_in_progress(generator_dir, latent, tmp_path):
    """SIGTERM while an image is being written: no partial file, no half-finished output, status 143."""
    out = tmp_path / "out"
    out.mkdir()
    script = """
import os, signal, sys
import PIL.Image
real_save = PIL.Image.Image.save
def save(self, fp, *args, **kwargs):
    real_save(self, fp, *args, **kwargs)  # the temporary file is written ...
    os.kill(os.getpid(), signal.SIGTERM)  # ... and the job is stopped before it is renamed into place
PIL.Image.Image.save = save
from ip2n.cli import main
sys.exit(main(sys.argv[1:]))
"""
    result = _run_subprocess(script, "render", "--latent", latent, "--weights", generator_dir, "-o", out)
    assert result.returncode == 143, result.stderr
    assert "terminated; finished files are complete" in result.stderr and "Traceback" not in result.stderr
    assert sorted(path.name for path in out.iterdir()) == []  # neither image.png nor its temporary file


# --- bounds on every size a flag sets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["render", "--mesh", "ply", "--mesh-resolution", "3000"],
            "--mesh-resolution: must be a whole number from 16 to 512, got 3000",
        ),
        (["render", "--orbit", "100000"], "--orbit: must be a whole number from 2 to 720"),
        (
            ["render", "--orbit", "4", "--fps", "0", "--video-format", "gif"],
            "--fps: must be a whole number from 1 to 120, got 0",
        ),
        (["render", "--orbit", "4", "--fps", "-5"], "--fps: must be a whole number from 1 to 120, got -5"),
        (["render", "--yaw", "nan"], "--yaw: must be a number at least -360 and at most 360, got nan"),
        (["render", "--pitch", "inf"], "--pitch: must be a number at least -360 and at most 360, got inf"),
        (["render", "--threads", "100000"], "--threads: must be a whole number from 1 to 256"),
    ],
)
def test_render_refuses_sizes_and_angles_out_of_bounds(
    generator_dir, latent, tmp_path, capsys, arguments, message
):
    out = tmp_path / "out"
    status, _, stderr = run_ip2n(
        capsys, *arguments, "--latent", latent, "--weights", generator_dir, "-o", out
    )
    assert status == 2 and message in stderr
    assert not out.exists()


def test_a_latent_with_a_lying_header_is_refused_before_it_is_read(generator_dir, tmp_path, capsys):
    """A 128-byte .npy whose header declares 10¹² numbers: refused from its header."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += " " * (127 - 10 - len(header)) + "\n"
    path = tmp_path / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin-1"))
    assert path.stat().st_size == 128
    status, _, stderr = run_ip2n(
        capsys, "render", "--latent", path, "--weights", generator_dir, "-o", tmp_path / "out"
    )
    assert (
        status == 2
        and "holds a float32 array of shape (1000000000000,); expected a float W+ latent" in stderr
    )
    assert not (tmp_path / "out").exists()


def test_align_bounds_the_crop_size_and_the_photo(tmp_path, capsys):
    portrait(0, size=512).save(tmp_path / "face.png")
    status, _, stderr = run_ip2n(
        capsys, "align", tmp_path / "face.png", "-o", tmp_path / "crop.png", "--size", "40000"
    )
    assert status == 2 and "--size: must be a whole number from 64 to 4096, got 40000" in stderr
    # 108 megapixels: under Pillow's own 179 MP bomb limit, over the 100 MP ip2n edit reads.
    png_header_only(tmp_path / "large.png", 12_000, 9_000)
    status, _, stderr = run_ip2n(capsys, "align", tmp_path / "large.png", "-o", tmp_path / "crop.png")
    assert status == 2 and "over 100 megapixels" in stderr
    assert not (tmp_path / "crop.png").exists()


def test_demo_checks_its_options_before_writing_anything(tmp_path, capsys):
    for arguments in (
        ["--mesh-resolution", "8"],
        ["--views", "1000"],
        ["--frames", "100000"],
        ["--mesh-level", "nan"],
    ):
        status, _, stderr = run_ip2n(capsys, "demo", "-o", tmp_path / "demo", *arguments)
        assert status == 2 and "error" in stderr, arguments
        assert not (tmp_path / "demo").exists(), arguments  # no input.png left behind


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--views", "1000"], "--views: must be a whole number from 0 to 32"),
        (["--video", "--frames", "100000"], "--frames: must be a whole number from 2 to 720"),
        (["--cfg-text", "1e308"], "guidance_scale (text) must be from 0 to 30"),
        (["--cfg-image=-1e6"], "image_guidance_scale must be from 0 to 30"),
        (["--strength", ",".join(["0.5"] * 65)], "make 65 combinations; a comparison grid takes at most 64"),
        (["--seed", "-1"], "--seed: must be a whole number from 0 to"),
    ],
)
def test_edit_refuses_sizes_and_scales_out_of_bounds_before_loading(
    tmp_path, capsys, monkeypatch, arguments, message
):
    monkeypatch.setattr(
        ip2n.pipeline.edit.EditPipeline, "from_weights", lambda *a, **k: pytest.fail("loaded models")
    )
    portrait(0).save(tmp_path / "face.png")
    weights = tmp_path / "weights"
    weights.mkdir()
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "face.png",
        "-i",
        "make her smile",
        "-o",
        tmp_path / "out",
        "--weights",
        weights,
        *arguments,
    )
    assert status == 2 and message in stderr
    assert not (tmp_path / "out").exists()


# --- output names --------------------------------------------------------------------------------------


def _items(*stems: str) -> list[EditItem]:
    return [EditItem(stem, Path(f"{stem}.png"), ("x",), (2.5,), (1.0,)) for stem in stems]


def test_output_folder_names_are_unique_across_the_run():
    names = [item.name for item in _unique_names(_items("a", "a", "a-2", "A", "a-2"))]
    assert names == ["a", "a-2", "a-2-2", "A-3", "a-2-3"]
    assert len({name.casefold() for name in names}) == len(names)


@pytest.mark.parametrize(
    "stem, folder",
    [
        ("..", "image"),
        (".", "image"),
        (".hidden", "hidden"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("x\x00y", "x_y"),
        ("...", "image"),
    ],
)
def test_output_folder_names_are_single_safe_components(stem, folder):
    assert [item.name for item in _unique_names(_items(stem))] == [folder]


def test_edit_writes_colliding_and_dotted_names_into_their_own_folders(weights_dir, tmp_path, capsys):
    """d1/a.png, d2/a.png, d3/a-2.png → a, a-2, a-2-2 (none overwritten); `...png` stays inside -o."""
    for folder, name, seed in (
        ("d1", "a.png", 0),
        ("d2", "a.png", 1),
        ("d3", "a-2.png", 2),
        ("d4", "...png", 3),
    ):
        (tmp_path / folder).mkdir()
        portrait(seed).save(tmp_path / folder / name, format="PNG")
    out = tmp_path / "runs" / "out"
    inputs = [
        tmp_path / "d1" / "a.png",
        tmp_path / "d2" / "a.png",
        tmp_path / "d3" / "a-2.png",
        tmp_path / "d4" / "...png",
    ]
    status, stdout, stderr = run_ip2n(
        capsys,
        "edit",
        *inputs,
        "-i",
        "make her smile",
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        "0",
        "--steps",
        "10",
    )
    assert status == 0, stderr
    assert "4 edited, 0 skipped" in stdout
    assert sorted(path.name for path in out.iterdir()) == ["a", "a-2", "a-2-2", "image"]
    recorded = {
        json.loads((out / name / "result.json").read_text())["input"]
        for name in ("a", "a-2", "a-2-2", "image")
    }
    assert recorded == {str(path) for path in inputs}  # one folder per input: nothing was overwritten
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["out"]  # nothing written beside -o


def test_a_prompt_list_naming_a_dotted_image_stays_inside_the_output_folder(weights_dir, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    portrait(4).save(tmp_path / "photos" / "...png", format="PNG")
    prompts = tmp_path / "photos" / "prompts.json"
    prompts.write_text(json.dumps({"prompt": [["...png", 2.5, 1.0, "make her smile"]]}))
    out = tmp_path / "runs" / "out"
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        "--batch",
        prompts,
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        "0",
        "--steps",
        "10",
    )
    assert status == 0, stderr
    assert sorted(path.name for path in out.iterdir()) == ["image"]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["out"]


# --- files that were there before, interrupted and failing writes -------------------------------------


@pytest.mark.slow  # a full edit interrupted and re-run: 12 s
def test_ctrl_c_removes_only_the_files_this_run_created(weights_dir, tmp_path, capsys, monkeypatch):
    portrait(0).save(tmp_path / "a.png")
    folder = tmp_path / "out" / "a"
    folder.mkdir(parents=True)
    (folder / "orbit.mp4").write_bytes(b"my own video")  # same name as an output, written before the run
    (folder / "notes.txt").write_text("mine")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ip2n.pipeline.result, "write_video", interrupted)
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "a.png",
        "-i",
        "make her smile",
        "-o",
        tmp_path / "out",
        "--weights",
        weights_dir,
        "--video",
        "--views",
        "0",
        "--steps",
        "10",
    )
    assert status == 130 and "interrupted" in stderr
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt", "orbit.mp4"]
    assert (folder / "orbit.mp4").read_bytes() == b"my own video"


def _fail_saving_with_a_full_disk(monkeypatch):
    def full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half an image")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full)


def test_a_full_disk_stops_edit_with_a_message(weights_dir, tmp_path, capsys, monkeypatch):
    portrait(0).save(tmp_path / "a.png")
    portrait(1).save(tmp_path / "b.png")
    out = tmp_path / "out"
    _fail_saving_with_a_full_disk(monkeypatch)
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "a.png",
        tmp_path / "b.png",
        "-i",
        "make her smile",
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        "0",
        "--steps",
        "10",
    )
    assert status == 2, stderr
    assert "ip2n edit: error: the disk is full" in stderr and f"on the disk holding {out / 'a'}" in stderr
    assert "please report it" not in stderr and "Traceback" not in stderr
    assert not out.exists()  # the failed input's files and the new output folder are gone


def test_a_full_disk_in_render_is_a_message(generator_dir, latent, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _fail_saving_with_a_full_disk(monkeypatch)
    status, _, stderr = run_ip2n(capsys, "render", "--latent", latent, "--weights", generator_dir, "-o", out)
    assert (
        status == 2 and "ip2n render: error: the disk is full" in stderr and str(out / "image.png") in stderr
    )
    assert _partials(out) == [] and not (out / "image.png").exists()


def test_stale_partial_files_are_removed_by_the_next_write_into_their_folder(tmp_path):
    before = time.time() - 3600
    dead_pid = 4_000_000_000  # above any process id
    stale = [
        f".image.ip2n{dead_pid}-abcd_123.partial.png",  # a killed ip2n process's
        ".edited.x1y2z3w4.partial.png",  # written by an ip2n without process ids in the names
    ]
    kept = [
        f".image.ip2n{os.getppid()}-qwertyui.partial.png",  # a running process's write
        ".notes.partial.txt",  # not named as ip2n names its temporary files
        "orbit.partial.mp4",  # not hidden: not a temporary file of ip2n
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (before, before))
    fresh = tmp_path / f".depth.ip2n{dead_pid}-zzzzzzzz.partial.png"  # newer than this process: maybe in use
    fresh.write_bytes(b"x")
    atomic.write_text_atomic(tmp_path / "result.json", "{}")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([*kept, fresh.name, "result.json"])


_FAKE_FFMPEG = """#!/bin/sh
for last; do :; done
head -c 100 > "$last"
cat > /dev/null
echo "{message}" >&2
exit 1
"""


@pytest.mark.parametrize(
    "message, error",
    [
        (
            "Conversion failed!",
            r"ffmpeg could not write the video .*orbit\.mp4 \(exit status 1: Conversion failed!\)",
        ),
        ("av_interleaved_write_frame(): No space left on device", r"No space left on device.*orbit\.mp4"),
    ],
)
def test_a_failing_video_encoder_installs_no_video(tmp_path, monkeypatch, message, error):
    encoder = tmp_path / "ffmpeg"
    encoder.write_text(_FAKE_FFMPEG.format(message=message))
    encoder.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(encoder))
    out = tmp_path / "out"
    out.mkdir()
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    from ip2n.export.video import VideoWriteError

    with pytest.raises(OSError, match=error) as failure:
        write_video(frames, out / "orbit.mp4", fps=12)
    assert isinstance(failure.value, VideoWriteError) or failure.value.errno == errno.ENOSPC
    assert list(out.iterdir()) == []  # neither a truncated orbit.mp4 nor its temporary file


# --- training runs ------------------------------------------------------------------------------------


def test_train_into_an_existing_run_without_resume_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"weeks of training")
    status, _, stderr = run_ip2n(
        capsys, "train", "--config", REPO / "configs" / "tiny.yaml", "-o", run, "--data", tmp_path
    )
    assert status == 2 and "already holds a training run (checkpoint.pt)" in stderr and "--resume" in stderr
    assert (run / "checkpoint.pt").read_bytes() == b"weeks of training"


def test_resume_from_a_checkpoint_the_safe_loader_refuses(tmp_path, capsys):
    import argparse

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"step": 1, "args": argparse.Namespace(lr=1.0)}, run / "checkpoint.pt")
    status, _, stderr = run_ip2n(
        capsys, "train", "--config", REPO / "configs" / "tiny.yaml", "-o", run, "--data", tmp_path, "--resume"
    )
    assert status == 2 and "holds objects other than tensors and plain data, which ip2n never loads" in stderr
    assert "weights_only" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    "change, message",
    [
        (
            (
                "logging:\n  log_every: 5\n  checkpoint_every: 10",
                "logging:\n  log_every: 5\n  checkpoint_every: 0",
            ),
            "logging.checkpoint_every must be at least 1, got 0",
        ),
        (
            ("logging:\n  log_every: 5", "logging:\n  log_every: 0"),
            "logging.log_every must be at least 1, got 0",
        ),
        (
            ("render_resolution: 16", "render_resolution: 100000"),
            "objective.render_resolution must be from 8 to 512",
        ),
        (
            ("context_dim: 8", "context_dim: 8\n    hidden_size: 1000000"),
            "model.dit_overrides.hidden_size = 1000000 is above the limit of 4096",
        ),
        (("  dit: tiny", "  dit: [tiny"), "is not valid YAML (line"),
    ],
)
def test_bad_training_configs_are_messages_naming_the_file(tmp_path, capsys, change, message):
    text = (REPO / "configs" / "tiny.yaml").read_text()
    assert change[0] in text
    config = tmp_path / "bad.yaml"
    config.write_text(text.replace(change[0], change[1], 1))
    status, _, stderr = run_ip2n(
        capsys, "train", "--config", config, "-o", tmp_path / "run", "--data", tmp_path
    )
    assert status == 2 and str(config) in stderr and message in stderr, stderr
    assert not (tmp_path / "run").exists()


def test_signal_handlers_are_restored_after_a_command(tmp_path, capsys):
    previous = signal.getsignal(signal.SIGTERM)
    run_ip2n(capsys, "weights", "check", tmp_path)
    assert signal.getsignal(signal.SIGTERM) is previous
