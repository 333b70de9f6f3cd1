"""The synthetic-heads generator: the EG3D generator's interface over the procedural head world.

Code written for `TriPlaneGenerator` (LatentScene, `compute_latent_avg`, the edit pipeline) works
with it unchanged:
- `mapping(z, c, ψ, cutoff)` samples a random head's latent; `backbone.mapping.w_avg` is the mean
  latent of the world's prior (exact: the latent code is linear in the coordinates).
- `synthesize_planes(ws)` decodes the latent into head coordinates (N, K) — the "planes" of this
  generator: cheap, and everything a render needs.
- `render_planes(coordinates, ws, cameras)` volume-renders with the shared renderer
  (`render_field`) at the neural rendering resolution (default 64²), composites the backdrop, and
  resizes bilinearly (antialiased) to `img_resolution` (default 128²) — the cheap stand-in for
  EG3D's super-resolution network.
- `query_planes` / `density_lattice` give density for meshes.

Tensor contracts: ws (N, 14, w_dim); cameras (N, 25) (docs/cameras.md); images in [−1, 1], NCHW;
depth in world units along the ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.limits import config_from_dict
from ip2n.rendering.cameras import unpack_camera_label
from ip2n.rendering.rays import ray_bundle
from ip2n.rendering.volume import DEFAULT_POINTS_PER_CHUNK, RenderingConfig, render_field
from ip2n.synthetic.world.attributes import (
    ATTRIBUTE_NAMES,
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    CATEGORICAL_PRIOR,
    IDENTITY_CLIP,
    IDENTITY_PARAMS,
    PRIOR,
    attributes_from_uniforms,
    normal_cdf,
)
from ip2n.synthetic.world.head import background_color, head_field
from ip2n.synthetic.world.latent import (
    COORDINATE_INDEX,
    COORDINATES,
    NUM_ROWS,
    coordinates_from,
    decode,
    encode,
    row_bases,
)

# A head point costs a few kB through the field (about 30 shape channels and their normals).
_POINTS_PER_CHUNK = DEFAULT_POINTS_PER_CHUNK // 2
# Every head lies within 0.4 of the origin and cameras sit 2.7 from it: a tighter ray range than
# EG3D's FFHQ [2.25, 3.3] spends the samples where the head is.
RAY_START, RAY_END = 2.3, 3.05


@dataclass(frozen=True)
class SyntheticHeadsConfig:
    """Sizes and rendering settings of the synthetic-heads generator (presets: `synthetic_preset`)."""

    w_dim: int = 64  # channels per style vector; a power of two keeps the DCT bases distinct
    z_dim: int = 64  # ≥ identity values + attributes; extra dimensions are ignored
    img_resolution: int = 128
    neural_rendering_resolution: int = 64
    rendering: RenderingConfig = field(
        default_factory=lambda: RenderingConfig(
            depth_resolution=24,
            depth_resolution_importance=24,
            ray_start=RAY_START,
            ray_end=RAY_END,
            box_warp=1.0,
        )
    )

    def __post_init__(self) -> None:
        needed = len(IDENTITY_PARAMS) + len(ATTRIBUTE_NAMES)
        if self.z_dim < needed:
            raise ValueError(
                f"z_dim must be at least {needed} (one per identity value and attribute), got {self.z_dim}"
            )

    @property
    def num_ws(self) -> int:
        return NUM_ROWS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticHeadsConfig:
        """A stored config, every value checked (`ip2n.limits.config_from_dict`)."""
        return config_from_dict(cls, data)


def synthetic_preset(name: str = "synthetic") -> SyntheticHeadsConfig:
    """ "synthetic": 64² neural render → 128² images; "tiny": 32² → 64², 12 + 12 samples (tests)."""
    if name == "synthetic":
        return SyntheticHeadsConfig()
    if name == "tiny":
        return SyntheticHeadsConfig(
            w_dim=32,
            img_resolution=64,
            neural_rendering_resolution=32,
            rendering=RenderingConfig(
                depth_resolution=16,
                depth_resolution_importance=16,
                ray_start=RAY_START,
                ray_end=RAY_END,
                box_warp=1.0,
            ),
        )
    raise ValueError(f"unknown synthetic-heads preset {name!r}; known: synthetic, tiny")


def prior_mean_coordinates() -> torch.Tensor:
    """Expected coordinates (1, K) of a random head: identity 0, attribute codes 2·p − 1."""
    mean = torch.zeros(1, len(COORDINATES))
    for name in BINARY_ATTRIBUTES:
        mean[0, COORDINATE_INDEX[name]] = 2 * PRIOR[name] - 1
    for name, values in CATEGORICAL_ATTRIBUTES.items():
        for value, probability in zip(values, CATEGORICAL_PRIOR[name]):
            mean[0, COORDINATE_INDEX[f"{name}={value}"]] = 2 * probability - 1
    return mean


class LatentSampler(nn.Module):
    """The world's "mapping network": z (N, z_dim) ~ N(0, I) → the latent (N, 14, w_dim) of a random head.

    z[:, :27] are the identity values (clipped), the next 15 pick the attributes through Φ(z) and
    the prior. Sampling from z is not differentiable in the attributes (they are discrete draws).
    """

    bases: torch.Tensor  # buffer (14, rows, w_dim)
    w_avg: torch.Tensor  # buffer (14, w_dim)

    def __init__(self, config: SyntheticHeadsConfig, bases: torch.Tensor) -> None:
        super().__init__()
        self.z_dim = config.z_dim
        self.register_buffer("bases", bases, persistent=False)
        self.register_buffer(
            "w_avg", encode(prior_mean_coordinates(), bases)[0], persistent=False
        )  # (14, w_dim)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim); c (N, 25) is accepted for interface parity and ignored (heads do not depend
        on pose)."""
        n_identity = len(IDENTITY_PARAMS)
        identity = z[:, :n_identity].clamp(-IDENTITY_CLIP, IDENTITY_CLIP)
        uniforms = normal_cdf(z[:, n_identity : n_identity + len(ATTRIBUTE_NAMES)]).tolist()
        attributes = [attributes_from_uniforms(dict(zip(ATTRIBUTE_NAMES, row))) for row in uniforms]
        ws = encode(coordinates_from(identity.float(), attributes).to(self.bases.dtype), self.bases)
        if truncation_psi != 1:
            cutoff = NUM_ROWS if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg + truncation_psi * (ws[:, :cutoff] - self.w_avg)
        return ws


