"""PREIM3D inversion encoders: image → W+ codes relative to the generator's average latent.

Three pSp/e4e-style variants on an IR-SE50 trunk, chosen by the checkpoint's `opts["encoder_type"]`:

- `Encoder4Editing` (PREIM3D's default): one base code w0 from the coarsest features, plus a
  per-style delta: code i = w0 + delta_i for i ≥ 1, code 0 = w0.
- `GradualStyleEncoder` (pSp): every code predicted directly from a feature-pyramid level.
- `WPlusEncoder` (pSp's `BackboneEncoderUsingLastLayerIntoWPlus`; PREIM3D's own train.sh): one
  linear map from the pooled last feature map to all codes.

All take the official preprocessing (`preprocess.encoder_input`: 256×256 in [-1, 1]) and return
codes (N, num_styles, style_dim) = (N, 14, 512) RELATIVE to `latent_avg`: InstructPix2NeRF
diffuses these codes and adds `latent_avg` back before EG3D synthesis. State-dict keys equal the
official checkpoint's after dropping its `encoder.` prefix (see `encoder_weights_from_psp`).

Pyramid levels (e4e and pSp): styles 0–2 read the coarsest map (trunk output, resolution/16),
styles 3–6 the middle level (resolution/8), styles 7+ the fine level (resolution/4); each finer
level adds a 1×1 lateral projection of an earlier trunk stage to the bilinearly upsampled coarser
level (align_corners=True).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.encoding import irse
from ip2n.encoding.irse import IRSEConfig
from ip2n.encoding.preprocess import ENCODER_RESOLUTION
from ip2n.limits import config_from_dict

logger = logging.getLogger(__name__)

ENCODER_TYPES = ("Encoder4Editing", "WPlusEncoder", "GradualStyleEncoder")
DEFAULT_ENCODER_TYPE = "Encoder4Editing"  # PREIM3D's TrainOptions default

# First style index of the middle and of the fine pyramid level (fixed in the official code).
COARSE_END = 3
MIDDLE_END = 7


@dataclass(frozen=True)
class PREIM3DEncoderConfig:
    """Which encoder variant, on which trunk, producing how many codes of what width."""

    encoder_type: str = DEFAULT_ENCODER_TYPE
    backbone: IRSEConfig = field(default_factory=IRSEConfig)
    num_styles: int = 14
    style_dim: int = 512
    resolution: int = ENCODER_RESOLUTION

    def __post_init__(self) -> None:
        if self.encoder_type not in ENCODER_TYPES:
            raise ValueError(
                f"unknown encoder_type '{self.encoder_type}'; supported: {', '.join(ENCODER_TYPES)}"
            )
        # The style blocks halve their input down to 1×1 with at least one convolution, so every
        # pyramid level must be a power of two of side ≥ 2.
        if self.resolution < 32 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two ≥ 32, got {self.resolution}")

    def level_size(self, style_index: int) -> int:
        """Side of the pyramid level that style `style_index` reads (16, 32 or 64 at 256²)."""
        if style_index < COARSE_END:
            return self.resolution // 16
        if style_index < MIDDLE_END:
            return self.resolution // 8
        return self.resolution // 4

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any]) -> PREIM3DEncoderConfig:
        """Config of the encoder in an official `preim3d.pt`, from its `opts` dict.

        The official code always builds the 50-layer IR-SE trunk (`encoder_number_layers` is
        ignored) and derives the style count from `stylegan_size`: 2·log2(size) − 2.
        """
        if "encoder_type" in opts:
            encoder_type = opts["encoder_type"]
        else:
            logger.warning(
                "checkpoint opts have no 'encoder_type'; assuming %s (PREIM3D's default)",
                DEFAULT_ENCODER_TYPE,
            )
            encoder_type = DEFAULT_ENCODER_TYPE
        if encoder_type not in ENCODER_TYPES:
            raise ValueError(
                f"the checkpoint uses encoder_type '{encoder_type}', which ip2n does not support; "
                f"supported: {', '.join(ENCODER_TYPES)}"
            )
        stylegan_size = int(opts.get("stylegan_size", 256))
        return cls(encoder_type=encoder_type, num_styles=int(math.log2(stylegan_size)) * 2 - 2)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PREIM3DEncoderConfig:
        """The config stored in a weights file, every value checked (`ip2n.limits.config_from_dict`)."""
        return config_from_dict(cls, data)


def _ir_se50(encoder_type: str) -> PREIM3DEncoderConfig:
    return PREIM3DEncoderConfig(encoder_type=encoder_type)


def _small(encoder_type: str) -> PREIM3DEncoderConfig:
    """Narrow trunk, full (14, 512) codes at 256².

    With "WPlusEncoder" this has ~7 M parameters; the pyramid variants stay at ~150 M because their
    14 style heads are 512 wide.
    """
    return PREIM3DEncoderConfig(encoder_type=encoder_type, backbone=irse.preset("small"))


def _tiny(encoder_type: str) -> PREIM3DEncoderConfig:
    """Narrow trunk, 32-d codes from 64² images: only for tests."""
    return PREIM3DEncoderConfig(
        encoder_type=encoder_type, backbone=irse.preset("small"), style_dim=32, resolution=64
    )


PRESETS = {"ir_se50": _ir_se50, "small": _small, "tiny": _tiny}


def preset(name: str, encoder_type: str = DEFAULT_ENCODER_TYPE) -> PREIM3DEncoderConfig:
    """Named encoder configuration ("ir_se50", "small", "tiny") for one of `ENCODER_TYPES`."""
    if name not in PRESETS:
        raise ValueError(f"unknown encoder preset '{name}'; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name](encoder_type)


def encoder_weights_from_psp(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder's entries of an official pSp state dict, with the `encoder.` prefix removed.

    Mirrors the official selection: keys starting with the 7 letters "encoder" (no dot in the
    test), renamed by cutting the first 8 characters. `decoder.*` (a copy of the EG3D generator)
    and everything else are dropped.
    """
    return {key[8:]: value for key, value in state_dict.items() if key.startswith("encoder")}


