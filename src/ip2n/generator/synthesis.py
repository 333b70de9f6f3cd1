"""StyleGAN2 synthesis network ("skip" architecture) and the EG3D tri-plane backbone.

Every layer takes one style vector w (N, w_dim). A block at resolution r upsamples the previous
features 2× (conv0), refines them (conv1) and adds its ToRGB output to the 2×-upsampled image of
the previous blocks, so the output image is a sum of contributions from every resolution.

Noise modes: "const" uses the stored per-layer noise maps (deterministic), "none" adds no noise,
"random" draws fresh N(0, 1) maps from the given torch.Generator.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ip2n.generator.layers import FullyConnectedLayer
from ip2n.generator.mapping import MappingNetwork
from ip2n.ops.bias_act import bias_act
from ip2n.ops.filtering import setup_filter, upsample2d
from ip2n.ops.modulated_conv import modulated_conv2d

NOISE_MODES = ("const", "none", "random")
RESAMPLE_TAPS = (1, 3, 3, 1)


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally 2× upsampling) + noise + bias + leaky ReLU.

    x (N, in_channels, r / up, r / up), w (N, w_dim) → (N, out_channels, r, r), r = resolution.
    """

    resample_filter: torch.Tensor  # buffer
    noise_const: torch.Tensor  # buffer (r, r)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        # Registration order matches the official state dict (weight, noise_strength, bias).
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.noise_strength = nn.Parameter(torch.empty([]))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_TAPS))
        self.register_buffer("noise_const", torch.empty(resolution, resolution))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """StyleGAN2 init: N(0, 1) weights and noise map, zero bias and noise strength."""
        with torch.no_grad():
            self.weight.normal_(generator=generator)
            self.noise_const.normal_(generator=generator)
            self.noise_strength.zero_()
            self.bias.zero_()

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        styles = self.affine(w)  # (N, in_channels)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, resample_filter=self.resample_filter)
        noise = self._noise(x, noise_mode, generator)
        if noise is not None:
            # In place is safe under autograd too: no backward formula needs the conv output.
            x.add_(noise)
        return bias_act(x, self.bias, activation="lrelu", clamp=self.conv_clamp, inplace=True)

    def _noise(
        self, x: torch.Tensor, noise_mode: str, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        if noise_mode == "const":
            return (self.noise_const * self.noise_strength).to(x.dtype)  # (r, r)
        if noise_mode == "random":
            noise = torch.randn(
                (x.shape[0], 1, self.resolution, self.resolution),
                generator=generator,
                device=x.device,
                dtype=x.dtype,
            )
            return noise * self.noise_strength.to(x.dtype)  # (N, 1, r, r)
        if noise_mode == "none":
            return None
        raise ValueError(f"unknown noise_mode '{noise_mode}'; expected one of {NOISE_MODES}")

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv without demodulation + bias:
    x (N, C, r, r), w (N, w_dim) → (N, img_channels, r, r)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        kernel_size: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        # Equalized learning rate for the kernel, applied through the styles.
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.normal_(generator=generator)
            self.bias.zero_()

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain  # (N, in_channels)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp, inplace=True)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [const |] conv0 (2× up) → conv1 → ToRGB.

    forward(x (N, in_channels, r/2, r/2) or None, img (N, img_channels, r/2, r/2) or None,
    ws (N, num_ws, w_dim)) → x (N, out_channels, r, r), img (N, img_channels, r, r), where
    num_ws = num_conv + 1. With in_channels = 0 the block starts from a learned constant (r × r);
    with upsample=False (the super-resolution's first block) conv0 and the image keep their size.
    """

    resample_filter: torch.Tensor  # buffer

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        upsample: bool = True,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.upsample = upsample
        self.register_buffer("resample_filter", setup_filter(RESAMPLE_TAPS))
        if in_channels == 0:
            self.const = nn.Parameter(torch.empty(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2 if upsample else 1, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_ws = self.num_conv + 1
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """N(0, 1) constant input (the layers initialise themselves)."""
        if self.in_channels == 0:
            with torch.no_grad():
                self.const.normal_(generator=generator)

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if ws.shape[1] != self.num_ws:
            raise ValueError(
                f"block at {self.resolution}² expects {self.num_ws} style vectors, got {ws.shape[1]}"
            )
        w_iter = iter(ws.unbind(1))
        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)  # (N, C, r, r)
        else:
            x = self.conv0(x, next(w_iter), noise_mode, generator)
        x = self.conv1(x, next(w_iter), noise_mode, generator)
        rgb = self.torgb(x, next(w_iter))
        if img is None:
            return x, rgb
        if self.upsample:
            return x, upsample2d(img, self.resample_filter).add_(rgb)
        return x, img + rgb


class SynthesisNetwork(nn.Module):
    """Blocks 4², 8², …, resolution²: ws (N, num_ws, w_dim) → image (N, out_channels, resolution, resolution).

    Channels per block: min(channel_base // r, channel_max). The EG3D backbone uses resolution 256
    and out_channels 96 (three 32-channel feature planes); its values are unbounded features.
    """

    def __init__(
        self,
        w_dim: int,
        resolution: int = 256,
        out_channels: int = 96,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 4, got {resolution}")
        self.w_dim = w_dim
        self.resolution = resolution
        self.out_channels = out_channels
        self.block_resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        # Consecutive blocks share one w: the ToRGB of block r uses the same w as conv0 of block 2r.
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(
                channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, out_channels, conv_clamp=conv_clamp
            )
            self.num_ws += block.num_conv
            setattr(self, f"b{r}", block)
        self.num_ws += 1  # the last block's ToRGB

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        x: torch.Tensor | None
        img: torch.Tensor | None
        x = img = None
        w_index = 0
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            x, img = block(x, img, ws.narrow(1, w_index, block.num_ws), noise_mode, generator)
            w_index += block.num_conv
        assert img is not None  # resolution ≥ 4: at least the 4² block ran
        return img.contiguous()  # the convolutions work channels-last; callers get the standard layout


class StyleGAN2Backbone(nn.Module):
    """The EG3D tri-plane generator backbone: `.mapping` (z, c → ws) and `.synthesis` (ws → planes).

    forward(z (N, z_dim), c (N, c_dim)) → planes (N, out_channels, resolution, resolution).
    """

    def __init__(
        self,
        z_dim: int = 512,
        c_dim: int = 25,
        w_dim: int = 512,
        resolution: int = 256,
        out_channels: int = 96,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
        mapping_layers: int = 2,
        mapping_hidden: int | None = None,
        mapping_lr_multiplier: float = 0.01,
        c_scale: float = 1.0,
    ) -> None:
        super().__init__()
        # synthesis is registered first, as in the official state dict.
        self.synthesis = SynthesisNetwork(
            w_dim, resolution, out_channels, channel_base, channel_max, conv_clamp
        )
        self.mapping = MappingNetwork(
            z_dim,
            c_dim,
            w_dim,
            self.synthesis.num_ws,
            num_layers=mapping_layers,
            hidden_features=mapping_hidden,
            lr_multiplier=mapping_lr_multiplier,
            c_scale=c_scale,
        )

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator)