class HeadsBackbone(nn.Module):
    """Holds the latent bases and the sampler, under EG3D's names (`backbone.mapping`)."""

    bases: torch.Tensor  # buffer (14, rows, w_dim)

    def __init__(self, config: SyntheticHeadsConfig) -> None:
        super().__init__()
        bases = row_bases(config.w_dim)
        self.register_buffer("bases", bases, persistent=False)  # (14, rows, w_dim)
        self.mapping = LatentSampler(config, bases)


class SyntheticHeadGenerator(nn.Module):
    """Procedural 3-D heads behind the generator interface (see the module docstring)."""

    def __init__(self, config: SyntheticHeadsConfig | None = None) -> None:
        super().__init__()
        self.config = config or SyntheticHeadsConfig()
        self.backbone = HeadsBackbone(self.config)

    @property
    def num_ws(self) -> int:
        return NUM_ROWS

    def encode_heads(self, identity: torch.Tensor, attributes: list[dict]) -> torch.Tensor:
        """Identity values (N, 27) + N attribute dicts → latents ws (N, 14, w_dim)."""
        bases = self.backbone.bases
        return encode(coordinates_from(identity.to(bases), attributes), bases)

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim) → ws (N, 14, w_dim) of random heads (see `LatentSampler`)."""
        return self.backbone.mapping(z, c, truncation_psi, truncation_cutoff)

    def synthesize_planes(self, ws: torch.Tensor, **_unused) -> torch.Tensor:
        """ws (N, 14, w_dim) → head coordinates (N, K), differentiable (EG3D's noise options do not apply)."""
        if ws.ndim != 3 or ws.shape[1:] != (NUM_ROWS, self.config.w_dim):
            raise ValueError(
                f"expected ws of shape (N, {NUM_ROWS}, {self.config.w_dim}), got {tuple(ws.shape)}"
            )
        return decode(ws, self.backbone.bases.to(ws.dtype))

    def render_planes(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor | None,
        cameras: torch.Tensor,
        *,
        neural_rendering_resolution: int | None = None,
        superresolution: bool = True,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Render head coordinates (N or 1, K) from cameras (N, 25).

        Returns `image_raw` (N, 3, r, r) and `feature_image` (the same), `image_depth` (N, 1, r, r),
        `weights_sum` (N, 1, r, r) at the neural resolution r, and `image` (N, 3, R, R) resized to
        `img_resolution` (skipped when `superresolution` is False). `ws` is unused (accepted for
        interface parity). Deterministic sampling by default, as for the EG3D generator.
        """
        resolution = neural_rendering_resolution or self.config.neural_rendering_resolution
        n_cameras = cameras.shape[0]
        if planes.shape[0] != n_cameras:
            if planes.shape[0] != 1:
                raise ValueError(f"{planes.shape[0]} latents cannot be rendered from {n_cameras} cameras")
            planes = planes.expand(n_cameras, -1)
        cam2world, intrinsics = unpack_camera_label(cameras.to(planes.dtype))
        origins, directions = ray_bundle(cam2world, intrinsics, resolution)
        rendered = render_field(
            lambda points: head_field(planes, points),
            origins,
            directions,
            self.config.rendering,
            deterministic=deterministic,
            generator=generator,
            points_per_chunk=_POINTS_PER_CHUNK,
        )

        def to_image(values: torch.Tensor) -> torch.Tensor:  # (N, r², C) → (N, C, r, r)
            return values.permute(0, 2, 1).reshape(n_cameras, -1, resolution, resolution)

        weights_sum = to_image(rendered.weights_sum)
        # The renderer composites onto black (−1); fill the uncovered share with the backdrop.
        backdrop = background_color(planes)[:, :, None, None] * 2 - 1  # (N, 3, 1, 1)
        image_raw = to_image(rendered.features) + (1 - weights_sum) * (backdrop + 1)
        outputs = {
            "image_raw": image_raw,
            "feature_image": image_raw,
            "image_depth": to_image(rendered.depth),
            "weights_sum": weights_sum,
        }
        if superresolution:
            size = self.config.img_resolution
            outputs["image"] = F.interpolate(
                image_raw,
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=size < resolution,
            )
        return outputs

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, **render_options) -> dict[str, torch.Tensor]:
        """ws (N, 14, w_dim), cameras (N, 25) → the outputs of `render_planes`."""
        return self.render_planes(self.synthesize_planes(ws), ws, c, **render_options)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        **render_options,
    ) -> dict[str, torch.Tensor]:
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), c, **render_options)

    def query_planes(self, planes: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw density (N, M, 1) and colour (N, M, 3) in [0, 1] at points (N, M, 3)."""
        outputs = [head_field(planes, part) for part in points.split(_POINTS_PER_CHUNK, dim=1)]
        return {key: torch.cat([out[key] for out in outputs], dim=1) for key in ("sigma", "rgb")}

    def density_lattice(self, planes: torch.Tensor, resolution: int) -> torch.Tensor:
        """Raw density (R, R, R) indexed [z, y, x] on `ip2n.export.mesh.grid_points(R, box_warp)`."""
        box = self.config.rendering.box_warp
        axis = torch.linspace(-box / 2, box / 2, resolution, device=planes.device, dtype=planes.dtype)
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        points = torch.stack([x, y, z], dim=-1).reshape(1, -1, 3)
        return self.query_planes(planes[:1], points)["sigma"].reshape(resolution, resolution, resolution)
