"""Landmarks → the EG3D/FFHQ crop: a similarity transform (scale, rotation, shift) and the warp.

EG3D crops FFHQ by fitting five landmarks (eye centres, nose tip, mouth corners) to a 3-D mean face
with an affine camera, then cutting a square whose centre is where a fixed point of that 3-D face
lands and whose side is a fixed multiple of the fitted scale. Using the 3-D fit instead of 2-D
distances keeps the crop steady when the head turns. ip2n takes the centre from that affine fit but
the scale from a rigid fit (a scaled rotation) of the same five points, with a small correction for
the head's pitch: with dlib's landmarks that predicts EG3D's crop size better (docs/alignment.md).
The roll is taken from the eyes and mouth as FFHQ's alignment does, so faces come out upright (the
shared portraits have |roll| < 0.7° by that rule). The constants below were calibrated so that
re-aligning already-aligned EG3D crops gives the identity (benchmarks/align_calibration.py).

Coordinates: pixels, top-left corner of the image at (0, 0) (see landmarks.py). Transforms are
(3, 3) float64 matrices acting on homogeneous column vectors (x, y, 1): input → crop.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ip2n.align.landmarks import five_point_template, five_points
from ip2n.align.pose import estimate_head_pose, fit_weak_perspective

# The crop size the constants refer to; other output sizes scale the same crop.
REFERENCE_SIZE = 512
# The 3-D point (template millimetres, see landmarks.py) that lands on the crop centre.
CROP_ANCHOR = np.array([0.0, 8.38, -53.66])
# Crop side = this many template millimetres at the rigid fit's scale, for a face seen at zero pitch ...
CROP_SIDE_MM = 239.56
# ... times exp(CROP_SIDE_PER_PITCH · pitch) (pitch in radians, ip2n convention: positive = seen from
# below). Measured, not derived: without it faces seen from below come out ~1.4 % too large per 15°.
CROP_SIDE_PER_PITCH = -0.0518
# Where dlib's detector puts the face box in an aligned REFERENCE_SIZE crop (left, top, right,
# bottom): the landmark refinement on the aligned crop starts from it instead of detecting again.
ALIGNED_FACE_BOX = (98.0, 99.0, 420.0, 421.0)


def crop_transform(
    landmarks: np.ndarray,
    output_size: int = REFERENCE_SIZE,
    *,
    anchor: np.ndarray = CROP_ANCHOR,
    side_mm: float = CROP_SIDE_MM,
    side_per_pitch: float = CROP_SIDE_PER_PITCH,
) -> np.ndarray:
    """68 landmarks (68, 2) in input pixels → the (3, 3) similarity mapping the input onto the crop.

    `anchor`, `side_mm`, `side_per_pitch` default to the calibrated constants; they are arguments only
    so that the calibration can try others.
    """
    points = five_points(landmarks)  # (5, 2)
    template = five_point_template()  # (5, 3)
    # Centre: affine camera, points ≈ template @ A[:, :3].T + A[:, 3], as in EG3D's recipe.
    design = np.hstack((template, np.ones((5, 1))))  # (5, 4)
    affine = np.linalg.lstsq(design, points, rcond=None)[0].T  # (2, 4)
    centre = affine[:, :3] @ anchor + affine[:, 3]  # (2,)
    # Scale: a rigid fit's pixels per mm. The affine camera's row norms also absorb how far this
    # face's proportions are from the mean face's; with dlib's points the rigid scale predicts
    # EG3D's crop size better.
    pixels_per_mm = fit_weak_perspective(points, template).scale
    pitch = estimate_head_pose(landmarks).pitch
    side = side_mm * pixels_per_mm * math.exp(side_per_pitch * pitch)
    return similarity_matrix(centre, side, roll_angle(landmarks), output_size)


def roll_angle(landmarks: np.ndarray) -> float:
    """In-plane rotation of the face (radians, clockwise on screen) from FFHQ's eye/mouth rule.

    The horizontal axis is eye-to-eye minus eye-to-mouth turned by 90°: using both keeps it steady
    when one of the two is short (a turned head, a tilted chin).
    """
    points = five_points(landmarks)
    eye_to_eye = points[1] - points[0]
    eye_to_mouth = 0.5 * (points[3] + points[4]) - 0.5 * (points[0] + points[1])
    axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    return float(np.arctan2(axis[1], axis[0]))


def similarity_matrix(centre: np.ndarray, side: float, angle: float, output_size: int) -> np.ndarray:
    """(3, 3) input → crop: the square of `side` px centred at `centre`, turned by `angle`, scaled to
    output_size²."""
    zoom = output_size / side
    cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
    linear = np.array([[cos, sin], [-sin, cos]])  # rotate by −angle, then zoom
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = 0.5 * output_size - linear @ centre
    return matrix


def scale_matrix(factor: float) -> np.ndarray:
    """(3, 3) uniform scaling about the origin (a crop of one size → the same crop at another size)."""
    return np.diag([factor, factor, 1.0])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (K, 2) points with a (3, 3) transform."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def warp_image(
    image: Image.Image, matrix: np.ndarray, output_size: int, fill: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    """Resample an RGB image into the output_size² crop given by `matrix` (input → crop).

    Areas outside the photo are filled with `fill` (black, as in EG3D's crops). When the crop
    shrinks the photo, the covered region is first reduced with a Lanczos filter, because PIL's
    affine resampling does not low-pass and would alias.
    """
    inverse = np.linalg.inv(matrix)  # crop → input
    input_pixels_per_output_pixel = float(np.sqrt(abs(np.linalg.det(inverse[:2, :2]))))
    if input_pixels_per_output_pixel > 1.25:
        corners = np.array(
            [[0, 0], [output_size, 0], [0, output_size], [output_size, output_size]], dtype=np.float64
        )
        covered = apply_transform(inverse, corners)  # (4, 2) in input pixels
        left, top = np.clip(np.floor(covered.min(axis=0)) - 2, 0, image.size)
        right, bottom = np.clip(np.ceil(covered.max(axis=0)) + 2, 0, image.size)
        if right > left and bottom > top:
            reduced_size = (
                max(1, round((right - left) / input_pixels_per_output_pixel)),
                max(1, round((bottom - top) / input_pixels_per_output_pixel)),
            )
            image = image.resize(reduced_size, Image.Resampling.LANCZOS, box=(left, top, right, bottom))
            # reduced pixels → input pixels, composed in front of the crop → input map.
            to_input = np.array(
                [
                    [(right - left) / reduced_size[0], 0.0, left],
                    [0.0, (bottom - top) / reduced_size[1], top],
                    [0.0, 0.0, 1.0],
                ]
            )
            inverse = np.linalg.inv(to_input) @ inverse
    return image.transform(
        (output_size, output_size),
        Image.Transform.AFFINE,
        tuple(inverse[:2].ravel()),
        resample=Image.Resampling.BICUBIC,
        fillcolor=fill,
    )
