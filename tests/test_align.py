"""Aligning users' photos: the EG3D crop on the test portraits, perturbed copies, bad input,
head pose and the `ip2n align` command.

The portraits of `tests/fixtures/portraits` are already-aligned EG3D crops, so re-aligning one
should give (nearly) the identity transform, and aligning a scaled / rotated / shifted copy of it
should land on the same crop. Errors are measured where they are largest: at the crop's corners.
"""

import io
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ip2n import cli
from ip2n.align import AlignmentError, align_face
from ip2n.align.crop import apply_transform
from ip2n.rendering.cameras import camera_labels

SIZE = 512
CORNERS = np.array([[0, 0], [SIZE, 0], [SIZE, SIZE], [0, SIZE]], dtype=np.float64)
# Portraits that look straight at the camera, and two clearly turned ones (face towards the image's
# left → the camera sits towards the subject's left → positive yaw).
FRONTAL = ("00008_01", "00009_01", "00016_01", "00018_01", "00066_01")
TURNED_TO_IMAGE_LEFT, TURNED_TO_IMAGE_RIGHT = "00003_01", "00020_01"
HEAD_BOWED, CHIN_UP = "00033_01", "00011_01"


@pytest.fixture(scope="module")
def portraits(portrait_paths):
    return {path.stem: Image.open(path).convert("RGB") for path in portrait_paths}


@pytest.fixture(scope="module")
def aligned(portraits):
    return {name: align_face(image, name=name) for name, image in portraits.items()}


def corner_error(transform, reference=None):
    """Largest distance (crop pixels) between the crop corners of two transforms of the same frame."""
    reference = np.eye(3) if reference is None else reference
    moved = apply_transform(transform @ np.linalg.inv(reference), CORNERS)
    return float(np.linalg.norm(moved - CORNERS, axis=1).max())


def similarity(scale, degrees, centre_to):
    """(3, 3): scale and rotate a portrait about its centre, then put that centre at `centre_to`."""
    angle = math.radians(degrees)
    linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = np.asarray(centre_to, dtype=np.float64) - linear @ np.array([SIZE / 2, SIZE / 2])
    return matrix


def place(canvas, portrait, matrix):
    """Paste `portrait` warped by `matrix` (portrait pixels → canvas pixels) onto `canvas`, in place."""
    inverse = tuple(np.linalg.inv(matrix)[:2].ravel())
    warped = portrait.transform(
        canvas.size, Image.Transform.AFFINE, inverse, resample=Image.Resampling.BICUBIC
    )
    mask = Image.new("L", portrait.size, 255).transform(canvas.size, Image.Transform.AFFINE, inverse)
    canvas.paste(warped, (0, 0), mask)
    return canvas


def background(size, noisy, seed=0):
    if noisy:
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        return Image.fromarray(pixels)
    return Image.new("RGB", size, (200, 190, 175))


# ---------------------------------------------------------------- the crop on aligned portraits


def test_realigning_portraits_gives_nearly_the_same_crop(portraits, aligned):
    errors, pixel_differences = [], []
    for name, image in portraits.items():
        result = aligned[name]
        linear = result.transform[:2, :2]
        scale = math.sqrt(abs(np.linalg.det(linear)))
        rotation = math.degrees(math.atan2(linear[1, 0], linear[0, 0]))
        assert abs(scale - 1) < 0.035, (name, scale)
        assert abs(rotation) < 1.5, (name, rotation)
        errors.append(corner_error(result.transform))
        difference = np.abs(np.asarray(result.image, dtype=np.float64) - np.asarray(image, dtype=np.float64))
        pixel_differences.append(difference.mean())
        assert result.image.size == (SIZE, SIZE) and result.image.mode == "RGB"
    # Calibration residuals (different landmark detector than the one that made the crops):
    # mean 6.6 px, max 11.6 px at the corners (leave-one-out 7.2 / 12.8 px); mean pixel
    # difference 10.7 / 255 (benchmarks/align_calibration.py).
    assert max(errors) < 15 and np.mean(errors) < 8, errors
    assert np.mean(pixel_differences) < 13 and max(pixel_differences) < 25, pixel_differences


def test_other_portraits_are_far_from_the_crop(portraits):
    # Scale for the pixel-difference bound above: two different aligned faces differ far more.
    arrays = [np.asarray(image, dtype=np.float64) for image in portraits.values()]
    differences = [np.abs(arrays[0] - other).mean() for other in arrays[1:]]
    assert min(differences) > 35


def test_landmarks_are_in_crop_pixels(aligned):
    result = aligned["00009_01"]
    assert result.landmarks.shape == (68, 2)
    assert (result.landmarks > 0).all() and (result.landmarks < SIZE).all()
    left_eye, right_eye = result.landmarks[36:42].mean(axis=0), result.landmarks[42:48].mean(axis=0)
    assert left_eye[0] < SIZE / 2 < right_eye[0]
    assert abs(left_eye[1] - right_eye[1]) < 4  # upright
    assert result.transform.shape == (3, 3) and result.message is None


