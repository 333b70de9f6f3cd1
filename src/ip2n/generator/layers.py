"""Equalized-learning-rate fully connected layer (StyleGAN2).

Parameters are stored as N(0, 1) / lr_multiplier and scaled at run time by
lr_multiplier / sqrt(in_features): every weight then gets the same effective learning rate under
Adam, and `lr_multiplier` slows down layers (the mapping network uses 0.01).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.ops.bias_act import bias_act


class FullyConnectedLayer(nn.Module):
    """x (..., in_features) → act(x·Wᵀ·g + b·lr_multiplier) (..., out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.bias_init = bias_init
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """StyleGAN2 init: weight N(0, 1) / lr_multiplier, bias bias_init / lr_multiplier."""
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / self.lr_multiplier, generator=generator)
            if self.bias is not None:
                self.bias.fill_(self.bias_init / self.lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = None if self.bias is None else self.bias.to(x.dtype) * self.lr_multiplier
        if self.activation == "linear":
            return F.linear(x, weight, bias)
        return bias_act(F.linear(x, weight), bias, activation=self.activation, dim=x.ndim - 1, inplace=True)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"activation={self.activation}, lr_multiplier={self.lr_multiplier}"
        )
