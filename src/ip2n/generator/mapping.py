"""StyleGAN2 mapping network with camera conditioning (EG3D): (z, c) → W+ codes."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from ip2n.generator.layers import FullyConnectedLayer

NORMALIZE_EPS = 1e-8


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Scale x to unit mean square along `dim` (the mapping input "pixel norm")."""
    return x * (x.square().mean(dim=dim, keepdim=True) + NORMALIZE_EPS).rsqrt()


class MappingNetwork(nn.Module):
    """z (N, z_dim), c (N, c_dim) → ws (N, num_ws, w_dim), the same w repeated num_ws times.

    z and the embedded conditioning label (c · c_scale → linear embedding) are normalised
    separately, concatenated and passed through `num_layers` leaky-ReLU layers (hidden width
    `hidden_features`, default w_dim). `w_avg` (a buffer, the training-time running mean of w) is
    the centre of the truncation trick: w ← w_avg + ψ·(w − w_avg) on the first
    `truncation_cutoff` codes (all if None).
    """

    w_avg: torch.Tensor  # buffer (w_dim,)

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 2,
        hidden_features: int | None = None,
        lr_multiplier: float = 0.01,
        c_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.c_scale = c_scale
        hidden_features = w_dim if hidden_features is None else hidden_features
        # The label embedding has w_dim features, so the first layer sees z_dim + w_dim inputs.
        features = [z_dim + w_dim] + [hidden_features] * (num_layers - 1) + [w_dim]
        self.embed = FullyConnectedLayer(c_dim, w_dim)
        for index in range(num_layers):
            layer = FullyConnectedLayer(
                features[index], features[index + 1], activation="lrelu", lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{index}", layer)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        x = normalize_2nd_moment(z.to(self.w_avg.dtype))  # (N, z_dim)
        y = normalize_2nd_moment(self.embed(c.to(self.w_avg.dtype) * self.c_scale))  # (N, w_dim)
        x = torch.cat([x, y], dim=1)
        for index in range(self.num_layers):
            x = cast(FullyConnectedLayer, getattr(self, f"fc{index}"))(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # (N, num_ws, w_dim)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            truncated = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws
