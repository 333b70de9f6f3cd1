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

    The planes are read in channels-last layout (each plane stored (H, W, C)): the bilinear sampler
    then fetches the C features of a texel from one cache line instead of C separate planes, which
    makes it several times faster on CPU. `planes_channels_last` gives planes that layout once, so
    renders of many views do not convert them again; other layouts are converted here.
    The result is contiguous.
    """
    n_batch, n_planes, channels, height, width = planes.shape
    if n_planes != len(PLANE_AXES) or points.shape[0] != n_batch:
        raise ValueError(
            f"expected planes (N, 3, C, H, W) and points (N, M, 3), got {tuple(planes.shape)} "
            f"and {tuple(points.shape)}"
        )
    n_points = points.shape[1]
    grid = plane_coordinates(points, box_warp).to(planes.dtype)  # (N·3, 1, M, 2)
    flat_planes = planes.reshape(n_batch * n_planes, channels, height, width)
    sampled = F.grid_sample(
        flat_planes.contiguous(memory_format=torch.channels_last),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N·3, C, 1, M), stored channels-last: (N·3, 1, M, C)
    return sampled.reshape(n_batch, n_planes, channels, n_points).transpose(2, 3)


def mean_over_planes(features: torch.Tensor) -> torch.Tensor:
    """Average of `sample_triplane` output over its planes: (N, 3, M, C) → (N, M, C).

    Written as element-wise adds: torch's reduction over a short outer dimension is several times
    slower on CPU (it was the largest cost of a render).
    """
    planes = features.unbind(dim=1)
    total = planes[0] + planes[1]
    for plane in planes[2:]:
        total += plane
    return total.div_(len(planes))


def planes_channels_last(planes: torch.Tensor) -> torch.Tensor:
    """The same planes (N, 3, C, H, W), stored as (N, 3, H, W, C): the layout `sample_triplane`
    reads fastest."""
    return planes.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def sample_triplane_lattice(
    planes: torch.Tensor, axis: torch.Tensor, box_warp: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tri-plane features on the lattice axis × axis × axis, without sampling every 3-D point.

    On a regular lattice each plane only sees R² distinct (u, v) positions — the (x, y) plane gives
    the same features for every z — so a density grid needs 3·R² bilinear lookups instead of 3·R³.
    planes (1, 3, C, H, W), axis (R,) world coordinates → (f_xy (C, R_y, R_x), f_xz (C, R_z, R_x),
    f_zx (C, R_x, R_z)); the features of lattice point (x_i, y_j, z_k) are f_xy[:, j, i],
    f_xz[:, k, i] and f_zx[:, i, k], equal to `sample_triplane` at that point.
    """
    if planes.shape[0] != 1 or planes.shape[1] != len(PLANE_AXES):
        raise ValueError(f"expected the planes of one latent (1, 3, C, H, W), got {tuple(planes.shape)}")
    coordinate = (2 / box_warp) * axis.to(planes.dtype)
    v, u = torch.meshgrid(coordinate, coordinate, indexing="ij")
    grid = torch.stack([u, v], dim=-1)[None].expand(len(PLANE_AXES), -1, -1, -1)  # (3, R, R, 2): (u, v)
    sampled = F.grid_sample(
        planes[0].contiguous(memory_format=torch.channels_last),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    # Plane p indexes (u, v) = PLANE_AXES[p]: rows follow v, columns follow u.
    return sampled[0], sampled[1], sampled[2]
