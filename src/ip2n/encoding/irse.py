"""IR-SE building blocks shared by the ArcFace identity network and the PREIM3D inversion encoder.

Both official networks use the same trunk: an "improved residual" ResNet with squeeze-and-excitation
(IR-SE, as in ArcFace): a 3×3 stem at full resolution, then stages of bottleneck units whose first
unit halves the resolution. Attribute names (`input_layer`, `body.<i>.shortcut_layer`,
`body.<i>.res_layer`, `fc1`/`fc2`) follow the official checkpoints so their state dicts load as-is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.limits import config_from_dict


@dataclass(frozen=True)
class IRSEConfig:
    """Widths and depths of an IR-SE trunk (the default is IR-SE50)."""

    stem_channels: int = 64
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)
    stage_units: tuple[int, ...] = (3, 4, 14, 3)
    se_reduction: int = 16

    def __post_init__(self) -> None:
        # Both consumers need exactly four stride-2 stages: the identity head expects a /16 feature
        # map, and the inversion encoders tap the ends of stages 2, 3 and 4.
        if len(self.stage_channels) != 4 or len(self.stage_units) != 4:
            raise ValueError(
                f"an IR-SE trunk has 4 stages; got channels {self.stage_channels}, units {self.stage_units}"
            )
        if min(self.stage_units) < 1:
            raise ValueError(f"every stage needs at least one unit; got {self.stage_units}")
        too_narrow = [c for c in self.stage_channels if c < self.se_reduction or c % self.se_reduction]
        if too_narrow:
            raise ValueError(
                f"stage widths {too_narrow} are not positive multiples of se_reduction={self.se_reduction}"
            )

    @property
    def out_channels(self) -> int:
        """Channels of the last stage's output."""
        return self.stage_channels[-1]

    @property
    def downsampling(self) -> int:
        """Total stride of the trunk (each stage halves the resolution)."""
        return 2 ** len(self.stage_channels)

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """Index in `body` of each stage's last unit ((2, 6, 20, 23) for IR-SE50)."""
        ends, total = [], 0
        for units in self.stage_units:
            total += units
            ends.append(total - 1)
        return tuple(ends)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IRSEConfig:
        """The config stored in a weights file, every value checked (`ip2n.limits.config_from_dict`)."""
        return config_from_dict(cls, data)


def _ir_se50() -> IRSEConfig:
    return IRSEConfig()


def _small() -> IRSEConfig:
    """Narrow, shallow trunk for fast tests and small synthetic experiments."""
    return IRSEConfig(stem_channels=16, stage_channels=(16, 32, 64, 128), stage_units=(1, 2, 2, 1))


PRESETS = {"ir_se50": _ir_se50, "small": _small}


def preset(name: str) -> IRSEConfig:
    """Named trunk configuration ("ir_se50", "small")."""
    if name not in PRESETS:
        raise ValueError(f"unknown IR-SE preset '{name}'; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


class SqueezeExcite(nn.Module):
    """Channel attention: rescale each channel by a gate computed from the global average."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, H, W)
        gate = F.adaptive_avg_pool2d(x, 1)  # (N, C, 1, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: `shortcut(x) + res(x)`, striding in the second 3×3 convolution."""

    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int) -> None:
        super().__init__()
        # A kernel-1 max-pool is a plain subsampling; the official net uses it (not a convolution)
        # whenever the width does not change, so there are no shortcut weights in that case.
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W) -> (N, depth, H/s, W/s)
        return self.shortcut_layer(x) + self.res_layer(x)


def make_input_layer(config: IRSEConfig) -> nn.Sequential:
    """Stem: 3×3 convolution (no bias) + BatchNorm + PReLU at full resolution, RGB → stem width."""
    return nn.Sequential(
        nn.Conv2d(3, config.stem_channels, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(config.stem_channels),
        nn.PReLU(config.stem_channels),
    )


def make_body(config: IRSEConfig) -> nn.Sequential:
    """All bottleneck units as one flat sequence (the official layout: `body.0` … `body.23`)."""
    units: list[nn.Module] = []
    in_channels = config.stem_channels
    for depth, count in zip(config.stage_channels, config.stage_units):
        units.append(BottleneckIRSE(in_channels, depth, 2, config.se_reduction))
        units.extend(BottleneckIRSE(depth, depth, 1, config.se_reduction) for _ in range(count - 1))
        in_channels = depth
    return nn.Sequential(*units)


def run_body_with_taps(body: nn.Sequential, x: torch.Tensor, taps: Sequence[int]) -> list[torch.Tensor]:
    """Run every unit of `body` on `x` and return the outputs of the units listed in `taps`."""
    wanted = set(taps)
    outputs = {}
    for index, unit in enumerate(body):
        x = unit(x)
        if index in wanted:
            outputs[index] = x
    return [outputs[index] for index in taps]