class EqualLinear(nn.Module):
    """Linear layer with StyleGAN's equalized learning rate: the weight is scaled by 1/√in at run time.

    The stored `weight` is therefore √in times the effective matrix (official checkpoints store it
    this way); the bias is used as stored.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in) -> (N, out)
        return F.linear(x, self.weight * self.scale, self.bias)


class GradualStyleBlock(nn.Module):
    """Feature map (N, C, S, S) → one code (N, D): stride-2 3×3 convolutions down to 1×1, then EqualLinear."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
            channels = out_channels
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, S, S) -> (N, D)
        x = self.convs(x)  # (N, D, 1, 1)
        return self.linear(x.flatten(1))


def _upsample_add(coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize `coarse` to `lateral`'s size (align_corners=True, as pSp) and add."""
    return F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


def _check_images(images: torch.Tensor, resolution: int) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, resolution, resolution):
        raise ValueError(
            f"expected images of shape (N, 3, {resolution}, {resolution}) in [-1, 1], "
            f"got {tuple(images.shape)}"
        )


class _PyramidEncoder(nn.Module):
    """Trunk + per-style GradualStyleBlocks + two lateral projections (shared by e4e and pSp)."""

    def __init__(self, config: PREIM3DEncoderConfig) -> None:
        super().__init__()
        self.config = config
        trunk = config.backbone
        # Registration order fixes the state-dict key order of the official checkpoint.
        self.input_layer = irse.make_input_layer(trunk)
        self.body = irse.make_body(trunk)
        self.styles = nn.ModuleList(
            GradualStyleBlock(trunk.out_channels, config.style_dim, config.level_size(i))
            for i in range(config.num_styles)
        )
        self.latlayer1 = nn.Conv2d(trunk.stage_channels[2], trunk.out_channels, kernel_size=1)
        self.latlayer2 = nn.Conv2d(trunk.stage_channels[1], trunk.out_channels, kernel_size=1)

    def _pyramid(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, R, R) → coarse (N, C, R/16, R/16), middle (…, R/8, R/8), fine (…, R/4, R/4)."""
        _check_images(images, self.config.resolution)
        x = self.input_layer(images)
        c1, c2, c3 = irse.run_body_with_taps(self.body, x, self.config.backbone.stage_ends[1:])
        middle = _upsample_add(c3, self.latlayer1(c2))
        fine = _upsample_add(middle, self.latlayer2(c1))
        return c3, middle, fine

    @staticmethod
    def _level(
        style_index: int, coarse: torch.Tensor, middle: torch.Tensor, fine: torch.Tensor
    ) -> torch.Tensor:
        if style_index < COARSE_END:
            return coarse
        if style_index < MIDDLE_END:
            return middle
        return fine


class Encoder4Editing(_PyramidEncoder):
    """e4e: codes = w0 broadcast to every style, plus a learned delta for styles 1 … num_styles − 1.

    The official module has a "progressive stage" that enables deltas one by one during training;
    at inference (and whenever PREIM3D trains without `progressive_steps`, its default) the stage is
    the final one, so every delta is active. This module always applies all of them.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) in [-1, 1] → codes (N, num_styles, style_dim) relative to latent_avg."""
        coarse, middle, fine = self._pyramid(images)
        base = self.styles[0](coarse)  # (N, D)
        codes = [base]
        for i in range(1, self.config.num_styles):
            codes.append(base + self.styles[i](self._level(i, coarse, middle, fine)))
        return torch.stack(codes, dim=1)  # (N, num_styles, D)


class GradualStyleEncoder(_PyramidEncoder):
    """pSp: code i predicted directly from its pyramid level."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) in [-1, 1] → codes (N, num_styles, style_dim) relative to latent_avg."""
        coarse, middle, fine = self._pyramid(images)
        codes = [self.styles[i](self._level(i, coarse, middle, fine)) for i in range(self.config.num_styles)]
        return torch.stack(codes, dim=1)  # (N, num_styles, D)


