"""`ip2n edit` end to end on tiny official-format weight files (built as in test_pipeline.py): every
output, batches, resuming, sweeps, image conversions, and every bad input of the issue's list with
its message, non-zero exit and no output left behind."""

import dataclasses
import io
import json
import os
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

import ip2n.pipeline.edit
from helpers.images import png16, png_header_only, portrait
from helpers.official_files import (
    TINY_SIZES,
    WIDE_TEXT,
    WIDE_TEXT_CONFIG,
    identity_state_dict,
    official_weights,
    preim3d_checkpoint,
)
from ip2n.checkpoints import save_weights
from ip2n.cli import main
from ip2n.encoding import encoder_preset
from ip2n.pipeline import EditPipeline
from ip2n.text import TEXT_ENCODER_PRESETS

ALL_FILES = {
    "source.png",
    "edited.png",
    "views.png",
    "depth.png",
    "edited_latent.npy",
    "orbit.mp4",
    "mesh.ply",
    "result.json",
}
BASIC_FILES = {"source.png", "edited.png", "views.png", "depth.png", "edited_latent.npy", "result.json"}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, fixtures_dir) -> Path:
    return official_weights(tmp_path_factory, fixtures_dir)


@pytest.fixture(autouse=True)
def tiny_official_sizes(monkeypatch):
    """Official files carry no sizes; make `--weights` read them at the tiny test sizes."""
    monkeypatch.setitem(TEXT_ENCODER_PRESETS, WIDE_TEXT, WIDE_TEXT_CONFIG)
    monkeypatch.setattr(ip2n.pipeline.edit, "RELEASED_SIZES", TINY_SIZES)


def run_ip2n(capsys, *args) -> tuple[int, str, str]:
    """Run `ip2n ARGS` in-process → (exit status, stdout, stderr)."""
    try:
        status = main([str(arg) for arg in args])
    except SystemExit as exc:  # argparse errors and --help
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_edit_writes_every_output_and_resumes(weights_dir, tmp_path, capsys):
    portrait(0).save(tmp_path / "anna.png")
    portrait(1, size=300).save(tmp_path / "ben.jpg", quality=95)
    out = tmp_path / "out"
    command = [
        "edit",
        tmp_path / "anna.png",
        tmp_path / "ben.jpg",
        "-i",
        "make him smile",
        "-i",
        "add glasses",
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        3,
        "--video",
        "--frames",
        3,
        "--mesh",
        "ply",
        "--mesh-resolution",
        24,
        "--mesh-level",
        "auto",
        "--seed",
        5,
    ]
    status, stdout, stderr = run_ip2n(capsys, *command)
    assert status == 0, stderr
    assert "2 edited, 0 skipped" in stdout
    assert _tree(out) == {"anna", "ben"} | {
        f"{name}/{file}" for name in ("anna", "ben") for file in ALL_FILES
    }

    folder = out / "anna"
    for name in ("source.png", "edited.png"):
        assert Image.open(folder / name).size == (128, 128)  # the tiny generator's output size
    assert Image.open(folder / "depth.png").mode == "L"
    assert Image.open(folder / "views.png").size == (3 * 128 + 2 * 4, 128)
    assert iio.imread(folder / "orbit.mp4").shape == (3, 128, 128, 3)
    mesh = trimesh.load(folder / "mesh.ply")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    record = json.loads((folder / "result.json").read_text())
    assert record["settings"]["prompts"] == ["make him smile and add glasses"]
    assert (record["seed"], record["settings"]["strength"], record["settings"]["num_inference_steps"]) == (
        5,
        0.3,
        50,
    )
    assert record["input"] == str(tmp_path / "anna.png") and record["weights"] == str(weights_dir)
    assert {"ip2n_version", "torch_version", "python_version", "numpy_version"} <= set(record)
    assert {"encode", "text", "diffusion", "render_edited", "views", "orbit", "mesh"} <= set(
        record["seconds"]
    )
    assert set(record["files"]) == ALL_FILES and record["outputs"]["video_frames"] == 3

    # The command is a thin wrapper: the same edit through the API gives the same latent.
    latent = np.load(folder / "edited_latent.npy")
    assert latent.shape == (1, 14, 512) and latent.dtype == np.float32
    pipeline = EditPipeline.from_weights(weights_dir)
    expected = pipeline(
        Image.open(tmp_path / "anna.png").convert("RGB"),
        ["make him smile", "add glasses"],
        generator=torch.Generator().manual_seed(5),
    ).edited_latent
    assert np.abs(latent - expected.numpy()).max() <= 1e-6

    # Re-running skips finished inputs; removing a result.json redoes that input only.
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}
    status, stdout, _ = run_ip2n(capsys, *command)
    assert status == 0 and "0 edited, 2 skipped" in stdout
    assert stamps == {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}
    (out / "ben" / "result.json").unlink()
    status, stdout, _ = run_ip2n(capsys, *command)
    assert status == 0 and "1 edited, 1 skipped" in stdout
    assert _tree(out / "ben") == ALL_FILES


