"""EG3D "OSG" tri-plane feature decoder: plane features at a 3-D point → density and colour features."""

from __future__ import annotations

import torch
from torch import nn

from ip2n.generator.layers import FullyConnectedLayer

# The sigmoid output is stretched slightly beyond (0, 1) so that exact 0 and 1 stay reachable.
RGB_MARGIN = 0.001


class OSGDecoder(nn.Module):
    """sampled_features (N, 3, M, n_features) → {"rgb": (N, M, out_features), "sigma": (N, M, 1)}.

    The features of the 3 planes are averaged, then FC → Softplus → FC. sigma is the raw first
    output (the renderer applies its own activation); rgb = sigmoid(rest)·(1 + 2·0.001) − 0.001,
    i.e. in (−0.001, 1.001); its first 3 channels become the raw image.
    """

    def __init__(self, n_features: int = 32, hidden: int = 64, out_features: int = 32, lr_multiplier: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + out_features, lr_multiplier=lr_multiplier),
        )

    def forward(self, sampled_features: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.net(sampled_features.mean(dim=1))  # (N, M, 1 + out_features)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * RGB_MARGIN) - RGB_MARGIN
        return {"rgb": rgb, "sigma": x[..., :1]}