# (scale, rotation in degrees, where the portrait centre goes, canvas, noisy background)
PERTURBATIONS = [
    (0.6, 0.0, (350, 300), (1200, 900), False),
    (1.5, 0.0, (520, 430), (1200, 900), True),
    (1.0, 30.0, (600, 450), (1200, 900), True),
    (1.0, -30.0, (450, 500), (1200, 900), False),
    (0.8, 20.0, (700, 400), (1200, 900), True),
    (1.2, -15.0, (500, 420), (1000, 800), False),
    (0.7, -25.0, (800, 500), (1200, 900), True),
]


@pytest.mark.parametrize("case", range(len(PERTURBATIONS)))
def test_perturbed_copies_recover_the_crop(portraits, aligned, case):
    scale, degrees, centre, canvas_size, noisy = PERTURBATIONS[case]
    placement = similarity(scale, degrees, centre)
    # Each perturbation on 6 of the 20 portraits (all 20 are covered across the cases).
    names = [sorted(portraits)[(3 * case + k) % 20] for k in range(6)]
    for name in names:
        photo = place(background(canvas_size, noisy, seed=case), portraits[name], placement)
        result = align_face(photo)
        portrait_to_crop = result.transform @ placement
        # Same crop as aligning the portrait itself (measured: ≤ 6 px at the corners) ...
        assert corner_error(portrait_to_crop, aligned[name].transform) < 8, (name, case)
        # ... and as the portrait's own framing, up to the calibration residual (measured: ≤ 14.2 px).
        assert corner_error(portrait_to_crop) < 18, (name, case)
        mean_landmark_shift = np.linalg.norm(result.landmarks - aligned[name].landmarks, axis=1).mean()
        assert mean_landmark_shift < 4, (name, case, mean_landmark_shift)


def test_output_size_scales_the_same_crop(portraits, aligned):
    small = align_face(portraits["00016_01"], output_size=256)
    assert small.image.size == (256, 256)
    reference = aligned["00016_01"]
    assert corner_error(np.diag([2.0, 2.0, 1.0]) @ small.transform, reference.transform) < 1e-6
    np.testing.assert_allclose(2 * small.landmarks, reference.landmarks, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "exif"])
def test_image_modes_and_exif_orientation(portraits, aligned, mode):
    name = "00034_01"
    portrait = portraits[name]
    if mode == "L":
        photo = portrait.convert("L")
    elif mode == "RGBA":
        photo = portrait.convert("RGBA")
        photo.paste((0, 0, 0, 0), (0, 0, 40, 40))  # a transparent corner
    elif mode == "CMYK":
        photo = portrait.convert("CMYK")
    elif mode == "I;16":
        gray = np.asarray(portrait.convert("L"), dtype=np.uint16) * 257
        photo = Image.fromarray(gray)
        assert photo.mode == "I;16"
    else:
        # Stored on its side, with the EXIF tag that tells viewers to turn it upright.
        exif = Image.Exif()
        exif[0x0112] = 6
        buffer = io.BytesIO()
        portrait.rotate(90, expand=True).save(buffer, format="JPEG", quality=95, exif=exif)
        photo = Image.open(io.BytesIO(buffer.getvalue()))
    result = align_face(photo)
    assert result.image.mode == "RGB" and result.image.size == (SIZE, SIZE)
    assert corner_error(result.transform, aligned[name].transform) < 8


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["flat", "noise"])
def test_no_face(kind):
    photo = background((320, 240), noisy=kind == "noise", seed=3)
    with pytest.raises(
        AlignmentError, match=r"no face found in holiday\.jpg: use a photo where the face is visible"
    ):
        align_face(photo, name="holiday.jpg")


def test_several_faces_use_the_largest(portraits, aligned):
    large, small = "00069_01", "00085_01"
    canvas = background((900, 520), noisy=False)
    large_placement = similarity(480 / SIZE, 0.0, (250, 260))
    place(canvas, portraits[large], large_placement)
    place(canvas, portraits[small], similarity(300 / SIZE, 0.0, (700, 260)))
    result = align_face(canvas)
    assert result.message is not None and result.message.startswith("2 faces found; used the largest")
    assert corner_error(result.transform @ large_placement, aligned[large].transform) < 8


def test_face_too_small(portraits):
    photo = place(
        background((400, 300), noisy=False), portraits["00009_01"], similarity(120 / SIZE, 0.0, (200, 150))
    )
    expected = r"the face in the image is only \d+ px wide; at least 80 px is needed: use a larger photo"
    with pytest.raises(AlignmentError, match=expected):
        align_face(photo)
    # The same face passes with a lower limit: the error is about size, not detection.
    assert align_face(photo, min_face_width=40).image.size == (SIZE, SIZE)