def test_image_conversions_through_the_command(weights_dir, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    base = portrait(2, size=256)
    base.convert("L").save(inputs / "gray.png")
    base.convert("CMYK").save(inputs / "cmyk.jpg")
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256, 1).astype(np.uint16)
    png16(inputs / "gray16.png", ramp)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((256, 256)))
    rgba.save(inputs / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    base.resize((256, 258)).save(inputs / "rotated.png", exif=exif)  # square within rounding
    Image.new("RGB", (4500, 4500), (90, 120, 150)).save(inputs / "large.jpg")
    out = tmp_path / "out"
    status, stdout, stderr = run_ip2n(
        capsys, "edit", inputs, "-i", "make her smile", "-o", out, "--weights", weights_dir, "--views", 1
    )
    assert status == 0, stderr
    assert "6 edited, 0 skipped (finished earlier; delete a folder to redo it), 0 failed" in stdout
    for name in ("gray", "cmyk", "gray16", "alpha", "rotated", "large"):
        assert _tree(out / name) == BASIC_FILES
    record = lambda name: json.loads((out / name / "result.json").read_text())  # noqa: E731
    # input_image_size: the image the model saw (upright, reduced); input_file_*: the file as stored.
    assert [record(name)["input_image_size"] for name in ("rotated", "large", "gray16")] == [
        [258, 256],
        [4096, 4096],
        [256, 256],
    ]
    assert [record(name)["input_file_pixels"] for name in ("rotated", "large", "gray16")] == [
        [256, 258],
        [4500, 4500],
        [256, 256],
    ]
    for name, file in (("large", "large.jpg"), ("gray16", "gray16.png"), ("cmyk", "cmyk.jpg")):
        assert record(name)["input_file_bytes"] == (inputs / file).stat().st_size


def test_a_picture_that_is_not_square_needs_align(weights_dir, tmp_path, capsys):
    exif = Image.Exif()
    exif[0x0112] = 6
    portrait(3).resize((300, 256)).save(tmp_path / "wide.png", exif=exif)
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "wide.png",
        "-i",
        "make her smile",
        "-o",
        tmp_path / "out",
        "--weights",
        weights_dir,
    )
    # The size is the upright picture's (EXIF rotation applied), and the way out is named.
    assert status == 2 and "wide.png is 256×300 pixels, not a square portrait crop" in stderr
    assert "--align in the CLI" in stderr and not (tmp_path / "out").exists()


