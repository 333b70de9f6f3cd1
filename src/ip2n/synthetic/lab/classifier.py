"""The attribute classifier of the synthetic world: image → every attribute, for AA / AD.

An IR-SE trunk (the identity network's building blocks) with one linear head: a logit per binary
attribute and a group of logits per categorical attribute. The synthetic world knows the truth, so
success is also judged exactly from latents; this classifier judges what the *renders* show, as the
paper's attribute classifier does for real photos.
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
from ip2n.limits import config_from_dict
from ip2n.synthetic.world.attributes import BINARY_ATTRIBUTES, CATEGORICAL_ATTRIBUTES, Attributes
from ip2n.synthetic.world.latent import COORDINATE_INDEX

# Logit layout: the binary attributes, then each categorical attribute's values, in declaration order.
GROUPS: tuple[tuple[str, int], ...] = tuple((name, 1) for name in BINARY_ATTRIBUTES) + tuple(
    (name, len(values)) for name, values in CATEGORICAL_ATTRIBUTES.items()
)
NUM_LOGITS = sum(size for _, size in GROUPS)


@dataclass(frozen=True)
class AttributeClassifierConfig:
    backbone: IRSEConfig = field(default_factory=lambda: irse.preset("small"))
    input_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributeClassifierConfig:
        """The config stored in a weights file, every value checked (`ip2n.limits.config_from_dict`)."""
        return config_from_dict(cls, data)


class AttributeClassifier(nn.Module):
    """Images (N, 3, S, S) in [-1, 1], any S (pooled to `input_size`) → logits (N, NUM_LOGITS)."""

    def __init__(self, config: AttributeClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or AttributeClassifierConfig()
        self.input_layer = irse.make_input_layer(self.config.backbone)
        self.body = irse.make_body(self.config.backbone)
        self.head = nn.Linear(self.config.backbone.out_channels, NUM_LOGITS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if images.shape[-1] != size:
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        features = self.body(self.input_layer(images)).mean(dim=(2, 3))  # (N, C) global average
        return self.head(features)


def attribute_targets(coordinates: torch.Tensor) -> torch.Tensor:
    """Ground-truth coordinates (N, K) → targets (N, len(GROUPS)): 0/1 per binary attribute,
    the value's index per categorical one."""
    columns = [(coordinates[:, COORDINATE_INDEX[name]] > 0).long() for name in BINARY_ATTRIBUTES]
    for name, values in CATEGORICAL_ATTRIBUTES.items():
        codes = coordinates[:, [COORDINATE_INDEX[f"{name}={value}"] for value in values]]
        columns.append(codes.argmax(dim=1))
    return torch.stack(columns, dim=1)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over attributes of binary / categorical cross-entropy; logits (N, NUM_LOGITS), targets (N, G)."""
    losses, start = [], 0
    for column, (_, size) in enumerate(GROUPS):
        part = logits[:, start : start + size]
        if size == 1:
            losses.append(F.binary_cross_entropy_with_logits(part[:, 0], targets[:, column].float()))
        else:
            losses.append(F.cross_entropy(part, targets[:, column]))
        start += size
    return torch.stack(losses).mean()


def predicted_targets(logits: torch.Tensor) -> torch.Tensor:
    """Logits (N, NUM_LOGITS) → predicted targets (N, len(GROUPS)) in the layout of `attribute_targets`."""
    columns, start = [], 0
    for _, size in GROUPS:
        part = logits[:, start : start + size]
        columns.append((part[:, 0] > 0).long() if size == 1 else part.argmax(dim=1))
        start += size
    return torch.stack(columns, dim=1)


def targets_to_attributes(targets: torch.Tensor) -> list[Attributes]:
    """Targets (N, len(GROUPS)) → N attribute dicts."""
    result = []
    for row in targets.tolist():
        attributes: Attributes = {name: bool(value) for name, value in zip(BINARY_ATTRIBUTES, row)}
        for (name, values), value in zip(CATEGORICAL_ATTRIBUTES.items(), row[len(BINARY_ATTRIBUTES) :]):
            attributes[name] = values[value]
        result.append(attributes)
    return result
