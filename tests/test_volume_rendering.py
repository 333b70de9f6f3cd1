"""Tri-plane sampling and the importance volume renderer, with planes and decoders whose output is known.

The end-to-end parity with the official generator (image_raw / image_depth / feature_image) needs the
tri-plane backbone and lives with the generator tests.
"""

import json
import math

import pytest
import torch

from ip2n.rendering.cameras import camera_labels, unpack_camera_label
from ip2n.rendering.rays import ray_bundle
from ip2n.rendering.triplane import mean_over_planes, sample_triplane
from ip2n.rendering.volume import (
    RenderingConfig,
    Samples,
    composite,
    importance_depths,
    interval_weights,
    query_density,
    render_rays,
    sample_pdf,
    stratified_depths,
)

OPAQUE, EMPTY = 1000.0, -1000.0  # raw densities: softplus(σ − 1) is huge / exactly 0


def coordinate_planes(height: int, width: int, n_batch: int = 1) -> torch.Tensor:
    """Planes (N, 3, 2, H, W) whose channels hold the normalised (u, v) of each texel centre.

    Bilinear interpolation reproduces a linear function exactly, so sampling returns the sampling
    coordinates themselves wherever |u| ≤ 1 − 1/W and |v| ≤ 1 − 1/H.
    """
    u = (2 * torch.arange(width) + 1) / width - 1
    v = (2 * torch.arange(height) + 1) / height - 1
    grid = torch.stack((u.expand(height, width), v[:, None].expand(height, width)))  # (2, H, W)
    return grid.expand(n_batch, 3, 2, height, width).clone()


class SlabDecoder(torch.nn.Module):
    """Opaque for world z < surface_z (read from coordinate planes), empty elsewhere; constant colour."""

    def __init__(self, surface_z: float | None, color: list[float], box_warp: float):
        super().__init__()
        self.surface_z, self.box_warp = surface_z, box_warp
        self.register_buffer("color", torch.tensor(color))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        n_batch, _, n_points, _ = features.shape
        z = features[:, 1, :, 1] * (self.box_warp / 2)  # plane 1 reads (x, z); channel 1 = v
        if self.surface_z is None:
            sigma = torch.full_like(z, EMPTY)
        else:
            sigma = torch.where(z < self.surface_z, OPAQUE, EMPTY)
        return {"rgb": self.color.expand(n_batch, n_points, -1), "sigma": sigma.unsqueeze(-1)}


class SmoothDecoder(torch.nn.Module):
    """A differentiable field of the plane features (gradient and reproducibility checks)."""

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = mean_over_planes(features)  # (N, M, C)
        return {"rgb": torch.sigmoid(3 * mean), "sigma": 8 * torch.cos(6 * mean[..., :1]) + 2}


def frontal_rays(resolution: int, yaw=(0.0,), pitch=(0.0,)):
    cam2world, intrinsics = unpack_camera_label(camera_labels(list(yaw), list(pitch)))
    return ray_bundle(cam2world, intrinsics, resolution)


CONFIG = RenderingConfig(
    depth_resolution=24, depth_resolution_importance=24, ray_start=2.25, ray_end=3.3, box_warp=2.0
)


# --- tri-plane sampling ---------------------------------------------------------------------------


def test_sample_triplane_reads_xy_xz_zx():
    box_warp = 0.5  # points are scaled by 2 / box_warp = 4
    planes = coordinate_planes(height=6, width=10, n_batch=2)
    planes[1] *= -1  # tell the batch elements apart
    points = torch.tensor([[[0.1, -0.05, 0.2], [-0.2, 0.15, 0.0], [0.0, 0.0, -0.1]]]).expand(2, 3, 3)
    features = sample_triplane(planes, points, box_warp)
    assert features.shape == (2, 3, 3, 2)  # (N, planes, M, C)
    x, y, z = (4 * points[0]).unbind(-1)
    expected = torch.stack((torch.stack((x, y), -1), torch.stack((x, z), -1), torch.stack((z, x), -1)))
    assert (features[0] - expected).abs().max() < 1e-6
    assert (features[1] + expected).abs().max() < 1e-6