def test_official_prompt_list_batch(weights_dir, tmp_path, capsys):
    portrait(3).save(tmp_path / "face.png")
    prompts = {
        "prompt": [
            ["face.png", 2.5, 1.0, "make her smile"],
            ["face.png", 7.5, 1.5, "give her bangs"],
            ["missing.png", 2.5, 1.0, "add glasses"],
        ]
    }
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    command = [
        "edit",
        "--batch",
        tmp_path / "prompts.json",
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        1,
    ]
    status, stdout, stderr = run_ip2n(capsys, *command)
    assert status == 1
    assert "2 edited, 0 skipped (finished earlier; delete a folder to redo it), 1 failed" in stdout
    assert f"failed: {tmp_path / 'missing.png'}: {tmp_path / 'missing.png'}: no such file" in stderr
    assert sorted(path.name for path in out.iterdir()) == ["face", "face-2"]
    second = json.loads((out / "face-2" / "result.json").read_text())["settings"]
    assert (second["instructions"], second["guidance_scale"], second["image_guidance_scale"]) == (
        ["give her bangs"],
        7.5,
        1.5,
    )
    status, stdout, _ = run_ip2n(capsys, *command)
    assert status == 1 and "0 edited, 2 skipped" in stdout


def test_folder_batch_with_a_strength_sweep_and_chained_instructions(weights_dir, tmp_path, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    portrait(4).save(folder / "a.png")
    portrait(5).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image, not picked up")
    out = tmp_path / "out"
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        "--batch",
        folder,
        "-i",
        "add glasses",
        "-i",
        "make him old",
        "--chain",
        "--strength",
        "0.2,0.4",
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        1,
    )
    assert status == 0, stderr
    for name in ("a", "b"):
        assert _tree(out / name) == {"sweep.png", "result.json"} | {
            f"{combo}{file}"
            for combo in ("strength0.2_text2.5_image1", "strength0.4_text2.5_image1")
            for file in ("", *(f"/{name}" for name in BASIC_FILES))
        }
        assert Image.open(out / name / "sweep.png").width == 3 * 128 + 2 * 4
        record = json.loads((out / name / "strength0.4_text2.5_image1" / "result.json").read_text())
        assert (
            record["settings"]["prompts"] == ["add glasses", "make him old"] and record["settings"]["chain"]
        )


def test_align_crops_real_photos_and_reports_faceless_ones(weights_dir, portrait_paths, tmp_path, capsys):
    portraits = portrait_paths
    canvas = Image.new("RGB", (900, 700), (40, 60, 80))
    canvas.paste(Image.open(portraits[0]).convert("RGB").resize((300, 300)), (420, 150))
    canvas.save(tmp_path / "photo.jpg", quality=95)
    Image.new("RGB", (400, 400), (128, 128, 128)).save(tmp_path / "blank.png")
    out = tmp_path / "out"
    status, stdout, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "photo.jpg",
        tmp_path / "blank.png",
        "--align",
        "-i",
        "make her smile",
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        1,
    )
    assert status == 1 and "1 edited, 0 skipped" in stdout and "1 failed" in stdout
    assert f"failed: {tmp_path / 'blank.png'}: " in stderr
    assert sorted(path.name for path in out.iterdir()) == ["photo"]
    record = json.loads((out / "photo" / "result.json").read_text())
    assert record["settings"]["align"] and record["input_image_size"] == [512, 512]
    assert record["input_file_pixels"] == [900, 700]  # the photo as given, before the aligned crop
    assert record["input_file_bytes"] == (tmp_path / "photo.jpg").stat().st_size
    assert len(record["input_camera"]) == 25
    # The aligned crop the model saw is saved beside the results.
    assert "crop.png" in record["files"] and record["outputs"]["crop"]
    assert Image.open(out / "photo" / "crop.png").size == (512, 512)


# --- bad input: a clear message, a non-zero exit and no output -------------------------------------------


def _long_instruction() -> str:
    return "make the person look like a very old wizard with a long white beard " * 6


