"""Bias + activation + gain + clamp, the epilogue of every StyleGAN2 layer.

The activation gains keep the signal variance of unit-variance inputs at about 1 (He et al.):
√2 for leaky ReLU, 1 for linear.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
DEFAULT_GAINS = {"linear": 1.0, "lrelu": math.sqrt(2.0)}


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    dim: int = 1,
    inplace: bool = False,
) -> torch.Tensor:
    """act(x + bias) · gain, then clamped to [−clamp, clamp].

    x: any shape; bias: (x.shape[dim],), broadcast along `dim`; activation "linear" or "lrelu"
    (slope 0.2); gain None → the activation's default gain. Returns a tensor shaped like x.
    inplace: allow overwriting x. Callers pass it for fresh temporaries (convolution outputs): at
    512² every avoided copy saves as much time as the arithmetic. It is ignored while autograd
    records the computation.
    """
    if activation not in DEFAULT_GAINS:
        raise ValueError(f"unknown activation '{activation}'; known: {sorted(DEFAULT_GAINS)}")
    gain = DEFAULT_GAINS[activation] if gain is None else gain
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        bias = bias.to(x.dtype).reshape(shape)

    recording = torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))
    if recording or not inplace:
        if bias is not None:
            x = x + bias
        if activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE)
        if gain != 1:
            x = x * gain
        if clamp is not None:
            x = x.clamp(-clamp, clamp)
        return x

    if bias is not None:
        x.add_(bias)
    if activation == "lrelu":
        F.leaky_relu_(x, LRELU_SLOPE)
    if gain != 1:
        x.mul_(gain)
    if clamp is not None:
        x.clamp_(-clamp, clamp)
    return x
