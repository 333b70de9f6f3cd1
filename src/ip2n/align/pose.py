"""Head pose from 68 landmarks → the camera's yaw and pitch → EG3D's 25-number camera label.

The landmarks are fitted to the 3-D mean face of landmarks.py with a weak-perspective camera
(rotation, scale, shift; EG3D's 18.8° field of view is close enough to orthographic). The rotation
gives the direction from the face to the camera, which is exactly what EG3D's look-at cameras
describe: `yaw` is that direction's azimuth and `pitch` its look-at parameter, in ip2n's camera
convention (docs/cameras.md): positive yaw = the camera sits towards the subject's left (the face
looks towards the image's left); positive pitch = the camera is below the face, looking up. The
in-plane roll drops out (the crop has already removed it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ip2n.align.landmarks import TEMPLATE_INDICES, TEMPLATE_POINTS
from ip2n.rendering.cameras import camera_labels

# Gauss–Newton from the affine start gains about a digit per step (the residuals are not zero):
# 5–12 steps to a rotation step below _TOLERANCE radians, by when the scale has settled to well
# under 1e-5 of itself. The cap only guards odd inputs.
_MAX_ITERATIONS = 20
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class WeakPerspectiveFit:
    """A rigid fit of a 3-D model to image points.

    Holds the rotation (3, 3), the scale in pixels per model unit and the RMS residual (px).
    """

    rotation: np.ndarray
    scale: float
    residual: float


@dataclass(frozen=True)
class HeadPose:
    """Camera angles (radians, ip2n convention) and the fit's RMS landmark residual in pixels."""

    yaw: float
    pitch: float
    residual: float


def estimate_head_pose(landmarks: np.ndarray) -> HeadPose:
    """68 landmarks (68, 2) in pixels (y down) → the camera's yaw and pitch relative to the face."""
    fit = fit_weak_perspective(landmarks[TEMPLATE_INDICES], TEMPLATE_POINTS)
    # The camera looks along −z of its frame, so it sits at +z: that direction in face coordinates.
    to_camera = fit.rotation[2]  # (3,) = rotationᵀ @ (0, 0, 1)
    yaw = math.atan2(to_camera[0], to_camera[2])
    # EG3D's look-at sampler puts the camera at height cos(φ) = −2·pitch/π on the unit sphere.
    pitch = -0.5 * math.pi * float(np.clip(to_camera[1], -1.0, 1.0))
    return HeadPose(yaw=yaw, pitch=pitch, residual=fit.residual)


def camera_label(pose: HeadPose) -> torch.Tensor:
    """The (25,) float32 EG3D camera label of the pose (FFHQ radius, pivot and focal length)."""
    return camera_labels(pose.yaw, pose.pitch)[0]


def fit_weak_perspective(image_points: np.ndarray, model_points: np.ndarray) -> WeakPerspectiveFit:
    """Least-squares rotation and scale of `model_points` (K, 3) onto `image_points` (K, 2) (pixels, y down).

    Model: image ≈ scale · (R · model)[:2] + shift, in a y-up image frame. R (3, 3) maps face
    coordinates (x left-of-subject, y up, z out of the face) to camera coordinates (x right, y up,
    z towards the viewer); the scale is in pixels per model unit.
    """
    observed = image_points * np.array([1.0, -1.0])  # (K, 2), y up
    rotation, scale, shift = _affine_start(observed, model_points)
    for _ in range(_MAX_ITERATIONS):
        rotated = model_points @ rotation.T  # (K, 3)
        residuals = (scale * rotated[:, :2] + shift - observed).ravel()  # (2K,)
        # Derivatives for the update R ← R · exp([ω]ₓ), scale ← scale + ds, shift ← shift + dt.
        d_rotation = -scale * np.einsum(
            "ij,kjl->kil", rotation[:2], _cross_matrices(model_points)
        )  # (K, 2, 3)
        jacobian = np.concatenate(
            (
                d_rotation,
                rotated[:, :2, None],
                np.broadcast_to(np.eye(2), (len(model_points), 2, 2)),
            ),
            axis=2,
        ).reshape(-1, 6)
        step = np.linalg.lstsq(jacobian, -residuals, rcond=None)[0]
        rotation = rotation @ _rodrigues(step[:3])
        scale += step[3]
        shift = shift + step[4:]
        if np.abs(step[:3]).max() < _TOLERANCE:
            break
    rotated = model_points @ rotation.T
    residual = float(np.sqrt(np.mean(np.sum((scale * rotated[:, :2] + shift - observed) ** 2, axis=1))))
    return WeakPerspectiveFit(rotation=rotation, scale=float(scale), residual=residual)


def _affine_start(observed: np.ndarray, model_points: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Closed-form start: the best affine camera, snapped to a scaled rotation."""
    design = np.hstack((model_points, np.ones((len(model_points), 1))))
    affine = np.linalg.lstsq(design, observed, rcond=None)[0].T  # (2, 4)
    u, singular_values, vt = np.linalg.svd(affine[:, :3], full_matrices=False)
    rows = u @ vt  # (2, 3) orthonormal rows
    rotation = np.vstack((rows, np.cross(rows[0], rows[1])))
    return rotation, float(singular_values.mean()), affine[:, 3].copy()


def _cross_matrices(vectors: np.ndarray) -> np.ndarray:
    """(K, 3) → (K, 3, 3) matrices [v]ₓ with [v]ₓ · w = v × w."""
    x, y, z = vectors.T
    zero = np.zeros_like(x)
    return np.stack(
        (np.stack((zero, -z, y), -1), np.stack((z, zero, -x), -1), np.stack((-y, x, zero), -1)), 1
    )


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) → rotation matrix (3, 3)."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-12:
        return np.eye(3)
    k = _cross_matrices((omega / angle)[None])[0]
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
