"""EG3D "OSG" tri-plane feature decoder: plane features at a 3-D point → density and colour features."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.generator.layers import FullyConnectedLayer
from ip2n.rendering.triplane import mean_over_planes

# The sigmoid output is stretched slightly beyond (0, 1) so that exact 0 and 1 stay reachable.
RGB_MARGIN = 0.001


class OSGDecoder(nn.Module):
    """sampled_features (N, 3, M, n_features) → {"rgb": (N, M, out_features), "sigma": (N, M, 1)}.

    The features of the 3 planes are averaged, then FC → Softplus → FC. sigma is the raw first
    output (the renderer applies its own activation); rgb = sigmoid(rest)·(1 + 2·0.001) − 0.001,
    i.e. in (−0.001, 1.001); its first 3 channels become the raw image.
    """

    def __init__(
        self, n_features: int = 32, hidden: int = 64, out_features: int = 32, lr_multiplier: float = 1.0
    ):
        super().__init__()
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + out_features, lr_multiplier=lr_multiplier),
        )

    def forward(self, sampled_features: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.net(mean_over_planes(sampled_features))  # (N, M, 1 + out_features)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * RGB_MARGIN) - RGB_MARGIN
        return {"rgb": rgb, "sigma": x[..., :1]}

    def density_on_lattice(
        self, f_xy: torch.Tensor, f_xz: torch.Tensor, f_zx: torch.Tensor, slices_per_chunk: int = 8
    ) -> torch.Tensor:
        """Raw density on a lattice from `sample_triplane_lattice` features → (R_z, R_y, R_x).

        The first layer is linear, so the mean of the three plane features followed by it equals the
        mean of the three per-plane projections: each plane is projected once (R² rows), and only
        the broadcast sum, the Softplus and the density row of the last layer run per lattice point.
        """
        first, last = cast(FullyConnectedLayer, self.net[0]), cast(FullyConnectedLayer, self.net[2])
        assert first.bias is not None and last.bias is not None  # built with biases in __init__
        weight = first.weight * (first.weight_gain / 3)  # the 1/3 of the plane mean, folded in
        bias = first.bias * first.lr_multiplier
        proj_xy = torch.einsum("cyx,hc->yxh", f_xy, weight) + bias  # (R_y, R_x, H)
        proj_xz = torch.einsum("czx,hc->zxh", f_xz, weight)  # (R_z, R_x, H)
        proj_zx = torch.einsum("cxz,hc->zxh", f_zx, weight)  # (R_z, R_x, H)
        sigma_weight = last.weight[0] * last.weight_gain  # (H,) the density row only
        sigma_bias = last.bias[0] * last.lr_multiplier
        depth = f_xz.shape[1]
        slices = []
        for start in range(0, depth, slices_per_chunk):
            stop = min(start + slices_per_chunk, depth)
            hidden = proj_xy[None] + (proj_xz[start:stop] + proj_zx[start:stop])[:, None]  # (k, R_y, R_x, H)
            slices.append(F.softplus(hidden) @ sigma_weight + sigma_bias)
        return torch.cat(slices)
