"""What a synthetic head is made of: identity parameters (kept by edits) and attributes (edited).

- **Identity**: `IDENTITY_PARAMS` continuous values, each a standard-normal draw clipped to ±2.5
  (0 = the average head). Shape and colour of the face: edits must leave them alone.
- **Attributes**: the world's canonical names (docs/synthetic_world.md). Binary attributes take
  False/True; `hair_color`, `age` and `style` take one of their listed values. An attribute set is
  a plain `dict[str, bool | str]` with every name present (`complete_attributes` fills defaults).

Some attributes hide others (a bald head shows no bangs and no hair colour); `visible_changes` says
which edits change the picture, so the data writer never pairs two identical-looking heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

AttributeValue = bool | str
Attributes = dict[str, AttributeValue]

IDENTITY_PARAMS = (
    "head_width",
    "head_height",
    "head_depth",
    "jaw_width",
    "chin_length",
    "cheekbone_width",
    "eye_spacing",
    "eye_height",
    "eye_size",
    "eye_hue",
    "eye_darkness",
    "nose_length",
    "nose_width",
    "nose_projection",
    "mouth_width",
    "lip_thickness",
    "ear_size",
    "ear_angle",
    "skin_tone",
    "skin_warmth",
    "lip_redness",
    "hairline_height",
    "hair_volume",
    "brow_height",
    "brow_tilt",
    "background_hue",
    "background_brightness",
)
IDENTITY_CLIP = 2.5

BINARY_ATTRIBUTES = (
    "eyeglasses",
    "smile",
    "mouth_open",
    "bangs",
    "bald",
    "beard",
    "mustache",
    "goatee",
    "bushy_eyebrows",
    "big_nose",
    "chubby",
    "pale_skin",
)
CATEGORICAL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hair_color": ("black", "brown", "blond", "gray", "red", "pink", "blue"),
    "age": ("young", "old"),
    "style": ("none", "bronze_statue", "cartoon", "marble"),
}
ATTRIBUTE_NAMES = BINARY_ATTRIBUTES + tuple(CATEGORICAL_ATTRIBUTES)
DEFAULT_ATTRIBUTES: Attributes = {
    **{name: False for name in BINARY_ATTRIBUTES},
    "hair_color": "brown",
    "age": "young",
    "style": "none",
}

# How often each value is drawn for a random head (binary: probability of True). Rare values keep
# the data set about ordinary portraits, as FFHQ is; unlisted categorical values share the rest.
PRIOR: dict[str, float] = {
    "eyeglasses": 0.2,
    "smile": 0.4,
    "mouth_open": 0.25,
    "bangs": 0.3,
    "bald": 0.1,
    "beard": 0.15,
    "mustache": 0.15,
    "goatee": 0.1,
    "bushy_eyebrows": 0.2,
    "big_nose": 0.2,
    "chubby": 0.2,
    "pale_skin": 0.15,
}
CATEGORICAL_PRIOR: dict[str, tuple[float, ...]] = {
    "hair_color": (0.28, 0.28, 0.2, 0.1, 0.08, 0.03, 0.03),
    "age": (0.75, 0.25),
    "style": (0.85, 0.05, 0.05, 0.05),
}


def complete_attributes(partial: Mapping[str, AttributeValue] | None = None) -> Attributes:
    """Defaults overridden by `partial`; raises ValueError on unknown names or values."""
    attributes = dict(DEFAULT_ATTRIBUTES)
    for name, value in (partial or {}).items():
        if name in BINARY_ATTRIBUTES:
            if not isinstance(value, bool):
                raise ValueError(f"attribute {name!r} takes True or False, got {value!r}")
        elif name in CATEGORICAL_ATTRIBUTES:
            if value not in CATEGORICAL_ATTRIBUTES[name]:
                raise ValueError(
                    f"attribute {name!r} takes one of {CATEGORICAL_ATTRIBUTES[name]}, got {value!r}"
                )
        else:
            raise ValueError(f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTE_NAMES)}")
        attributes[name] = value
    return attributes


def hidden_attributes(attributes: Mapping[str, AttributeValue]) -> set[str]:
    """Attributes that do not show in the picture given the others (a bald head has no visible bangs)."""
    hidden = set()
    if attributes["bald"]:
        hidden.add("bangs")
        # Facial hair takes the hair colour, so it still shows on a bald head with a beard.
        if not (attributes["beard"] or attributes["mustache"] or attributes["goatee"]):
            hidden.add("hair_color")
    if attributes["style"] in ("bronze_statue", "marble"):
        # A statue is one material: hair colour and pale skin no longer show.
        hidden |= {"hair_color", "pale_skin"}
    return hidden


def visible_changes(
    source: Mapping[str, AttributeValue], target: Mapping[str, AttributeValue]
) -> dict[str, AttributeValue]:
    """The attributes of `target` that differ from `source` and show in both pictures."""
    hidden = hidden_attributes(source) | hidden_attributes(target)
    return {
        name: target[name] for name in ATTRIBUTE_NAMES if target[name] != source[name] and name not in hidden
    }


def sample_identity(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random identities (n, len(IDENTITY_PARAMS)) float32: N(0, 1) clipped to ±IDENTITY_CLIP."""
    return torch.randn(n, len(IDENTITY_PARAMS), generator=generator).clamp(-IDENTITY_CLIP, IDENTITY_CLIP)


def sample_attributes(generator: torch.Generator | None = None) -> Attributes:
    """One random attribute set drawn from PRIOR / CATEGORICAL_PRIOR (bald heads get no bangs)."""
    uniforms = torch.rand(len(ATTRIBUTE_NAMES), generator=generator).tolist()
    return attributes_from_uniforms(dict(zip(ATTRIBUTE_NAMES, uniforms)))


def attributes_from_uniforms(uniforms: Mapping[str, float]) -> Attributes:
    """Attribute values from one U(0, 1) number per attribute (inverse-CDF of the prior)."""
    attributes: Attributes = {name: uniforms[name] < PRIOR[name] for name in BINARY_ATTRIBUTES}
    for name, values in CATEGORICAL_ATTRIBUTES.items():
        cumulative = 0.0
        attributes[name] = values[-1]
        for value, probability in zip(values, CATEGORICAL_PRIOR[name]):
            cumulative += probability
            if uniforms[name] < cumulative:
                attributes[name] = value
                break
    if attributes["bald"]:
        attributes["bangs"] = False
    return attributes


def normal_cdf(values: torch.Tensor) -> torch.Tensor:
    """Φ(values): standard-normal draws → uniforms (used by the z → latent sampler)."""
    return 0.5 * (1 + torch.erf(values / math.sqrt(2)))