class WPlusEncoder(nn.Module):
    """pSp's BackboneEncoderUsingLastLayerIntoWPlus: pooled last feature map → all codes at once."""

    def __init__(self, config: PREIM3DEncoderConfig) -> None:
        super().__init__()
        self.config = config
        trunk = config.backbone
        # Registration order fixes the state-dict key order of the official checkpoint.
        self.input_layer = irse.make_input_layer(trunk)
        self.output_layer_2 = nn.Sequential(
            nn.BatchNorm2d(trunk.out_channels),
            nn.AdaptiveAvgPool2d((7, 7)),
            nn.Flatten(),
            nn.Linear(trunk.out_channels * 7 * 7, config.style_dim),
        )
        self.linear = EqualLinear(config.style_dim, config.style_dim * config.num_styles)
        self.body = irse.make_body(trunk)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) in [-1, 1] → codes (N, num_styles, style_dim) relative to latent_avg."""
        _check_images(images, self.config.resolution)
        x = self.body(self.input_layer(images))  # (N, C, R/16, R/16)
        x = self.linear(self.output_layer_2(x))  # (N, num_styles · D), style-major
        return x.view(images.shape[0], self.config.num_styles, self.config.style_dim)


ENCODER_CLASSES: dict[str, type[nn.Module]] = {
    "Encoder4Editing": Encoder4Editing,
    "WPlusEncoder": WPlusEncoder,
    "GradualStyleEncoder": GradualStyleEncoder,
}


def build_encoder(config: PREIM3DEncoderConfig) -> nn.Module:
    """The encoder module for `config.encoder_type` (parameters on the current default device)."""
    return ENCODER_CLASSES[config.encoder_type](config)
