"""Calibrate and measure `ip2n align` on already-aligned EG3D portraits.

    python benchmarks/align_calibration.py                      # tests/fixtures/portraits
    python benchmarks/align_calibration.py --portraits DIR --json report.json

Re-aligning an EG3D crop should give the identity transform. This script aligns every portrait,
measures how far the crop lands from the portrait's own framing (at the four corners, where a
similarity's error is largest), then fits the crop constants of `ip2n.align.crop` (anchor height
and depth, side, pitch slope) by least squares on those corners, both on all portraits and leaving
each one out in turn. The leave-one-out error is the honest figure: it is what a portrait the
constants never saw gets. The fitted constants are printed; pasting them into crop.py and running
again measures them (the refinement pass depends on the constants, so a second round may move
them a little).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import least_squares

from ip2n.align import align_face
from ip2n.align import crop as crop_module
from ip2n.align.crop import apply_transform, crop_transform
from ip2n.align.landmarks import default_detector

SIZE = crop_module.REFERENCE_SIZE
CORNERS = np.array([[0, 0], [SIZE, 0], [SIZE, SIZE], [0, SIZE]], dtype=np.float64)


def corner_offsets(transform: np.ndarray) -> np.ndarray:
    """(4, 2) displacement of the crop's corners from the identity's."""
    return apply_transform(transform, CORNERS) - CORNERS


def corner_error(transform: np.ndarray) -> float:
    return float(np.linalg.norm(corner_offsets(transform), axis=1).max())


def transform_for(landmarks: np.ndarray, params: np.ndarray) -> np.ndarray:
    anchor_y, anchor_z, side_mm, side_per_pitch = params
    return crop_transform(
        landmarks, anchor=np.array([0.0, anchor_y, anchor_z]), side_mm=side_mm, side_per_pitch=side_per_pitch
    )


def fit_constants(landmarks: list[np.ndarray], start: np.ndarray) -> np.ndarray:
    """Least-squares constants that put every portrait's crop corners on the identity's."""

    def residuals(params):
        return np.concatenate([corner_offsets(transform_for(points, params)).ravel() for points in landmarks])

    return least_squares(residuals, start).x


def main(argv: list[str] | None = None) -> int:
    default_folder = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "portraits"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portraits", type=Path, default=default_folder, help="folder of aligned 512² crops")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    paths = sorted(args.portraits.glob("*.jpg")) + sorted(args.portraits.glob("*.png"))
    detector = default_detector()
    names, landmarks, errors, scales, rotations, differences, seconds = [], [], [], [], [], [], []
    for path in paths:
        image = Image.open(path).convert("RGB")
        start = time.perf_counter()
        result = align_face(image, detector=detector)
        seconds.append(time.perf_counter() - start)
        linear = result.transform[:2, :2]
        names.append(path.stem)
        # The refined landmarks in the portrait's own pixels: what the constants are fitted on.
        landmarks.append(apply_transform(np.linalg.inv(result.transform), result.landmarks))
        errors.append(corner_error(result.transform))
        scales.append(math.sqrt(abs(np.linalg.det(linear))))
        rotations.append(math.degrees(math.atan2(linear[1, 0], linear[0, 0])))
        difference = np.abs(np.asarray(result.image, dtype=np.float64) - np.asarray(image, dtype=np.float64))
        differences.append(float(difference.mean()))

    anchor = crop_module.CROP_ANCHOR
    current = np.array([anchor[1], anchor[2], crop_module.CROP_SIDE_MM, crop_module.CROP_SIDE_PER_PITCH])
    fitted = fit_constants(landmarks, current)
    left_out = []
    for index in range(len(paths)):
        others = landmarks[:index] + landmarks[index + 1 :]
        left_out.append(corner_error(transform_for(landmarks[index], fit_constants(others, fitted))))

    scale_errors = 100 * np.abs(np.array(scales) - 1)
    rows = {
        "scale error (%)": scale_errors,
        "rotation (degrees)": np.abs(rotations),
        "largest corner displacement (px)": np.array(errors),
        "leave-one-out corner displacement (px)": np.array(left_out),
        "mean absolute pixel difference (0-255)": np.array(differences),
        "alignment time (ms)": 1000 * np.array(seconds[1:] if len(seconds) > 1 else seconds),
    }
    print(f"{len(paths)} portraits from {args.portraits}")
    print(f"{'':42s} {'mean':>7s} {'max':>7s}")
    for label, values in rows.items():
        print(f"{label:42s} {values.mean():7.2f} {values.max():7.2f}")
    print(f"{'worst portrait':42s} {names[int(np.argmax(errors))]}")
    print(
        "constants in use: anchor y, z = {:.2f}, {:.2f}; side = {:.2f} mm; side per pitch = {:.4f}".format(
            *current
        )
    )
    print(
        "fitted on all:    anchor y, z = {:.2f}, {:.2f}; side = {:.2f} mm; side per pitch = {:.4f}".format(
            *fitted
        )
    )
    refitted = [corner_error(transform_for(points, fitted)) for points in landmarks]
    print(
        f"corner displacement with the fitted constants: mean {np.mean(refitted):.2f}, "
        f"max {np.max(refitted):.2f} px"
    )
    if args.json:
        report = {
            label: {"mean": float(values.mean()), "max": float(values.max())}
            for label, values in rows.items()
        }
        report["fitted constants"] = dict(
            zip(("anchor_y", "anchor_z", "side_mm", "side_per_pitch"), fitted.tolist())
        )
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
