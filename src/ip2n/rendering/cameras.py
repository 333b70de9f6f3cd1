"""EG3D cameras: look-at poses on a sphere, normalised intrinsics and the 25-number camera label.

Conventions (see docs/cameras.md for pictures in words):
- World: y up, the face looks along +z, the head sits around the origin.
- Cameras are OpenCV-style: camera x = image right, camera y = image down, camera z = viewing
  direction. `cam2world` (N, 4, 4) maps camera coordinates to world coordinates; its columns are
  (right, down, forward, position).
- Poses come from EG3D's look-at sampler: angles `horizontal` and `vertical` (radians, frontal view
  = (π/2, π/2)) place the camera on a sphere of radius 2.7 centred at the world ORIGIN, and the
  camera looks at the pivot (0, 0, 0.2).
- `yaw = horizontal − π/2` (positive: camera moves to +x), `pitch = vertical − π/2` (positive:
  camera moves down, i.e. looks up at the face).
- Intrinsics are normalised by the image size: [[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]].
- Label (N, 25) = cam2world flattened row-major (16) followed by intrinsics row-major (9).

All functions compute in float32 with the same operations as the official code, so labels match
the official ones to float32 rounding (this matters for `latent_avg_camera`, which feeds the mapping
network when `w_avg` is recomputed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FFHQ_RADIUS = 2.7
FFHQ_PIVOT = (0.0, 0.0, 0.2)
# The focal length every official FFHQ label uses (≈ fov_to_intrinsics(18.837)).
FFHQ_FOCAL = 4.2647
# The pSp/PREIM3D latent_avg recipe places its camera at 3.14 / 2, not π / 2.
LATENT_AVG_ANGLE = 3.14 / 2
# EG3D's video script orbits ±0.35 rad in yaw and ±0.25 rad in pitch.
ORBIT_YAW_RANGE = 0.35
ORBIT_PITCH_RANGE = 0.25

FloatBatch = float | Sequence[float] | torch.Tensor
Device = torch.device | str | None


def _as_batch(values: FloatBatch, device: Device, offset: float = 0.0) -> torch.Tensor:
    """Scalar / sequence / tensor (+ offset, added in float64 like Python floats) → float32 (N,)."""
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1) + offset
    return values.to(device=device, dtype=torch.float32)


def _normalize(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / torch.norm(vectors, dim=-1, keepdim=True)


def cam2world_from_forward(forward: torch.Tensor, origins: torch.Tensor) -> torch.Tensor:
    """Camera pose from viewing directions (N, 3) and camera positions (N, 3) → cam2world (N, 4, 4).

    The world's +y axis fixes the roll: image "down" is as close to world −y as possible.
    """
    forward = _normalize(forward)  # (N, 3)
    world_up = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype, device=forward.device).expand_as(forward)
    right = -_normalize(torch.cross(world_up, forward, dim=-1))
    down = _normalize(torch.cross(forward, right, dim=-1))
    cam2world = torch.eye(4, dtype=forward.dtype, device=forward.device).repeat(forward.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack((right, down, forward), dim=-1)
    cam2world[:, :3, 3] = origins
    return cam2world


def lookat_cam2world(
    horizontal: FloatBatch,
    vertical: FloatBatch,
    *,
    radius: float = FFHQ_RADIUS,
    pivot: Sequence[float] = FFHQ_PIVOT,
    device: Device = None,
) -> torch.Tensor:
    """EG3D look-at poses → cam2world (N, 4, 4) float32.

    `horizontal`, `vertical`: radians, N values (or one), frontal view = (π/2, π/2). The camera sits
    on the sphere of `radius` around the world origin and looks at `pivot`.
    """
    theta = _as_batch(horizontal, device)  # (N,)
    vertical = _as_batch(vertical, device).clamp(1e-5, math.pi - 1e-5)
    if theta.shape != vertical.shape:
        raise ValueError(f"got {theta.numel()} horizontal and {vertical.numel()} vertical angles")
    # The polar angle is arccos(1 − 2v/π): uniform in v means uniform on the sphere.
    phi = torch.arccos(1 - 2 * (vertical / math.pi))
    origins = torch.stack(
        (
            radius * torch.sin(phi) * torch.cos(math.pi - theta),
            radius * torch.cos(phi),
            radius * torch.sin(phi) * torch.sin(math.pi - theta),
        ),
        dim=-1,
    )  # (N, 3)
    target = torch.tensor(pivot, dtype=torch.float32, device=origins.device)
    # Normalised here and again in cam2world_from_forward, as the official sampler does (bit parity).
    return cam2world_from_forward(_normalize(target - origins), origins)


def yaw_pitch_cam2world(
    yaw: FloatBatch,
    pitch: FloatBatch,
    *,
    radius: float = FFHQ_RADIUS,
    pivot: Sequence[float] = FFHQ_PIVOT,
    device: Device = None,
) -> torch.Tensor:
    """Poses relative to the frontal view (yaw = pitch = 0, radians) → cam2world (N, 4, 4) float32."""
    horizontal = _as_batch(yaw, device, offset=math.pi / 2)
    vertical = _as_batch(pitch, device, offset=math.pi / 2)
    return lookat_cam2world(horizontal, vertical, radius=radius, pivot=pivot, device=device)


def focal_to_intrinsics(focal: FloatBatch = FFHQ_FOCAL, *, device: Device = None) -> torch.Tensor:
    """Normalised focal length(s) → intrinsics (N, 3, 3) float32 [[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]."""
    focal = _as_batch(focal, device)  # (N,)
    intrinsics = torch.zeros(focal.shape[0], 3, 3, dtype=torch.float32, device=focal.device)
    intrinsics[:, 0, 0] = focal
    intrinsics[:, 1, 1] = focal
    intrinsics[:, :2, 2] = 0.5
    intrinsics[:, 2, 2] = 1.0
    return intrinsics


def fov_to_focal(fov_degrees: float) -> float:
    """Full field of view (degrees) → normalised focal length, with the official rounded π and √2."""
    return 1.0 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414)


def fov_to_intrinsics(fov_degrees: FloatBatch, *, device: Device = None) -> torch.Tensor:
    """Field(s) of view in degrees → intrinsics (N, 3, 3) float32 (18.837° gives f ≈ 4.2647)."""
    fovs = torch.as_tensor(fov_degrees, dtype=torch.float64).reshape(-1).tolist()
    return focal_to_intrinsics([fov_to_focal(fov) for fov in fovs], device=device)


def pack_camera_label(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """cam2world (N, 4, 4) + intrinsics (N, 3, 3) or (3, 3) → label (N, 25)."""
    intrinsics = intrinsics.expand(cam2world.shape[0], 3, 3)
    return torch.cat((cam2world.reshape(-1, 16), intrinsics.reshape(-1, 9)), dim=1)


def unpack_camera_label(label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """label (N, 25) → (cam2world (N, 4, 4), intrinsics (N, 3, 3))."""
    if label.ndim != 2 or label.shape[1] != 25:
        raise ValueError(f"camera labels must have shape (N, 25), got {tuple(label.shape)}")
    return label[:, :16].reshape(-1, 4, 4), label[:, 16:].reshape(-1, 3, 3)


def camera_labels(
    yaw: FloatBatch,
    pitch: FloatBatch,
    *,
    focal: float = FFHQ_FOCAL,
    radius: float = FFHQ_RADIUS,
    pivot: Sequence[float] = FFHQ_PIVOT,
    device: Device = None,
) -> torch.Tensor:
    """Labels (N, 25) float32 for views at (yaw, pitch) radians from the frontal view."""
    for name, angle in (("yaw", yaw), ("pitch", pitch)):
        # A NaN angle would render an all-black view without any error.
        if not bool(torch.isfinite(torch.as_tensor(angle, dtype=torch.float64)).all()):
            raise ValueError(f"camera {name} must be a finite angle, got {angle}")
    cam2world = yaw_pitch_cam2world(yaw, pitch, radius=radius, pivot=pivot, device=device)
    return pack_camera_label(cam2world, focal_to_intrinsics(focal, device=device))


def frontal_camera(*, focal: float = FFHQ_FOCAL, device: Device = None) -> torch.Tensor:
    """The frontal view's label (1, 25): mapping conditioning for W+ work and the identity-loss view."""
    return camera_labels(0.0, 0.0, focal=focal, device=device)


def latent_avg_camera(*, device: Device = None) -> torch.Tensor:
    """Label (1, 25) of the pSp/PREIM3D `latent_avg` recipe: look-at angles literally (3.14/2, 3.14/2)."""
    cam2world = lookat_cam2world(LATENT_AVG_ANGLE, LATENT_AVG_ANGLE, device=device)
    return pack_camera_label(cam2world, focal_to_intrinsics(FFHQ_FOCAL, device=device))


def orbit_angles(
    n_frames: int, yaw_range: float = ORBIT_YAW_RANGE, pitch_range: float = ORBIT_PITCH_RANGE
) -> tuple[torch.Tensor, torch.Tensor]:
    """(yaw, pitch) (n_frames,) float64 on an ellipse around the frontal view, one full turn.

    Frame k sits at phase 2πk/n: yaw = yaw_range·sin, pitch = pitch_range·cos. The end point is
    excluded so that a looping video does not repeat a frame.
    """
    if n_frames < 1:
        raise ValueError(f"an orbit needs at least one frame, got {n_frames}")
    phase = torch.arange(n_frames, dtype=torch.float64) * (2 * math.pi / n_frames)
    return yaw_range * torch.sin(phase), pitch_range * torch.cos(phase)


def orbit_cameras(
    n_frames: int,
    yaw_range: float = ORBIT_YAW_RANGE,
    pitch_range: float = ORBIT_PITCH_RANGE,
    *,
    focal: float = FFHQ_FOCAL,
    device: Device = None,
) -> torch.Tensor:
    """Labels (n_frames, 25) float32 along a smooth closed orbit (see `orbit_angles`)."""
    yaw, pitch = orbit_angles(n_frames, yaw_range, pitch_range)
    return camera_labels(yaw, pitch, focal=focal, device=device)
