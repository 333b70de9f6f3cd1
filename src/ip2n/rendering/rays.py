"""One ray per pixel centre, from EG3D cameras (see cameras.py for the conventions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_centres(resolution: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Normalised image coordinates of the pixel centres, (R, 2) = (x, y) in (0, 1), R = resolution².

    Rays are ordered row-major: ray r is pixel (row r // resolution, column r % resolution), so a
    rendered (N, R, C) tensor becomes an image with `.permute(0, 2, 1).reshape(N, C, H, W)`.
    """
    index = torch.arange(resolution, device=device)
    # i·(1/res) + 0.5/res rather than (i + 0.5)/res: the official rounding, for bit parity.
    coords = index * (1.0 / resolution) + (0.5 / resolution)
    coords = coords.to(dtype)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack((x, y), dim=-1).reshape(-1, 2)


def ray_bundle(
    cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres of a resolution × resolution image.

    cam2world (N, 4, 4), intrinsics (N, 3, 3) normalised by the image size (cameras.py) →
    origins (N, R, 3) (the camera position, repeated) and unit directions (N, R, 3), R = resolution².
    """
    n_cameras = cam2world.shape[0]
    uv = pixel_centres(resolution, dtype=cam2world.dtype, device=cam2world.device)  # (R, 2)
    x_img, y_img = uv[None, :, 0], uv[None, :, 1]  # (1, R)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]  # (N, 1)
    cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    skew = intrinsics[:, 0, 1, None]

    # Un-project every pixel centre to the camera-space point at depth 1.
    y_cam = (y_img - cy) / fy  # (N, R)
    x_cam = (x_img - cx + cy * skew / fy - skew * y_img / fy) / fx
    ones = torch.ones_like(x_cam)
    # The points go into the product ray-major and the directions are normalised in the product's
    # transposed memory layout before being made contiguous: the official sampler's order. The norm
    # reduces differently in another layout, which moves about 7 % of the components by one ulp.
    points_cam = torch.stack((x_cam, y_cam, ones, ones), dim=-1)  # (N, R, 4) homogeneous
    camera_positions = cam2world[:, :3, 3]  # (N, 3)
    points_world = torch.bmm(cam2world, points_cam.transpose(1, 2)).transpose(1, 2)[:, :, :3]  # (N, R, 3)
    directions = F.normalize(points_world - camera_positions[:, None, :], dim=2).contiguous()
    origins = camera_positions[:, None, :].expand(n_cameras, resolution * resolution, 3).contiguous()
    return origins, directions
