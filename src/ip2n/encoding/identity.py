"""IR-SE50 ArcFace identity network and the identity features InstructPix2NeRF conditions on.

The module's state dict is the official `model_ir_se50.pth` layout (keys `input_layer.*`,
`output_layer.*`, `body.*`, in that order), loaded strictly. Feature extraction follows the
official `IDLoss.extract_feats`: the 256×256 encoder input in [-1, 1] is adaptive-average-pooled
to 112×112 (no face crop, no re-normalisation), run through the network in eval mode, and the
512-d output is divided by its L2 norm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.encoding import irse
from ip2n.encoding.irse import IRSEConfig
from ip2n.encoding.preprocess import IDENTITY_RESOLUTION, pool_for_identity
from ip2n.limits import config_from_dict


@dataclass(frozen=True)
class IdentityConfig:
    """ArcFace network on an IR-SE trunk (the default is the official IR-SE50, 112² input)."""

    backbone: IRSEConfig = field(default_factory=IRSEConfig)
    input_size: int = IDENTITY_RESOLUTION
    feature_dim: int = 512
    dropout: float = 0.6  # only active in training mode; the features are always taken in eval mode

    def __post_init__(self) -> None:
        if self.input_size % self.backbone.downsampling:
            raise ValueError(
                f"input_size {self.input_size} must be a multiple of the trunk stride "
                f"{self.backbone.downsampling}"
            )

    @property
    def final_size(self) -> int:
        """Side of the last feature map (7 for 112² input)."""
        return self.input_size // self.backbone.downsampling

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityConfig:
        """The config stored in a weights file, every value checked (`ip2n.limits.config_from_dict`)."""
        return config_from_dict(cls, data)


def _ir_se50() -> IdentityConfig:
    return IdentityConfig()


def _small() -> IdentityConfig:
    """Narrow trunk with the full 512-d output, so it can stand in for IR-SE50 anywhere."""
    return IdentityConfig(backbone=irse.preset("small"))


PRESETS = {"ir_se50": _ir_se50, "small": _small}


def preset(name: str) -> IdentityConfig:
    """Named identity-network configuration ("ir_se50", "small")."""
    if name not in PRESETS:
        raise ValueError(f"unknown identity preset '{name}'; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


class IdentityEncoder(nn.Module):
    """ArcFace IR-SE network: face image → unit-length identity feature.

    `forward` takes the encoder-resolution image and pools it first (the official feature
    extraction); `embed` takes an image already at `config.input_size`. Use eval mode for features
    (BatchNorm running statistics, no dropout) — `extract_identity` enforces it.
    """

    def __init__(self, config: IdentityConfig) -> None:
        super().__init__()
        self.config = config
        trunk = config.backbone
        # Registration order fixes the state-dict key order of the official checkpoint.
        self.input_layer = irse.make_input_layer(trunk)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(trunk.out_channels),
            nn.Dropout(config.dropout),
            nn.Flatten(),
            nn.Linear(trunk.out_channels * config.final_size**2, config.feature_dim),
            nn.BatchNorm1d(config.feature_dim),
        )
        self.body = irse.make_body(trunk)

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """Identity features of images already at the network's input size.

        Args:
            faces: (N, 3, S, S) with S = `config.input_size` (112), values in [-1, 1].

        Returns:
            (N, feature_dim) unit vectors (L2 norm 1 along dim 1).
        """
        size = self.config.input_size
        if faces.ndim != 4 or tuple(faces.shape[1:]) != (3, size, size):
            raise ValueError(f"expected faces of shape (N, 3, {size}, {size}), got {tuple(faces.shape)}")
        x = self.input_layer(faces)  # (N, C0, S, S)
        x = self.body(x)  # (N, C, S/16, S/16)
        x = self.output_layer(x)  # (N, D)
        return F.normalize(x, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Identity features as the official feature extraction computes them.

        Args:
            images: (N, 3, H, W) in [-1, 1]; the convention is the 256×256 encoder input.

        Returns:
            (N, feature_dim) unit vectors.
        """
        return self.embed(pool_for_identity(images, self.config.input_size))


@torch.no_grad()
def extract_identity(encoder: IdentityEncoder, images: torch.Tensor) -> torch.Tensor:
    """Identity conditioning features for the diffusion model (no gradients).

    Args:
        encoder: an `IdentityEncoder` in eval mode (train mode would use batch statistics and
            dropout, which the official features never do).
        images: (N, 3, 256, 256) encoder input in [-1, 1].

    Returns:
        (N, 512) L2-normalised features (the DiT's `idfeatures`).
    """
    if encoder.training:
        raise RuntimeError("identity features are defined in eval mode; call encoder.eval() first")
    return encoder(images)
