"""Utilities shared by several test modules (importable because pytest puts tests/ on sys.path).

`helpers.official_files` writes weight files the way the official tools write them,
`helpers.images` makes test images.
"""

import math

import torch


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every float tensor with non-trivial values (BatchNorm statistics included), in eval mode.

    Official inits zero biases and set BatchNorm to identity, which would let layout mistakes pass
    unnoticed; these values make every tensor matter.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.ndim >= 2:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))
            else:
                base = 1.0 if name.endswith("weight") else 0.0  # BatchNorm / PReLU scales near 1
                tensor.copy_(base + 0.1 * torch.randn(tensor.shape, generator=generator))
    return module.eval()