def test_sample_triplane_extent_and_zeros_padding():
    planes = torch.ones(1, 3, 1, 6, 10) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1)
    # Scaled by 2/box_warp = 4: x = 0.25 lands exactly on the planes' edge, x = 0.3 beyond it.
    points = torch.tensor([[[0.25, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    features = sample_triplane(planes, points, box_warp=0.5)[0, :, :, 0]  # (3 planes, 3 points)
    # On the edge, half of the bilinear footprint lies in the zero padding (align_corners=False).
    assert torch.allclose(features[:, 0], torch.tensor([0.5, 1.0, 1.5]))
    assert torch.equal(features[:, 1], torch.zeros(3))
    assert torch.equal(features[:, 2], torch.tensor([1.0, 2.0, 3.0]))


def test_mean_over_planes_is_the_plane_average():
    features = sample_triplane(torch.randn(2, 3, 5, 8, 8), torch.rand(2, 7, 3) - 0.5, box_warp=1.0)
    assert torch.allclose(mean_over_planes(features), features.mean(1), atol=1e-7)


# --- configuration --------------------------------------------------------------------------------


def test_config_from_official_kwargs(fixtures_dir):
    small = json.loads((fixtures_dir / "eg3d_small" / "config.json").read_text())["init_kwargs"]
    config = RenderingConfig.from_official(small["rendering_kwargs"])
    assert config == RenderingConfig(12, 12, 2.25, 3.3, 1.0)
    manifest = json.loads((fixtures_dir / "manifests" / "eg3d_ffhq512_generator.json").read_text())
    ffhq = RenderingConfig.from_official(manifest["init_kwargs"]["rendering_kwargs"])
    assert (ffhq.depth_resolution, ffhq.depth_resolution_importance, ffhq.box_warp) == (48, 48, 1.0)
    assert (ffhq.clamp_mode, ffhq.disparity_space_sampling, ffhq.white_back) == ("softplus", False, False)
    assert ffhq.density_noise == 0.0
    with pytest.raises(ValueError, match="auto"):
        RenderingConfig.from_official({**small["rendering_kwargs"], "ray_start": "auto", "ray_end": "auto"})
    with pytest.raises(ValueError, match="softplus"):
        RenderingConfig(12, 12, 2.25, 3.3, 1.0, clamp_mode="relu")
    with pytest.raises(AttributeError):
        config.ray_start = 1.0


# --- sampling -------------------------------------------------------------------------------------


def test_stratified_depths():
    config = RenderingConfig(12, 12, 2.25, 3.3, 1.0)
    depths = stratified_depths(2, 5, config)
    assert depths.shape == (2, 5, 12, 1)
    assert torch.equal(depths[1, 3, :, 0], torch.linspace(2.25, 3.3, 12))
    jittered = stratified_depths(2, 5, config, jitter=torch.full((2, 5, 12), 0.5))
    assert torch.allclose(jittered - depths, torch.full_like(depths, 0.5 * 1.05 / 11))
    disparity = stratified_depths(
        1, 1, RenderingConfig(12, 12, 2.25, 3.3, 1.0, disparity_space_sampling=True)
    )
    assert torch.allclose(1 / disparity[0, 0, :, 0], torch.linspace(1 / 2.25, 1 / 3.3, 12))


def test_sample_pdf_uniform_is_linear():
    edges = torch.tensor([[1.0, 2.0, 3.0, 5.0]])
    weights = torch.tensor([[1.0, 1.0, 2.0]])  # density constant per unit length
    quantiles = torch.tensor([[0.0, 0.125, 0.5, 0.75, 1.0]])
    assert torch.allclose(
        sample_pdf(edges, weights, quantiles), torch.tensor([[1.0, 1.5, 3.0, 4.0, 5.0]]), atol=1e-4
    )


def test_importance_depths_uniform_weights():
    depths = stratified_depths(1, 2, CONFIG)
    weights = torch.full((1, 2, 23, 1), 0.3)
    fine = importance_depths(depths, weights, 24)
    midpoints = (depths[0, 0, :-1, 0] + depths[0, 0, 1:, 0]) / 2
    # Uniform pdf over the bins between the first D − 2 mid-points; u = linspace(0, 1) spans them.
    expected = torch.linspace(midpoints[0].item(), midpoints[21].item(), 24)
    assert fine.shape == (1, 2, 24, 1)
    assert (fine[0, 1, :, 0] - expected).abs().max() < 1e-5


def test_importance_depths_follow_the_weights():
    depths = stratified_depths(1, 1, CONFIG)
    k = 9  # all coarse weight in the interval between depths 9 and 10
    weights = torch.zeros(1, 1, 23, 1)
    weights[0, 0, k] = 1.0
    fine = importance_depths(depths, weights, 24)[0, 0, :, 0]
    midpoints = (depths[0, 0, :-1, 0] + depths[0, 0, 1:, 0]) / 2
    # Smoothing spreads the weight over three bins; EG3D's pdf bins are offset by half an interval.
    near = (fine >= midpoints[k - 2]) & (fine <= midpoints[k + 1])
    assert near.float().mean() > 0.8


# --- compositing ----------------------------------------------------------------------------------


def test_composite_by_hand_with_unsorted_sets():
    raw = {1.0: (0.5, 0.1), 2.0: (2.0, 0.4), 4.0: (3.0, 0.8)}  # depth: (raw density, colour)

    def sample_set(depths):
        shape = (1, 1, len(depths), 1)
        return Samples(
            torch.tensor(depths).view(shape),
            torch.tensor([raw[d][1] for d in depths]).view(shape),
            torch.tensor([raw[d][0] for d in depths]).view(shape),
        )

    rendered = composite([sample_set([4.0, 1.0]), sample_set([2.0])], CONFIG)
    density = [math.log1p(math.exp((0.5 + 2.0) / 2 - 1)), math.log1p(math.exp((2.0 + 3.0) / 2 - 1))]
    alpha = [1 - math.exp(-density[0] * 1.0), 1 - math.exp(-density[1] * 2.0)]
    weights = [alpha[0], alpha[1] * (1 - alpha[0])]
    color = weights[0] * (0.1 + 0.4) / 2 + weights[1] * (0.4 + 0.8) / 2
    depth = (weights[0] * 1.5 + weights[1] * 3.0) / sum(weights)
    assert abs(rendered.features.item() - (2 * color - 1)) < 1e-6
    assert abs(rendered.depth.item() - depth) < 1e-6
    assert abs(rendered.weights_sum.item() - sum(weights)) < 1e-6
    white = composite([sample_set([1.0, 2.0, 4.0])], RenderingConfig(12, 12, 2.25, 3.3, 1.0, white_back=True))
    assert abs(white.features.item() - (2 * (color + 1 - sum(weights)) - 1)) < 1e-6


def test_interval_weights_of_an_opaque_ray():
    depths = torch.linspace(1, 2, 5).view(1, 1, 5, 1)
    weights = interval_weights(torch.full((1, 1, 5, 1), OPAQUE), depths)
    assert torch.allclose(weights[0, 0, :, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]))


# --- full renders ---------------------------------------------------------------------------------


def test_empty_field_renders_transparent():
    planes = coordinate_planes(16, 16)
    origins, directions = frontal_rays(8)
    for white_back, background in ((False, -1.0), (True, 1.0)):
        config = RenderingConfig(24, 24, 2.25, 3.3, 2.0, white_back=white_back)
        decoder = SlabDecoder(None, [0.3, 0.6, 0.9], 2.0)
        out = render_rays(planes, decoder, origins, directions, config, deterministic=True)
        assert out.features.shape == (1, 64, 3) and out.depth.shape == out.weights_sum.shape == (1, 64, 1)
        assert torch.equal(out.weights_sum, torch.zeros(1, 64, 1))
        assert torch.equal(out.features, torch.full((1, 64, 3), background))
        # Nothing hit: the depth is the largest sample depth (ray_end without jitter).
        assert torch.equal(out.depth, torch.full((1, 64, 1), torch.tensor(3.3).item()))


def test_opaque_slab_at_known_depth():
    surface_z, color = -0.1, [0.2, 0.5, 0.9]
    origins, directions = frontal_rays(16, yaw=(0.0, 0.2), pitch=(0.0, -0.1))
    decoder = SlabDecoder(surface_z, color, 2.0)
    out = render_rays(coordinate_planes(32, 32, 2), decoder, origins, directions, CONFIG, deterministic=True)
    expected_depth = (surface_z - origins[..., 2:]) / directions[..., 2:]  # ray meets the plane z = surface_z
    coarse_step = (CONFIG.ray_end - CONFIG.ray_start) / (CONFIG.depth_resolution - 1)
    assert (out.depth - expected_depth).abs().max() < coarse_step / 2
    assert torch.allclose(out.weights_sum, torch.ones_like(out.weights_sum), atol=1e-5)
    assert torch.allclose(out.features, (2 * torch.tensor(color) - 1).expand_as(out.features), atol=1e-4)


def test_deterministic_mode_is_bit_reproducible():
    planes = torch.randn(2, 3, 4, 16, 16)
    origins, directions = frontal_rays(8, yaw=(0.3, -0.4), pitch=(0.1, 0.0))
    torch.manual_seed(0)
    first = render_rays(planes, SmoothDecoder(), origins, directions, CONFIG, deterministic=True)
    torch.manual_seed(1)  # the global RNG plays no part
    second = render_rays(planes, SmoothDecoder(), origins, directions, CONFIG, deterministic=True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_generator_seeds_the_jitter():
    planes = torch.randn(1, 3, 4, 16, 16)
    origins, directions = frontal_rays(8)

    def render(seed):
        generator = torch.Generator().manual_seed(seed)
        return render_rays(planes, SmoothDecoder(), origins, directions, CONFIG, generator=generator)

    first, again, other = render(7), render(7), render(8)
    deterministic = render_rays(planes, SmoothDecoder(), origins, directions, CONFIG, deterministic=True)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first.features, other.features)
    assert not torch.equal(first.features, deterministic.features)


@pytest.mark.parametrize("deterministic", [True, False])
def test_chunking_does_not_change_the_result(deterministic):
    planes = torch.randn(2, 3, 4, 16, 16)
    origins, directions = frontal_rays(6, yaw=(0.3, -0.4), pitch=(0.1, 0.0))

    def render(points_per_chunk):
        generator = torch.Generator().manual_seed(3)
        return render_rays(
            planes,
            SmoothDecoder(),
            origins,
            directions,
            CONFIG,
            deterministic=deterministic,
            generator=generator,
            points_per_chunk=points_per_chunk,
        )

    whole = render(10**9)
    for points_per_chunk in (1, 7 * 2 * 24):  # 1 ray per chunk; 7 rays per chunk (36 = 5 × 7 + 1)
        chunked = render(points_per_chunk)
        for a, b in zip(whole, chunked):
            assert (a - b).abs().max() < 1e-6


def test_depth_of_empty_rays_is_clamped_to_the_whole_batch():
    config = RenderingConfig(24, 24, 2.25, 3.3, 2.0)
    origins, directions = frontal_rays(6, yaw=(0.0, 0.5), pitch=(0.0, 0.0))
    generator = torch.Generator().manual_seed(0)
    out = render_rays(
        coordinate_planes(16, 16, 2),
        SlabDecoder(None, [0.5], 2.0),
        origins,
        directions,
        config,
        generator=generator,
        points_per_chunk=24,
    )
    # With jitter every ray has its own last sample; empty rays all get the batch-wide maximum,
    # even across chunks, and it lies beyond ray_end by less than one interval.
    assert torch.all(out.depth == out.depth.flatten()[0])
    step = (config.ray_end - config.ray_start) / (config.depth_resolution - 1)
    assert config.ray_end < out.depth.flatten()[0].item() < config.ray_end + step


def test_density_noise_uses_the_generator():
    planes = torch.randn(1, 3, 4, 16, 16)
    origins, directions = frontal_rays(4)
    noisy = RenderingConfig(24, 24, 2.25, 3.3, 2.0, density_noise=1.0)

    def render(config, seed):
        generator = torch.Generator().manual_seed(seed)
        return render_rays(planes, SmoothDecoder(), origins, directions, config, generator=generator)

    assert torch.equal(render(noisy, 0).features, render(noisy, 0).features)
    assert not torch.equal(render(noisy, 0).features, render(CONFIG, 0).features)
    # Deterministic mode has no randomness at all, density noise included.
    with_noise, without = (
        render_rays(planes, SmoothDecoder(), origins, directions, config, deterministic=True)
        for config in (noisy, CONFIG)
    )
    assert torch.equal(with_noise.features, without.features)


def test_gradients_reach_the_planes():
    planes = torch.randn(1, 3, 4, 16, 16, requires_grad=True)
    origins, directions = frontal_rays(4)
    out = render_rays(planes, SmoothDecoder(), origins, directions, CONFIG, deterministic=True)
    (out.features.sum() + out.depth.sum()).backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0


def test_query_density():
    box_warp = 2.0
    planes = coordinate_planes(16, 16, 2)
    points = (torch.rand(2, 50, 3, generator=torch.Generator().manual_seed(0)) - 0.5) * 1.6
    decoder = SlabDecoder(0.1, [0.25, 0.75], box_warp)
    out = query_density(planes, decoder, points, box_warp)
    assert out["sigma"].shape == (2, 50, 1) and out["rgb"].shape == (2, 50, 2)
    assert torch.equal(out["sigma"][..., 0], torch.where(points[..., 2] < 0.1, OPAQUE, EMPTY))
    chunked = query_density(planes, decoder, points, box_warp, points_per_chunk=14)
    assert torch.equal(chunked["sigma"], out["sigma"]) and torch.equal(chunked["rgb"], out["rgb"])
