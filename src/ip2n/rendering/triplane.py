"""Tri-plane feature lookup: bilinear samples of three axis-aligned feature planes at 3-D points."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# World axes (u, v) that index each plane, u along the plane's width and v along its height.
# The third plane reads (z, x) rather than (y, z): a known quirk of the official plane-axis matrices
# that the released weights were trained with, so it has to stay.
PLANE_AXES = ((0, 1), (0, 2), (2, 0))


def plane_coordinates(points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Points (N, M, 3) in world units → per-plane sampling grids (N·3, 1, M, 2) in [−1, 1] inside the box.

    The cube of side `box_warp` centred at the origin maps onto the planes' full extent.
    """
    n_batch, n_points, _ = points.shape
    axes = torch.tensor(PLANE_AXES, device=points.device).reshape(-1)  # (6,)
    scaled = (2 / box_warp) * points
    grid = scaled.index_select(-1, axes).view(n_batch, n_points, len(PLANE_AXES), 2)
    return grid.transpose(1, 2).reshape(n_batch * len(PLANE_AXES), 1, n_points, 2)


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """Bilinear tri-plane features at points.

    planes (N, 3, C, H, W) (the generator's 96 channels are `.view(N, 3, 32, H, W)`: channel c is
    plane c // 32, feature c % 32), points (N, M, 3) world units → features (N, 3, M, C), plane
    order as in PLANE_AXES. Outside the box the features fade to zero (zeros padding; pixel centres
    at (2i + 1)/size − 1, i.e. align_corners=False).

    The result is a strided view of the sampler's (N·3, C, 1, M) output, not a contiguous tensor:
    decoders reduce over the planes first, which reads the view directly and saves one copy of the
    largest tensor of a render. Use `.reshape`, not `.view`, on it.
    """
    n_batch, n_planes, channels, height, width = planes.shape
    if n_planes != len(PLANE_AXES) or points.shape[0] != n_batch:
        raise ValueError(
            f"expected planes (N, 3, C, H, W) and points (N, M, 3), got {tuple(planes.shape)} and {tuple(points.shape)}"
        )
    n_points = points.shape[1]
    grid = plane_coordinates(points, box_warp).to(planes.dtype)  # (N·3, 1, M, 2)
    sampled = F.grid_sample(
        planes.reshape(n_batch * n_planes, channels, height, width),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N·3, C, 1, M)
    return sampled.reshape(n_batch, n_planes, channels, n_points).transpose(2, 3)


def mean_over_planes(features: torch.Tensor) -> torch.Tensor:
    """Average of `sample_triplane` output over its planes: (N, 3, M, C) → (N, M, C).

    Same values as `features.mean(1)`, but reduced in the sampler's memory layout, which is several
    times faster on CPU than reducing the strided (N, 3, M, C) view. The result is a strided view too.
    """
    return features.transpose(2, 3).mean(1).transpose(1, 2)
