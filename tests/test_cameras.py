"""Cameras and rays against the official camera_utils / RaySampler outputs (fixtures/eg3d_small)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from ip2n.rendering.cameras import (
    FFHQ_FOCAL,
    FFHQ_PIVOT,
    FFHQ_RADIUS,
    camera_labels,
    focal_to_intrinsics,
    fov_to_intrinsics,
    frontal_camera,
    latent_avg_camera,
    lookat_cam2world,
    orbit_angles,
    orbit_cameras,
    pack_camera_label,
    unpack_camera_label,
    yaw_pitch_cam2world,
)
from ip2n.rendering.rays import ray_bundle

# The implementation repeats the official float32 operations, so agreement is expected to be exact;
# the contract is the project-wide 1e-4.
TOL = 1e-4


@pytest.fixture(scope="module")
def cameras_json(fixtures_dir):
    return json.loads((fixtures_dir / "eg3d_small" / "cameras.json").read_text())


@pytest.fixture(scope="module")
def eg3d_io(fixtures_dir):
    return load_file(fixtures_dir / "eg3d_small" / "io.safetensors")


def max_err(actual: torch.Tensor, expected) -> float:
    return (actual - torch.as_tensor(expected, dtype=actual.dtype)).abs().max().item()


def test_lookat_matches_official_angles(cameras_json):
    cases = cameras_json["lookat"]
    cam2world = lookat_cam2world([c["horizontal_mean"] for c in cases], [c["vertical_mean"] for c in cases])
    assert cam2world.shape == (len(cases), 4, 4) and cam2world.dtype == torch.float32
    assert max_err(cam2world, [c["cam2world"] for c in cases]) < TOL


def test_yaw_pitch_labels_match_official(cameras_json):
    cases = cameras_json["lookat"]
    yaw, pitch = [c["yaw"] for c in cases], [c["pitch"] for c in cases]
    assert max_err(yaw_pitch_cam2world(yaw, pitch), [c["cam2world"] for c in cases]) < TOL
    labels = camera_labels(yaw, pitch)
    assert labels.shape == (len(cases), 25) and labels.dtype == torch.float32
    assert max_err(labels, [c["c25"] for c in cases]) < TOL


def test_single_view_and_fixture_generator_cameras(cameras_json, eg3d_io):
    first = cameras_json["lookat"][1]
    assert max_err(camera_labels(first["yaw"], first["pitch"]), [first["c25"]]) < TOL
    # The cameras the eg3d_small outputs were rendered with: (yaw, pitch) = (0.3, −0.1), (−0.5, 0.2).
    assert max_err(camera_labels([0.3, -0.5], [-0.1, 0.2]), eg3d_io["c"]) < TOL


def test_frontal_camera(cameras_json):
    frontal = cameras_json["lookat"][0]
    assert (frontal["yaw"], frontal["pitch"]) == (0.0, 0.0)
    label = frontal_camera()
    assert label.shape == (1, 25)
    assert max_err(label, [frontal["c25"]]) < TOL
    cam2world, _ = unpack_camera_label(label)
    # Camera on the +z axis looking down −z, image right = +x, image down = −y.
    assert torch.allclose(cam2world[0, :3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6)
    assert torch.allclose(cam2world[0, :3, 3], torch.tensor([0.0, 0.0, FFHQ_RADIUS]), atol=1e-6)


def test_latent_avg_camera_uses_literal_3_14(cameras_json, eg3d_io):
    label = latent_avg_camera()
    assert max_err(label, eg3d_io["latent_avg_camera"]) < TOL
    assert max_err(label[:, :16].reshape(4, 4), cameras_json["psp_latent_avg_camera"]["cam2world"]) < TOL
    # 3.14/2 is 8e-4 rad off frontal: visibly different from the π/2 camera.
    assert (label - frontal_camera()).abs().max() > 1e-3


@pytest.mark.parametrize("fov", ["18.837", "12.0", "30.0"])
def test_fov_to_intrinsics(cameras_json, fov):
    intrinsics = fov_to_intrinsics(float(fov))
    assert intrinsics.shape == (1, 3, 3) and intrinsics.dtype == torch.float32
    assert max_err(intrinsics[0], cameras_json["FOV_to_intrinsics"][fov]) < TOL


def test_default_focal_is_the_official_constant(cameras_json):
    assert cameras_json["focal_length_hardcoded"] == FFHQ_FOCAL
    assert cameras_json["radius"] == FFHQ_RADIUS and tuple(cameras_json["pivot"]) == FFHQ_PIVOT
    assert abs(fov_to_intrinsics(18.837)[0, 0, 0].item() - FFHQ_FOCAL) < 2e-3
    assert torch.equal(
        focal_to_intrinsics()[0], torch.tensor([[FFHQ_FOCAL, 0, 0.5], [0, FFHQ_FOCAL, 0.5], [0, 0, 1]])
    )


def test_pack_unpack_round_trip(cameras_json):
    labels = torch.tensor([c["c25"] for c in cameras_json["lookat"]])
    cam2world, intrinsics = unpack_camera_label(labels)
    assert cam2world.shape == (8, 4, 4) and intrinsics.shape == (8, 3, 3)
    assert torch.equal(cam2world[3], torch.tensor(cameras_json["lookat"][3]["cam2world"]))
    assert torch.equal(pack_camera_label(cam2world, intrinsics), labels)
    # A single (3, 3) intrinsics matrix is shared by all poses.
    assert torch.equal(pack_camera_label(cam2world, intrinsics[0]), labels)
    with pytest.raises(ValueError, match=r"\(N, 25\)"):
        unpack_camera_label(labels[:, :16])


def test_cameras_sit_on_the_sphere_and_look_at_the_pivot():
    yaw = torch.tensor([-1.2, -0.6, -0.2, 0.3, 0.7, 1.2, 0.1])
    pitch = torch.tensor([-0.5, 0.3, -0.1, 0.1, -0.3, 0.5, 0.05])
    cam2world = yaw_pitch_cam2world(yaw, pitch)
    rotation, position = cam2world[:, :3, :3], cam2world[:, :3, 3]
    assert torch.allclose(position.norm(dim=-1), torch.full((7,), FFHQ_RADIUS), atol=1e-5)
    to_pivot = torch.tensor(FFHQ_PIVOT) - position
    assert torch.allclose(rotation[:, :, 2], to_pivot / to_pivot.norm(dim=-1, keepdim=True), atol=1e-6)
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, torch.eye(3).expand(7, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(7), atol=1e-5)
    # Positive yaw moves the camera to +x; positive pitch moves it below the face (−y).
    assert torch.all(torch.sign(position[:, 0]) == torch.sign(yaw))
    assert torch.all(torch.sign(position[:, 1]) == -torch.sign(pitch))


def test_orbit_is_a_smooth_closed_loop():
    n_frames, yaw_range, pitch_range = 60, 0.35, 0.25
    labels = orbit_cameras(n_frames, yaw_range, pitch_range)
    assert labels.shape == (n_frames, 25) and labels.dtype == torch.float32
    yaw, pitch = orbit_angles(n_frames, yaw_range, pitch_range)
    assert torch.allclose(labels, camera_labels(yaw, pitch))
    assert yaw.abs().max() <= yaw_range + 1e-12 and pitch.abs().max() <= pitch_range + 1e-12
    assert math.isclose(yaw.max().item(), yaw_range, rel_tol=1e-12)
    # Smooth and closed: the camera's step length changes by a few per cent at most from one frame to
    # the next, including across the wrap-around from the last frame to the first.
    positions = labels[:, [3, 7, 11]]
    steps = (positions.roll(-1, dims=0) - positions).norm(dim=-1)
    assert ((steps.roll(-1) - steps).abs() / steps).max() < 0.1
    assert torch.unique(labels, dim=0).shape[0] == n_frames  # no repeated end frame


def test_ray_bundle_matches_official_ray_sampler(eg3d_io):
    cam2world, intrinsics = unpack_camera_label(eg3d_io["c"])
    origins, directions = ray_bundle(cam2world, intrinsics, 32)
    assert origins.shape == directions.shape == (2, 1024, 3)
    # Bit for bit: the directions are normalised in the official memory order (rays.py).
    assert torch.equal(origins, eg3d_io["ray_origins"])
    assert torch.equal(directions, eg3d_io["ray_directions"])
    assert directions.is_contiguous()


def test_ray_bundle_geometry():
    cam2world, intrinsics = unpack_camera_label(frontal_camera())
    resolution = 4
    origins, directions = ray_bundle(cam2world, intrinsics, resolution)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(1, 16), atol=1e-6)
    assert torch.allclose(origins, cam2world[:, None, :3, 3].expand(1, 16, 3))
    # Rays are row-major over pixel centres: ray 1 is one column right of ray 0 (+x in the frontal
    # view), ray 4 one row down (−y); pixel centre x = 0.625 ↦ (0.625 − 0.5)/f on the depth-1 plane.
    grid = directions[0].reshape(resolution, resolution, 3)
    assert torch.all(grid[:, 1:, 0] > grid[:, :-1, 0]) and torch.all(grid[1:, :, 1] < grid[:-1, :, 1])
    expected = torch.tensor([0.125 / FFHQ_FOCAL, -0.125 / FFHQ_FOCAL, -1.0])
    assert torch.allclose(grid[2, 2], expected / expected.norm(), atol=1e-6)