BAD_INPUTS = {
    "not an image": (lambda p: p.write_text("hello"), [], "is not an image file ip2n can read"),
    "truncated": (lambda p: p.write_bytes(_jpeg_bytes()[:2000]), [], "truncated or damaged"),
    "huge": (
        lambda p: png_header_only(p, 40000, 40000),
        [],
        "too large; ip2n reads images of at most 100 megapixels",
    ),
    "too small": (lambda p: portrait(0, 40).save(p, format="PNG"), [], "too small to hold a usable face"),
    "not square": (
        lambda p: portrait(0).resize((1024, 512)).save(p, format="PNG"),
        [],
        r"is 1024×512 pixels, not a square portrait crop.*--align",
    ),
    "missing image": (lambda p: None, [], "no such file"),
    "empty instruction": (None, ["-i", "  "], "the instruction is empty"),
    "no instruction": (None, ["-i"], None),
    "long instruction": (
        None,
        ["-i", _long_instruction()],
        r"needs 86 tokens.*only 77.*cut off: 'a very old wizard",
    ),
    "unknown preset": (
        None,
        ["--model", "ffhq-best"],
        r"unknown model 'ffhq-best' \(built-in models: synthetic\)",
    ),
    "cuda unavailable": (None, ["--device", "cuda"], "CUDA was requested but is not available"),
    "bad strength": (None, ["--strength", "1.5"], "strength must lie strictly between 0 and 1"),
    "weights not a folder": (None, ["--weights", "nowhere"], "--weights nowhere is not a folder"),
}


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_before_anything_is_written(weights_dir, tmp_path, capsys, case):
    make_image, extra, message = BAD_INPUTS[case]
    if case == "cuda unavailable" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = tmp_path / "face.png"
    if make_image is None:
        portrait(0).save(image)
    else:
        make_image(image)
    extra = list(extra)
    if "-i" not in extra:
        extra += ["-i", "make her smile"]
    weights = [] if "--model" in extra or "--weights" in extra else ["--weights", weights_dir]
    status, _, stderr = run_ip2n(capsys, "edit", image, "-o", tmp_path / "out", *weights, *extra)
    assert status == 2
    if message is not None:
        assert stderr.startswith("ip2n edit: error: ") and len(stderr.splitlines()) == 1
        assert re.search(message, stderr), stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["parent is a file", "read-only folder"])
def test_output_folder_not_writable(weights_dir, tmp_path, capsys, case):
    portrait(0).save(tmp_path / "face.png")
    if case == "parent is a file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "out"
    else:
        if os.geteuid() == 0:
            pytest.skip("permissions do not stop root")
        out = tmp_path / "locked" / "out"
        out.parent.mkdir(mode=0o555)
    status, _, stderr = run_ip2n(
        capsys, "edit", tmp_path / "face.png", "-i", "make her smile", "-o", out, "--weights", weights_dir
    )
    assert status == 2
    assert f"cannot write to output folder {out}" in stderr and "choose a writable -o/--out" in stderr


def _broken_weights(weights_dir: Path, target: Path, case: str) -> None:
    """A copy of the weights folder (big files linked) with one problem."""
    target.mkdir()
    for path in weights_dir.glob("*.p*"):
        (target / path.name).symlink_to(path)
    if case == "missing files":
        (target / "preim3d.pt").unlink()
        (target / "model_ir_se50.pth").unlink()
    elif case == "wrong file":
        (target / "model_ir_se50.pth").unlink()
        torch.save(preim3d_checkpoint(), target / "model_ir_se50.pth")
    elif case == "mismatched shapes":
        (target / "model_ir_se50.pth").unlink()
        state_dict = identity_state_dict()
        state_dict["output_layer.3.weight"] = state_dict["output_layer.3.weight"][:, :100]
        torch.save(state_dict, target / "model_ir_se50.pth")
    elif case == "models that do not fit":
        # A converted encoder (it wins over preim3d.pt) that carries its own, tiny config: 32-d codes.
        config = encoder_preset("tiny", "WPlusEncoder")
        state_dict = {
            key[len("encoder.") :]: value for key, value in preim3d_checkpoint("tiny")["state_dict"].items()
        }
        save_weights(
            target / "encoder.safetensors",
            state_dict,
            {"kind": "preim3d_encoder", "config": dataclasses.asdict(config)},
        )


