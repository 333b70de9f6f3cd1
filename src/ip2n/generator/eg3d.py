"""The EG3D tri-plane generator: W+ latent → tri-planes → volume rendering → super-resolution.

Weight-compatible with the official `TriPlaneGenerator` (same state-dict keys and shapes), but the
work is split so that callers can synthesize the tri-planes once per latent and render any number
of cameras from them (`synthesize_planes` + `render_planes`); orbit videos never re-run the backbone.

Tensor contracts: z (N, 512); camera labels (N, 25) (docs/cameras.md); ws (N, 14, 512);
planes (N, 3, 32, 256, 256); images in ≈ [−1, 1], NCHW; depth in world units along the ray.
"""

from __future__ import annotations

import torch
from torch import nn

from ip2n.generator.config import EG3DConfig
from ip2n.generator.decoder import OSGDecoder
from ip2n.generator.superresolution import Hybrid2X, Hybrid4X, Hybrid8XDC
from ip2n.generator.synthesis import StyleGAN2Backbone
from ip2n.rendering.cameras import unpack_camera_label
from ip2n.rendering.rays import ray_bundle
from ip2n.rendering.triplane import planes_channels_last, sample_triplane_lattice
from ip2n.rendering.volume import query_density, render_rays

_SUPERRESOLUTION_MODULES = {"hybrid2x": Hybrid2X, "hybrid4x": Hybrid4X, "hybrid8xdc": Hybrid8XDC}


class TriPlaneGenerator(nn.Module):
    """EG3D generator with `backbone` (mapping + synthesis), `superresolution` and `decoder`."""

    def __init__(self, config: EG3DConfig) -> None:
        super().__init__()
        self.config = config
        # Registration order = the official state-dict order.
        self.backbone = StyleGAN2Backbone(
            z_dim=config.z_dim,
            c_dim=config.c_dim,
            w_dim=config.w_dim,
            resolution=config.plane_resolution,
            out_channels=3 * config.plane_channels,
            channel_base=config.channel_base,
            channel_max=config.channel_max,
            mapping_layers=config.mapping_layers,
            mapping_hidden=config.mapping_hidden,
            c_scale=config.c_scale,
        )
        self.superresolution = _SUPERRESOLUTION_MODULES[config.superresolution](
            in_channels=config.plane_channels, conv_clamp=config.sr_conv_clamp, antialias=config.sr_antialias
        )
        self.decoder = OSGDecoder(
            config.plane_channels, config.decoder_hidden, config.plane_channels, config.decoder_lr_multiplier
        )

    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    def mapping(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """z (N, z_dim), conditioning camera c (N, 25) → ws (N, num_ws, w_dim)."""
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    def synthesize_planes(
        self, ws: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """ws (N, num_ws, w_dim) → tri-planes (N, 3, C, H, W). Run once per latent, render many views.

        The planes are stored channels-last (see `planes_channels_last`), the layout the renderer reads.
        """
        planes = self.backbone.synthesis(ws, noise_mode=noise_mode, generator=generator)
        n, _, height, width = planes.shape
        return planes_channels_last(planes.view(n, 3, self.config.plane_channels, height, width))

    def render_planes(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor,
        cameras: torch.Tensor,
        *,
        neural_rendering_resolution: int | None = None,
        superresolution: bool = True,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Render tri-planes from cameras (N, 25).

        A single latent (planes/ws batch 1) may be rendered from N cameras at once; otherwise the
        batches must match. Returns `image_raw` (N, 3, r, r), `image_depth` (N, 1, r, r),
        `feature_image` (N, C, r, r), `weights_sum` (N, 1, r, r) at the neural rendering resolution
        r, and `image` (N, 3, R, R) after super-resolution (skipped when `superresolution` is False).

        `deterministic` (default) renders without the stratified jitter and random importance
        quantiles of the official renderer: views are reproducible and videos do not flicker;
        `deterministic=False` reproduces the training-time sampling with draws from `generator`.
        """
        resolution = neural_rendering_resolution or self.config.neural_rendering_resolution
        n_cameras = cameras.shape[0]
        if planes.shape[0] != n_cameras:
            if planes.shape[0] != 1:
                raise ValueError(f"{planes.shape[0]} latents cannot be rendered from {n_cameras} cameras")
            planes = planes.expand(n_cameras, *planes.shape[1:])
            ws = ws.expand(n_cameras, *ws.shape[1:])
        cam2world, intrinsics = unpack_camera_label(cameras.to(planes.dtype))
        ray_origins, ray_directions = ray_bundle(cam2world, intrinsics, resolution)
        rendered = render_rays(
            planes,
            self.decoder,
            ray_origins,
            ray_directions,
            self.config.rendering,
            deterministic=deterministic,
            generator=generator,
        )

        def to_image(values: torch.Tensor) -> torch.Tensor:  # (N, r², C) → (N, C, r, r)
            return values.permute(0, 2, 1).reshape(n_cameras, -1, resolution, resolution)

        feature_image = to_image(rendered.features)
        outputs = {
            "image_raw": feature_image[:, :3],
            "image_depth": to_image(rendered.depth),
            "feature_image": feature_image,
            "weights_sum": to_image(rendered.weights_sum),
        }
        if superresolution:
            # The renderer's output is pixel-major; the super-resolution convolutions run about
            # 20 % faster on a plain NCHW copy (measured on CPU), which costs a few milliseconds.
            features = feature_image.contiguous()
            outputs["image"] = self.superresolution(
                features[:, :3], features, ws, noise_mode=self.config.sr_noise_mode
            )
        return outputs

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, **render_options) -> dict[str, torch.Tensor]:
        """ws (N, num_ws, w_dim), cameras (N, 25) → the outputs of `render_planes` (one view per latent)."""
        return self.render_planes(self.synthesize_planes(ws), ws, c, **render_options)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        **render_options,
    ) -> dict[str, torch.Tensor]:
        """z (N, z_dim), cameras (N, 25) → rendered outputs; c conditions the mapping and the view."""
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), c, **render_options)

    def sample_mixed(self, points: torch.Tensor, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        """Density and colour features at points (N, M, 3) for latents ws → {"sigma", "rgb"}."""
        return self.query_planes(self.synthesize_planes(ws), points)

    def query_planes(self, planes: torch.Tensor, points: torch.Tensor) -> dict[str, torch.Tensor]:
        """Density (raw, N, M, 1) and colour features (N, M, C) at points (N, M, 3) from tri-planes."""
        return query_density(planes, self.decoder, points, self.config.rendering.box_warp)

    def density_lattice(self, planes: torch.Tensor, resolution: int) -> torch.Tensor:
        """Raw density on resolution³ lattice points spanning the tri-plane box, for one latent.

        planes (1, 3, C, H, W) → (R, R, R) indexed [z, y, x], the same values as `query_planes` at
        `ip2n.export.mesh.grid_points(resolution, box_warp)`, computed plane by plane (see
        `OSGDecoder.density_on_lattice`) — about an order of magnitude faster for 256³.
        """
        box_warp = self.config.rendering.box_warp
        axis = torch.linspace(-box_warp / 2, box_warp / 2, resolution, device=planes.device)
        return self.decoder.density_on_lattice(*sample_triplane_lattice(planes, axis, box_warp))
