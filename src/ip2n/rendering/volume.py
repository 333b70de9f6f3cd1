"""EG3D's two-pass volume renderer: stratified + importance samples, tri-plane lookup, Mip ray marching.

One render = for each ray
1. `depth_resolution` stratified depths in [ray_start, ray_end] (jittered by up to one interval),
2. decoder at those points → coarse compositing weights,
3. `depth_resolution_importance` depths drawn by inverse-CDF from the smoothed coarse weights,
4. decoder at those points, coarse and fine samples merged by depth,
5. compositing over all samples (mid-point rule) → features, depth, accumulated opacity.

Deterministic mode (what the reference fixtures use) replaces both random draws: no jitter, and
quantiles u = linspace(0, 1, n) for the importance samples.

Rays are processed in chunks so that memory stays bounded; all random numbers are drawn up front for
the whole batch, so the chunk size never changes the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ip2n.rendering.triplane import sample_triplane

# decoder(features (N, 3, M, C_plane)) → {"rgb": (N, M, C), "sigma": (N, M, 1) raw density}.
Decoder = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
# field(points (N, M, 3) world units) → {"rgb": (N, M, C), "sigma": (N, M, 1) raw density}: any
# radiance field; tri-planes + decoder are one (`triplane_field`), the synthetic heads another.
Field = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]

# Points sent through the decoder at once. Each point costs ~1.5 kB on the way (3 × 32 plane
# features, the decoder's hidden layer, outputs), so a chunk stays around 100 MB.
DEFAULT_POINTS_PER_CHUNK = 2**16

# Smoothing floor and pdf epsilon of EG3D's importance sampler.
_WEIGHT_FLOOR = 0.01
_PDF_EPS = 1e-5


@dataclass(frozen=True)
class RenderingConfig:
    """Volume-rendering settings (EG3D's `rendering_kwargs`, the parts the renderer reads).

    Depths are distances along unit ray directions, in world units.
    """

    depth_resolution: int  # stratified samples per ray
    depth_resolution_importance: int  # importance samples per ray (0: single pass)
    ray_start: float
    ray_end: float
    box_warp: float  # side of the cube the tri-planes span, centred at the origin
    clamp_mode: str = "softplus"  # density activation; EG3D's ray marcher supports only softplus
    disparity_space_sampling: bool = False  # stratify in 1/depth instead of depth
    white_back: bool = False  # composite onto white instead of black
    density_noise: float = 0.0  # std of Gaussian noise added to raw densities (training regulariser)

    def __post_init__(self) -> None:
        if self.clamp_mode != "softplus":
            raise ValueError(
                f"clamp_mode must be 'softplus' (the only mode EG3D supports), got {self.clamp_mode!r}"
            )
        if self.depth_resolution < 2:
            raise ValueError(f"depth_resolution must be at least 2, got {self.depth_resolution}")
        if self.depth_resolution_importance < 0:
            raise ValueError(
                f"depth_resolution_importance must be >= 0, got {self.depth_resolution_importance}"
            )
        if self.depth_resolution_importance > 0 and self.depth_resolution < 4:
            raise ValueError(
                "importance sampling needs depth_resolution >= 4 (its pdf uses D − 3 interior intervals)"
            )
        if not 0 < self.ray_start < self.ray_end:
            raise ValueError(f"need 0 < ray_start < ray_end, got {self.ray_start} and {self.ray_end}")
        if self.density_noise < 0:
            raise ValueError(f"density_noise must be >= 0, got {self.density_noise}")

    @classmethod
    def from_official(cls, rendering_kwargs: Mapping[str, Any]) -> RenderingConfig:
        """Read an official EG3D `rendering_kwargs` dict (other keys, e.g. super-resolution, are ignored)."""
        ray_start, ray_end = rendering_kwargs["ray_start"], rendering_kwargs["ray_end"]
        if "auto" in (ray_start, ray_end):
            raise ValueError(
                "ray_start/ray_end 'auto' (per-ray box intersection, EG3D's ShapeNet setting) "
                "is not supported"
            )
        return cls(
            depth_resolution=int(rendering_kwargs["depth_resolution"]),
            depth_resolution_importance=int(rendering_kwargs.get("depth_resolution_importance", 0)),
            ray_start=float(ray_start),
            ray_end=float(ray_end),
            box_warp=float(rendering_kwargs["box_warp"]),
            clamp_mode=str(rendering_kwargs.get("clamp_mode", "softplus")),
            disparity_space_sampling=bool(rendering_kwargs.get("disparity_space_sampling", False)),
            white_back=bool(rendering_kwargs.get("white_back", False)),
            density_noise=float(rendering_kwargs.get("density_noise", 0.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RenderedRays(NamedTuple):
    """Renderer output; unpacks as (features, depth, weights_sum)."""

    features: torch.Tensor  # (N, R, C) composited decoder features, mapped by ·2 − 1
    depth: torch.Tensor  # (N, R, 1) expected depth, clamped to the batch's sample range
    weights_sum: torch.Tensor  # (N, R, 1) accumulated opacity in [0, 1]


class _Randomness(NamedTuple):
    """Every random number of one render, drawn before chunking (None where not used)."""

    jitter: torch.Tensor | None  # (N, R, D) in [0, 1)
    coarse_noise: torch.Tensor | None  # (N, R, D, 1) N(0, 1)
    quantiles: torch.Tensor | None  # (N, R, Ni) in [0, 1)
    fine_noise: torch.Tensor | None  # (N, R, Ni, 1) N(0, 1)


def stratified_depths(
    n_batch: int,
    n_rays: int,
    config: RenderingConfig,
    jitter: torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Coarse sample depths (N, R, D, 1), ascending along each ray.

    Evenly spaced from ray_start to ray_end (both included) — in disparity if so configured — plus
    `jitter` (N, R, D) in [0, 1) times one interval; None means no jitter. Jittered samples can pass
    ray_end by up to one interval, as in EG3D.
    """
    n_depths = config.depth_resolution
    if config.disparity_space_sampling:
        steps = torch.linspace(0, 1, n_depths, dtype=dtype, device=device).expand(n_batch, n_rays, n_depths)
        if jitter is not None:
            steps = steps + jitter * (1 / (n_depths - 1))
        depths = 1.0 / (1.0 / config.ray_start * (1.0 - steps) + 1.0 / config.ray_end * steps)
    else:
        depths = torch.linspace(config.ray_start, config.ray_end, n_depths, dtype=dtype, device=device)
        depths = depths.expand(n_batch, n_rays, n_depths)
        if jitter is not None:
            depths = depths + jitter * ((config.ray_end - config.ray_start) / (n_depths - 1))
    return depths.unsqueeze(-1).contiguous()


def interval_weights(densities: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Compositing weights of the S − 1 intervals between consecutive samples.

    densities (N, R, S, 1) raw decoder output, depths (N, R, S, 1) ascending → weights
    (N, R, S − 1, 1) in [0, 1], summing to at most 1 per ray. Each interval takes the mean raw density
    of its two ends, activated by softplus(σ − 1) (EG3D's "Mip" ray marcher).
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
    alpha = 1 - torch.exp(-densities_mid * deltas)
    # Transmittance before each interval. EG3D adds 1e-10 so the running product never reaches exactly
    # zero; kept for parity.
    passed = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2)
    return alpha * torch.cumprod(passed, dim=-2)[:, :, :-1]


class Samples(NamedTuple):
    """Decoder outputs at a set of depths along each ray (any order along the samples)."""

    depths: torch.Tensor  # (N, R, S, 1)
    colors: torch.Tensor  # (N, R, S, C) decoder features, sigmoid range ≈ [0, 1]
    densities: torch.Tensor  # (N, R, S, 1) raw decoder density


def sample_shares(weights: torch.Tensor) -> torch.Tensor:
    """Interval weights (N, R, S − 1, 1) → per-sample weights (N, R, S, 1).

    The mid-point rule Σᵢ wᵢ·(cᵢ + cᵢ₊₁)/2 equals Σₛ aₛ·cₛ with aₛ = (wₛ₋₁ + wₛ)/2 (w outside the
    ray = 0), so colours can be composited without building mid-point colours.
    """
    padded = F.pad(weights, (0, 0, 1, 1))  # (N, R, S + 1, 1)
    return (padded[:, :, :-1] + padded[:, :, 1:]) / 2


def composite(sample_sets: Sequence[Samples], config: RenderingConfig) -> RenderedRays:
    """Merge sample sets by depth and alpha-composite each ray.

    Returns features (N, R, C) mapped to ≈ [−1, 1] by ·2 − 1 (all C channels; the first 3 are the
    raw RGB image), depth (N, R, 1) — +inf where nothing was hit; clamping it to the batch's depth
    range is left to the caller — and weights_sum (N, R, 1) in [0, 1].
    """
    depths, order = torch.sort(torch.cat([s.depths for s in sample_sets], dim=-2), dim=-2, stable=True)
    densities = torch.cat([s.densities for s in sample_sets], dim=-2).gather(-2, order)
    weights = interval_weights(densities, depths)  # (N, R, S − 1, 1)
    weights_sum = weights.sum(dim=2)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    depth = torch.nan_to_num((weights * depths_mid).sum(dim=2) / weights_sum, nan=float("inf"))

    # Colours are the largest tensors here (C channels per sample): rather than gathering them into
    # depth order, scatter the 1-channel per-sample weights back to each set's own order.
    shares = torch.zeros_like(depths).scatter_(-2, order, sample_shares(weights))  # (N, R, S, 1)
    shares = shares.split([s.depths.shape[-2] for s in sample_sets], dim=-2)
    features = sum(torch.matmul(share.transpose(-1, -2), s.colors) for share, s in zip(shares, sample_sets))
    assert isinstance(features, torch.Tensor)  # there is at least one sample set
    features = features.squeeze(-2)  # (N, R, C)
    if config.white_back:
        features = features + 1 - weights_sum
    return RenderedRays(features * 2 - 1, depth, weights_sum)


def sample_pdf(edges: torch.Tensor, weights: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-constant pdf.

    edges (B, K + 1) ascending bin edges, weights (B, K) ≥ 0 (1e-5 is added to each), quantiles
    (B, n) in [0, 1] → samples (B, n) inside [edges[:, 0], edges[:, K]].
    """
    n_bins = weights.shape[-1]
    pdf = weights + _PDF_EPS
    pdf = pdf / pdf.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # (B, K + 1)
    above = torch.searchsorted(cdf, quantiles, right=True)
    below = (above - 1).clamp_min(0)
    above = above.clamp_max(n_bins)
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    edge_below, edge_above = edges.gather(1, below), edges.gather(1, above)
    span = cdf_above - cdf_below
    span = torch.where(span < _PDF_EPS, torch.ones_like(span), span)
    return edge_below + (quantiles - cdf_below) / span * (edge_above - edge_below)


@torch.no_grad()
def importance_depths(
    depths: torch.Tensor, weights: torch.Tensor, n_importance: int, quantiles: torch.Tensor | None = None
) -> torch.Tensor:
    """Fine sample depths (N, R, Ni, 1) (unsorted) drawn where the coarse weights are large.

    depths (N, R, D, 1) coarse depths, weights (N, R, D − 1, 1) their interval weights, quantiles
    (N, R, Ni) in [0, 1) or None for the deterministic u = linspace(0, 1, Ni) on every ray.
    The weights are smoothed (max over neighbours, then mean of neighbours) and floored at 0.01; the
    pdf uses the D − 3 interior ones over the bins between the first D − 2 interval mid-points.
    """
    n_batch, n_rays, n_depths, _ = depths.shape
    depths = depths.reshape(n_batch * n_rays, n_depths)
    weights = weights.reshape(n_batch * n_rays, 1, n_depths - 1)
    weights = F.max_pool1d(weights, 2, 1, padding=1)  # (B, 1, D)
    weights = F.avg_pool1d(weights, 2, 1).squeeze(1) + _WEIGHT_FLOOR  # (B, D − 1)
    midpoints = (depths[:, :-1] + depths[:, 1:]) / 2  # (B, D − 1)
    if quantiles is None:
        quantiles = torch.linspace(0, 1, n_importance, dtype=depths.dtype, device=depths.device)
        quantiles = quantiles.expand(n_batch * n_rays, n_importance)
    quantiles = quantiles.reshape(n_batch * n_rays, n_importance).contiguous()
    samples = sample_pdf(midpoints[:, : n_depths - 2], weights[:, 1:-1], quantiles)
    return samples.reshape(n_batch, n_rays, n_importance, 1)


def triplane_field(planes: torch.Tensor, decoder: Decoder, box_warp: float) -> Field:
    """The radiance field of tri-planes (N, 3, C_plane, H, W) read through `decoder`."""
    return lambda points: decoder(sample_triplane(planes, points, box_warp))


def _decode_samples(
    field: Field,
    origins: torch.Tensor,
    directions: torch.Tensor,
    depths: torch.Tensor,
    config: RenderingConfig,
    noise: torch.Tensor | None,
) -> Samples:
    """Decoder outputs at origin + depth·direction for depths (N, R, S, 1), plus density noise if given."""
    n_batch, n_rays, n_samples, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(n_batch, -1, 3)
    out = field(points)
    colors = out["rgb"].reshape(n_batch, n_rays, n_samples, -1)
    densities = out["sigma"].reshape(n_batch, n_rays, n_samples, 1)
    if noise is not None:
        densities = densities + noise * config.density_noise
    return Samples(depths, colors, densities)


def _draw_randomness(
    n_batch: int,
    n_rays: int,
    config: RenderingConfig,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> _Randomness:
    """All random numbers of a render, in EG3D's draw order (jitter, coarse noise, quantiles, fine noise)."""
    shape = (n_batch, n_rays)
    d, ni = config.depth_resolution, config.depth_resolution_importance
    kwargs: dict[str, Any] = dict(generator=generator, dtype=dtype, device=device)
    noisy = config.density_noise > 0
    jitter = torch.rand(*shape, d, **kwargs)
    coarse_noise = torch.randn(*shape, d, 1, **kwargs) if noisy else None
    quantiles = torch.rand(*shape, ni, **kwargs) if ni > 0 else None
    fine_noise = torch.randn(*shape, ni, 1, **kwargs) if noisy and ni > 0 else None
    return _Randomness(jitter, coarse_noise, quantiles, fine_noise)


def _chunk(tensor: torch.Tensor | None, rays: slice) -> torch.Tensor | None:
    return None if tensor is None else tensor[:, rays]


def _render_chunk(
    field: Field,
    origins: torch.Tensor,
    directions: torch.Tensor,
    config: RenderingConfig,
    randomness: _Randomness,
) -> tuple[RenderedRays, torch.Tensor, torch.Tensor]:
    """Both passes for a slice of rays → unclamped RenderedRays, smallest and largest sample depth."""
    n_batch, n_rays, _ = origins.shape
    depths = stratified_depths(
        n_batch, n_rays, config, randomness.jitter, dtype=origins.dtype, device=origins.device
    )
    sample_sets = [_decode_samples(field, origins, directions, depths, config, randomness.coarse_noise)]
    if config.depth_resolution_importance > 0:
        with torch.no_grad():  # sample placement is not differentiated, as in EG3D
            coarse_weights = interval_weights(sample_sets[0].densities, depths)
        fine_depths = importance_depths(
            depths, coarse_weights, config.depth_resolution_importance, randomness.quantiles
        )
        sample_sets.append(
            _decode_samples(field, origins, directions, fine_depths, config, randomness.fine_noise)
        )
    all_depths = [s.depths for s in sample_sets]
    low = torch.stack([d.min() for d in all_depths]).min()
    high = torch.stack([d.max() for d in all_depths]).max()
    return composite(sample_sets, config), low, high


def render_rays(
    planes: torch.Tensor,
    decoder: Decoder,
    ray_origins: torch.Tensor,
    ray_directions: torch.Tensor,
    config: RenderingConfig,
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    points_per_chunk: int = DEFAULT_POINTS_PER_CHUNK,
) -> RenderedRays:
    """Volume-render tri-plane features along rays.

    planes (N, 3, C_plane, H, W), ray_origins and unit ray_directions (N, R, 3) (rays.ray_bundle) →
    RenderedRays(features (N, R, C) in ≈ [−1, 1], depth (N, R, 1), weights_sum (N, R, 1) in [0, 1]).
    Everything else as in `render_field`.
    """
    if planes.shape[0] != ray_origins.shape[0]:
        raise ValueError(
            f"expected planes (N, 3, C, H, W) and rays (N, R, 3), got {tuple(planes.shape)} "
            f"and {tuple(ray_origins.shape)}"
        )
    return render_field(
        triplane_field(planes, decoder, config.box_warp),
        ray_origins,
        ray_directions,
        config,
        deterministic=deterministic,
        generator=generator,
        points_per_chunk=points_per_chunk,
    )


def render_field(
    field: Field,
    ray_origins: torch.Tensor,
    ray_directions: torch.Tensor,
    config: RenderingConfig,
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    points_per_chunk: int = DEFAULT_POINTS_PER_CHUNK,
) -> RenderedRays:
    """Volume-render any radiance field along rays.

    field(points (N, M, 3)) → {"rgb": (N, M, C) in ≈ [0, 1], "sigma": (N, M, 1) raw density};
    ray_origins and unit ray_directions (N, R, 3) (rays.ray_bundle) → RenderedRays(features (N, R, C)
    in ≈ [−1, 1], depth (N, R, 1), weights_sum (N, R, 1) in [0, 1]).
    Rays that hit nothing get features −1 (black; +1 with white_back) and the largest sample depth.

    `deterministic`: no jitter, evenly spaced importance quantiles and no density noise — the
    official renderer with its random draws patched out, as in the reference fixtures. Otherwise
    random numbers come from `generator` (None: torch's global generator; it must live on the rays'
    device). `points_per_chunk` bounds the points decoded at once; it never changes the result.
    """
    n_batch, n_rays, _ = ray_origins.shape
    if ray_directions.shape != ray_origins.shape:
        raise ValueError(
            f"expected rays (N, R, 3), got {tuple(ray_origins.shape)} and {tuple(ray_directions.shape)}"
        )
    if deterministic:
        randomness = _Randomness(None, None, None, None)
    else:
        randomness = _draw_randomness(
            n_batch, n_rays, config, generator, ray_origins.dtype, ray_origins.device
        )

    samples_per_pass = max(config.depth_resolution, config.depth_resolution_importance)
    rays_per_chunk = max(1, points_per_chunk // (n_batch * samples_per_pass))
    chunks, depth_low, depth_high = [], [], []
    for start in range(0, n_rays, rays_per_chunk):
        rays = slice(start, start + rays_per_chunk)
        chunk_randomness = _Randomness(*(_chunk(tensor, rays) for tensor in randomness))
        rendered, low, high = _render_chunk(
            field, ray_origins[:, rays], ray_directions[:, rays], config, chunk_randomness
        )
        chunks.append(rendered)
        depth_low.append(low)
        depth_high.append(high)
    features, depth, weights_sum = (torch.cat(parts, dim=1) for parts in zip(*chunks))
    # EG3D clamps to the sample-depth range of the whole batch, not of each ray.
    depth = depth.clamp(torch.stack(depth_low).min(), torch.stack(depth_high).max())
    return RenderedRays(features, depth, weights_sum)


def query_density(
    planes: torch.Tensor,
    decoder: Decoder,
    points: torch.Tensor,
    box_warp: float,
    *,
    points_per_chunk: int = DEFAULT_POINTS_PER_CHUNK,
) -> dict[str, torch.Tensor]:
    """Decoder outputs at arbitrary points (density grids, shape export).

    planes (N, 3, C_plane, H, W), points (N, M, 3) world units → {"sigma": (N, M, 1) raw density
    (before the renderer's softplus(σ − 1)), "rgb": (N, M, C) decoder features}.
    """
    per_batch = max(1, points_per_chunk // points.shape[0])
    outputs = [decoder(sample_triplane(planes, part, box_warp)) for part in points.split(per_batch, dim=1)]
    return {key: torch.cat([out[key] for out in outputs], dim=1) for key in ("sigma", "rgb")}