WEIGHT_PROBLEMS = {
    "missing files": r"incomplete:\n  - no PREIM3D inversion encoder.*expected encoder\.safetensors "
    r"\(converted\) or the official preim3d\.pt\.\n  - no IR-SE50 ArcFace.*model_ir_se50\.pth",
    "wrong file": r"model_ir_se50\.pth: this is a PREIM3D encoder checkpoint.*but the IR-SE50 ArcFace "
    r"weights",
    "mismatched shapes": r"model_ir_se50\.pth: the weights do not fit the IR-SE ArcFace identity network.*"
    r"output_layer\.3\.weight",
    "models that do not fit": r"do not fit together: the encoder predicts 14×32 codes, the generator "
    r"takes 14×512",
}


@pytest.mark.parametrize("case", list(WEIGHT_PROBLEMS))
def test_weights_folder_problems(weights_dir, tmp_path, capsys, case):
    broken = tmp_path / "weights"
    _broken_weights(weights_dir, broken, case)
    portrait(0).save(tmp_path / "face.png")
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "face.png",
        "-i",
        "make her smile",
        "-o",
        tmp_path / "out",
        "--weights",
        broken,
    )
    assert status == 2
    assert re.search(WEIGHT_PROBLEMS[case], stderr, flags=re.DOTALL), stderr
    assert not (tmp_path / "out").exists()


def test_help_lists_the_interface(capsys):
    status, stdout, _ = run_ip2n(capsys, "edit", "--help")
    assert status == 0
    for option in (
        "-i",
        "--weights",
        "--model",
        "--align",
        "--no-align",
        "--steps",
        "--strength",
        "--cfg-text",
        "--cfg-image",
        "--seed",
        "--views",
        "--video",
        "--mesh",
        "--device",
        "--chain",
        "--batch",
    ):
        assert option in stdout


def test_a_single_edit_shows_the_progress_of_every_stage(weights_dir, tmp_path, capsys):
    portrait(6).save(tmp_path / "face.png")
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "face.png",
        "-i",
        "make her smile",
        "-o",
        tmp_path / "out",
        "--weights",
        weights_dir,
        "--views",
        2,
        "--video",
        "--frames",
        3,
        "--mesh",
        "ply",
        "--mesh-resolution",
        24,
        "--mesh-level",
        "auto",
    )
    assert status == 0, stderr
    # tqdm's bars on stderr, each finished: models, encoding, the diffusion steps, the frontal renders,
    # the views, the orbit's frames and the mesh.
    for label, total in (
        ("loading models", 6),
        ("encoding", 3),
        ("editing (diffusion)", 15),
        ("rendering", 2),
        ("views", 2),
        ("orbit frames", 3),
        ("mesh (24³ grid)", 3),
    ):
        assert re.search(rf"{re.escape(label)}: 100%\|[^|]*\| {total}/{total} ", stderr), label


def test_render_reads_the_latent_of_an_edit_with_its_generator(weights_dir, tmp_path, capsys):
    portrait(7).save(tmp_path / "face.png")
    out = tmp_path / "out"
    status, _, stderr = run_ip2n(
        capsys,
        "edit",
        tmp_path / "face.png",
        "-i",
        "add glasses",
        "-o",
        out,
        "--weights",
        weights_dir,
        "--views",
        0,
    )
    assert status == 0, stderr
    record = json.loads((out / "face" / "result.json").read_text())
    assert record["generator"] == {"kind": "eg3d", "weights": str(weights_dir.resolve())}
    # Without --weights, render takes the generator of the weights the edit used (result.json).
    status, _, stderr = run_ip2n(
        capsys, "render", "--latent", out / "face" / "edited_latent.npy", "-o", tmp_path / "r", "--yaw", 0
    )
    assert status == 0, stderr
    render = json.loads((tmp_path / "r" / "render.json").read_text())
    assert render["generator"] == f"the generator of {weights_dir.resolve()} (the edit's weights)"
    rendered = np.asarray(Image.open(tmp_path / "r" / "image.png"), dtype=np.int16)
    assert np.abs(rendered - np.asarray(Image.open(out / "face" / "edited.png"), dtype=np.int16)).max() <= 1
