"""EG3D super-resolution networks: neural-rendered image + features → final image.

Each is two StyleGAN2 synthesis blocks driven by the LAST style vector only (repeated for all
layers). Inputs whose size differs from the network's input resolution are first resized
(bilinear, align_corners False, optionally antialiased), as the official code does.

The block widths are fixed by the official classes (they ignore channel_base/channel_max). The
official layers are "fp16" layers and therefore clamp their outputs at ±256 (`conv_clamp`), also
when they run in fp32 on a CPU; keep the default 256 to reproduce the official images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.generator.synthesis import RESAMPLE_TAPS, SynthesisBlock
from ip2n.ops.filtering import setup_filter

W_DIM = 512  # hard-coded by the official super-resolution classes
IMG_CHANNELS = 3


class _HybridSuperresolution(nn.Module):
    """Shared forward: rgb (N, 3, h, w) in ~[−1, 1], features (N, C, h, w), ws (N, num_ws, 512)
    → image (N, 3, output_resolution, output_resolution) in ~[−1, 1]."""

    input_resolution: int
    output_resolution: int
    block0: SynthesisBlock
    block1: SynthesisBlock

    def __init__(self, antialias: bool) -> None:
        super().__init__()
        self.antialias = antialias

    def forward(
        self,
        rgb: torch.Tensor,
        features: torch.Tensor,
        ws: torch.Tensor,
        noise_mode: str = "none",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        ws = ws[:, -1:].expand(-1, 3, -1)  # (N, 3, 512): one w per layer of each block
        size = (self.input_resolution, self.input_resolution)
        if features.shape[-2:] != size:
            features = self._resize(features, size)
        if rgb.shape[-2:] != size:
            rgb = self._resize(rgb, size)
        x, img = self.block0(features, rgb, ws, noise_mode, generator)
        _, img = self.block1(x, img, ws, noise_mode, generator)
        return img.contiguous()  # the convolutions work channels-last; callers get the standard layout

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)


class Hybrid2X(_HybridSuperresolution):
    """64² → 128² (official SuperresolutionHybrid2X): a non-upsampling block at 64², then 64 → 128."""

    input_resolution = 64
    output_resolution = 128

    def __init__(
        self, in_channels: int = 32, conv_clamp: float | None = 256.0, antialias: bool = True
    ) -> None:
        super().__init__(antialias)
        self.block0 = SynthesisBlock(
            in_channels, 128, W_DIM, 64, IMG_CHANNELS, upsample=False, conv_clamp=conv_clamp
        )
        self.block1 = SynthesisBlock(128, 64, W_DIM, 128, IMG_CHANNELS, conv_clamp=conv_clamp)
        # Unused by the computation; kept because the official state dict contains it.
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_TAPS))


class Hybrid4X(_HybridSuperresolution):
    """128² → 256² (official SuperresolutionHybrid4X): a non-upsampling block at 128², then 128 → 256."""

    input_resolution = 128
    output_resolution = 256

    def __init__(
        self, in_channels: int = 32, conv_clamp: float | None = 256.0, antialias: bool = True
    ) -> None:
        super().__init__(antialias)
        self.block0 = SynthesisBlock(
            in_channels, 128, W_DIM, 128, IMG_CHANNELS, upsample=False, conv_clamp=conv_clamp
        )
        self.block1 = SynthesisBlock(128, 64, W_DIM, 256, IMG_CHANNELS, conv_clamp=conv_clamp)
        # Unused by the computation; kept because the official state dict contains it.
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_TAPS))


class Hybrid8XDC(_HybridSuperresolution):
    """128² → 512² (official SuperresolutionHybrid8XDC, the FFHQ-512 model): 128 → 256 → 512."""

    input_resolution = 128
    output_resolution = 512

    def __init__(
        self, in_channels: int = 32, conv_clamp: float | None = 256.0, antialias: bool = True
    ) -> None:
        super().__init__(antialias)
        self.block0 = SynthesisBlock(in_channels, 256, W_DIM, 256, IMG_CHANNELS, conv_clamp=conv_clamp)
        self.block1 = SynthesisBlock(256, 128, W_DIM, 512, IMG_CHANNELS, conv_clamp=conv_clamp)