def test_alignment_error_is_a_value_error():
    assert issubclass(AlignmentError, ValueError)


# ---------------------------------------------------------------- head pose → camera


def test_camera_label_matches_yaw_and_pitch(aligned):
    for result in aligned.values():
        assert result.camera.shape == (25,) and result.camera.dtype == torch.float32
        torch.testing.assert_close(result.camera, camera_labels(result.yaw, result.pitch)[0], rtol=0, atol=0)


def test_frontal_portraits_have_small_yaw(aligned):
    for name in FRONTAL:
        assert abs(aligned[name].yaw) < math.radians(7), (name, math.degrees(aligned[name].yaw))


def test_yaw_and_pitch_directions(aligned):
    assert aligned[TURNED_TO_IMAGE_LEFT].yaw > math.radians(15)
    assert aligned[TURNED_TO_IMAGE_RIGHT].yaw < -math.radians(15)
    # A bowed head is seen from above (negative pitch), a raised chin from below.
    assert aligned[CHIN_UP].pitch - aligned[HEAD_BOWED].pitch > math.radians(15)


def test_mirrored_portrait_flips_yaw(portraits, aligned):
    turned = [name for name, result in aligned.items() if abs(result.yaw) > math.radians(6)]
    assert len(turned) >= 8
    for name in turned:
        mirrored = align_face(portraits[name].transpose(Image.Transpose.FLIP_LEFT_RIGHT))
        yaw = aligned[name].yaw
        assert mirrored.yaw * yaw < 0, name
        assert abs(mirrored.yaw + yaw) < math.radians(5), (
            name,
            math.degrees(yaw),
            math.degrees(mirrored.yaw),
        )
        assert abs(mirrored.pitch - aligned[name].pitch) < math.radians(5), name


# ---------------------------------------------------------------- `ip2n align`


def test_align_command_writes_crop_and_json(tmp_path, portraits, aligned, capsys):
    source = tmp_path / "photo.jpg"
    canvas = place(
        background((900, 700), noisy=False), portraits["00080_01"], similarity(0.9, 12.0, (450, 330))
    )
    canvas.save(source, quality=95)
    out = tmp_path / "out" / "aligned.png"
    assert cli.main(["align", str(source), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert sorted(path.name for path in out.parent.iterdir()) == ["aligned.json", "aligned.png"]
    with Image.open(out) as crop:
        assert crop.size == (SIZE, SIZE) and crop.mode == "RGB"
    record = json.loads(out.with_suffix(".json").read_text())
    assert len(record["camera"]) == 25
    torch.testing.assert_close(
        torch.tensor(record["camera"]), camera_labels(record["yaw"], record["pitch"])[0], rtol=0, atol=1e-7
    )
    assert math.isclose(record["yaw_degrees"], math.degrees(record["yaw"]))
    assert np.asarray(record["landmarks"]).shape == (68, 2)
    assert record["source_size"] == [900, 700] and record["message"] is None
    transform = np.asarray(record["transform"])
    assert corner_error(transform @ similarity(0.9, 12.0, (450, 330)), aligned["00080_01"].transform) < 8


def test_align_command_reports_several_faces(tmp_path, portraits, capsys):
    canvas = background((900, 520), noisy=False)
    place(canvas, portraits["00069_01"], similarity(480 / SIZE, 0.0, (250, 260)))
    place(canvas, portraits["00085_01"], similarity(300 / SIZE, 0.0, (700, 260)))
    source = tmp_path / "group.png"
    canvas.save(source)
    out = tmp_path / "group_aligned.png"
    assert cli.main(["align", str(source), "-o", str(out)]) == 0
    assert "note: 2 faces found; used the largest" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["message"].startswith("2 faces found")


@pytest.mark.parametrize("problem", ["no face", "not an image", "truncated", "missing", "bad suffix"])
def test_align_command_fails_cleanly(tmp_path, portraits, capsys, problem):
    source = tmp_path / "input.jpg"
    out_name = "aligned.json" if problem == "bad suffix" else "aligned.png"
    if problem in ("no face", "bad suffix"):
        background((320, 240), noisy=False).save(source)
        expected = "no face found in input.jpg" if problem == "no face" else "must name an image file"
    elif problem == "not an image":
        source.write_text("hello")
        expected = "cannot read .*input.jpg as an image"
    elif problem == "truncated":
        buffer = io.BytesIO()
        portraits["00002_01"].save(buffer, format="JPEG")
        source.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        expected = "cannot read .*input.jpg as an image .*truncated"
    else:
        expected = "image not found"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert cli.main(["align", str(source), "-o", str(out_dir / out_name)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("ip2n align: error: ")
    assert len(stderr.strip().splitlines()) == 1
    assert re.search(expected, stderr), stderr
    assert list(out_dir.iterdir()) == []
