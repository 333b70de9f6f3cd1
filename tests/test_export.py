"""Writers: images, grids, depth maps, videos and meshes, and the atomic-write guarantee."""

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from ip2n.atomic import atomic_path
from ip2n.export.images import depth_to_pil, make_grid, save_image, to_pil, to_uint8_frames
from ip2n.export.mesh import grid_points, marching_cubes, save_mesh
from ip2n.export.video import write_video


def test_to_pil_maps_range_and_layout():
    image = torch.zeros(3, 2, 4)
    image[0] = -1.0
    image[1] = 1.0
    image[2, 0, 0] = 5.0  # out of range: clipped
    pil = to_pil(image)
    assert pil.size == (4, 2)
    array = np.asarray(pil)
    assert array[1, 3].tolist() == [0, 255, 128]
    assert array[0, 0].tolist() == [0, 255, 255]


def test_to_pil_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_pil(torch.zeros(1, 3, 4, 4))


def test_depth_near_is_bright():
    depth = torch.tensor([[2.0, 3.0]])
    array = np.asarray(depth_to_pil(depth))
    assert array[0, 0] == 255 and array[0, 1] == 0


def test_grid_layout():
    tiles = [Image.new("RGB", (10, 8), color) for color in ("red", "green", "blue")]
    grid = make_grid(tiles, columns=2, padding=2)
    assert grid.size == (22, 18)
    assert grid.getpixel((15, 3)) == (0, 128, 0)
    assert grid.getpixel((3, 12)) == (0, 0, 255)
    assert grid.getpixel((15, 12)) == (255, 255, 255)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_save_image_round_trip(tmp_path):
    image = to_pil(torch.rand(3, 16, 16) * 2 - 1)
    save_image(image, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(image))
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_write_video(tmp_path, suffix):
    frames = to_uint8_frames(torch.rand(6, 3, 32, 48) * 2 - 1)
    assert frames.shape == (6, 32, 48, 3)
    path = write_video(frames, tmp_path / f"orbit.{suffix}", fps=12)
    import imageio.v3 as iio

    read = iio.imread(path, index=None)
    assert read.shape[0] == 6 and read.shape[1:3] == (32, 48)
    assert [p.name for p in tmp_path.iterdir()] == [f"orbit.{suffix}"]


def test_write_video_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unsupported video format"):
        write_video(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "a.avi")


def _sphere_density(resolution=48, box=1.0, radius=0.3):
    points = grid_points(resolution, box)
    density = 20.0 * (1 - points.norm(dim=-1) / radius)  # > 0 inside, level 10 at r = radius / 2
    return density.reshape(resolution, resolution, resolution).numpy()


def test_grid_points_order():
    points = grid_points(3, 2.0).reshape(3, 3, 3, 3)
    assert points[0, 0, 0].tolist() == [-1.0, -1.0, -1.0]
    assert points[0, 0, 2].tolist() == [1.0, -1.0, -1.0]  # x varies fastest
    assert points[2, 0, 0].tolist() == [-1.0, -1.0, 1.0]


def test_marching_cubes_sphere_outward_and_in_world_units():
    vertices, faces = marching_cubes(_sphere_density(), box_size=1.0, level=10.0)
    radii = np.linalg.norm(vertices, axis=1)
    assert abs(radii.mean() - 0.15) < 0.01
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.volume > 0  # positive signed volume ⇔ faces point outwards
    assert abs(mesh.volume - 4 / 3 * np.pi * 0.15**3) / (4 / 3 * np.pi * 0.15**3) < 0.1


def test_marching_cubes_off_an_asymmetric_blob_keeps_axes():
    density = np.zeros((32, 32, 32), np.float32)
    density[10:20, 10:20, 25:30] = 20.0  # a slab at large x (grid is indexed z, y, x)
    vertices, _ = marching_cubes(density, box_size=1.0, level=10.0)
    assert vertices[:, 0].mean() > 0.2 and abs(vertices[:, 2].mean()) < 0.1


def test_marching_cubes_without_surface_says_what_to_do():
    with pytest.raises(ValueError, match="no surface at density level 10.*--mesh-level"):
        marching_cubes(np.zeros((8, 8, 8), np.float32), box_size=1.0, level=10.0)


@pytest.mark.parametrize("suffix", ["ply", "obj", "glb"])
def test_save_mesh_round_trip(tmp_path, suffix):
    vertices, faces = marching_cubes(_sphere_density(24), box_size=1.0, level=10.0)
    colors = np.tile(np.array([[1.0, 0.5, 0.0]]), (len(vertices), 1))
    path = save_mesh(tmp_path / f"mesh.{suffix}", vertices, faces, colors)
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.faces) == len(faces)
    assert np.allclose(np.sort(loaded.vertices[:, 0]), np.sort(vertices[:, 0]), atol=1e-5)
    if suffix == "ply":
        assert tuple(loaded.visual.vertex_colors[0, :3]) == (255, 128, 0)
