"""Density grids → triangle meshes (marching cubes) → PLY / OBJ / GLB files.

Coordinates are EG3D world units: y up, the face looking along +z, the head inside the cube of side
`box_size` centred at the origin. A mesh file therefore lines up with the cameras in docs/cameras.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ip2n.atomic import atomic_path
from ip2n.defaults import DEFAULT_DENSITY_LEVEL, MESH_FORMATS


def grid_points(resolution: int, box_size: float) -> torch.Tensor:
    """Regular lattice of resolution³ points spanning [-box/2, box/2]³, (R³, 3), x fastest.

    Index order is (z, y, x) → flat, so `values.reshape(R, R, R)` is indexed [z, y, x].
    """
    if resolution < 2:
        raise ValueError(f"grid resolution must be at least 2, got {resolution}")
    axis = torch.linspace(-box_size / 2, box_size / 2, resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


def marching_cubes(
    density: np.ndarray, box_size: float, level: float = DEFAULT_DENSITY_LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of a density grid indexed [z, y, x] → (vertices (V, 3) xyz world units, faces (F, 3))."""
    from skimage.measure import marching_cubes as skimage_marching_cubes

    if density.ndim != 3 or len(set(density.shape)) != 1:
        raise ValueError(f"expected a cubic density grid, got shape {density.shape}")
    low, high = float(density.min()), float(density.max())
    if not low < level < high:
        raise ValueError(
            f"no surface at density level {level:g}: the grid's density lies in [{low:.3g}, {high:.3g}]. "
            "Choose a level inside that range (--mesh-level)."
        )
    resolution = density.shape[0]
    spacing = box_size / (resolution - 1)
    vertices_zyx, faces, _, _ = skimage_marching_cubes(density, level=level, spacing=(spacing,) * 3)
    vertices = vertices_zyx[:, ::-1] - box_size / 2  # zyx → xyz, grid origin → box centre
    # skimage's winding followed by the zyx → xyz reflection gives outward-facing triangles
    # (positive signed volume; tests/test_export.py checks it), so the faces are kept as they are.
    return np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces)


def save_mesh(
    path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray | None = None
) -> Path:
    """Write a mesh atomically; the format follows the suffix (.ply, .obj, .glb).

    `vertex_colors` are (V, 3) floats in [0, 1] or uint8.
    """
    import trimesh

    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in MESH_FORMATS:
        raise ValueError(
            f"unsupported mesh format '{path.suffix}': use one of {', '.join('.' + f for f in MESH_FORMATS)}"
        )
    if vertex_colors is not None and vertex_colors.dtype != np.uint8:
        vertex_colors = (np.clip(vertex_colors, 0, 1) * 255).round().astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=vertex_colors, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=kind)
    return path
