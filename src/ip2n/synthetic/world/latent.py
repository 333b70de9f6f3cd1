"""The synthetic world's latent: a W+-like stack of 14 semantic style vectors.

Row r of a latent (N, 14, C) describes one part of the head (`LATENT_ROWS`): its few *coordinates*
(identity values, attribute codes) are spread over the C channels by a fixed orthonormal basis, so
`decode` (a projection) inverts `encode` exactly and is linear, hence differentiable.

Coordinate codes: identity values as they are (≈ N(0, 1)); a binary attribute −1 (False) / +1 (True);
a categorical attribute one-hot in ±1 (+1 at the chosen value). Decoding thresholds at 0 / takes the
arg-max. The renderer reads every coordinate continuously, so in-between latents give in-between
heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ip2n.synthetic.world.attributes import (
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    IDENTITY_PARAMS,
    Attributes,
    AttributeValue,
    complete_attributes,
)

NUM_ROWS = 14


def _categorical(name: str) -> tuple[str, ...]:
    return tuple(f"{name}={value}" for value in CATEGORICAL_ATTRIBUTES[name])


# (row name, coordinate names). Categorical coordinates are named "attribute=value".
LATENT_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("head", ("head_width", "head_height", "head_depth", "jaw_width", "chin_length", "cheekbone_width")),
    ("eyes", ("eye_spacing", "eye_height", "eye_size", "eye_hue", "eye_darkness")),
    (
        "features",
        (
            "nose_length",
            "nose_width",
            "nose_projection",
            "mouth_width",
            "lip_thickness",
            "ear_size",
            "ear_angle",
        ),
    ),
    ("skin", ("skin_tone", "skin_warmth", "lip_redness", "pale_skin")),
    ("hair", ("hairline_height", "hair_volume", "bald", "bangs")),
    ("hair_color", _categorical("hair_color")),
    ("brows", ("brow_height", "brow_tilt", "bushy_eyebrows")),
    ("nose", ("big_nose",)),
    ("mouth", ("smile", "mouth_open")),
    ("facial_hair", ("beard", "mustache", "goatee")),
    ("glasses", ("eyeglasses",)),
    ("build", ("chubby",) + _categorical("age")),
    ("material", _categorical("style")),
    ("background", ("background_hue", "background_brightness")),
)
COORDINATES: tuple[str, ...] = tuple(name for _, names in LATENT_ROWS for name in names)
COORDINATE_INDEX = {name: index for index, name in enumerate(COORDINATES)}
MAX_ROW_SIZE = max(len(names) for _, names in LATENT_ROWS)
ROW_NAMES = tuple(row for row, _ in LATENT_ROWS)
ATTRIBUTE_COORDINATES = BINARY_ATTRIBUTES + tuple(
    coordinate for name in CATEGORICAL_ATTRIBUTES for coordinate in _categorical(name)
)

assert len(LATENT_ROWS) == NUM_ROWS
assert set(IDENTITY_PARAMS) <= set(COORDINATES)


def row_bases(w_dim: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Orthonormal bases (14, MAX_ROW_SIZE, w_dim): row r's coordinates j → direction bases[r, j].

    Rows of the orthonormal DCT-II matrix (computed in float64, so every platform gets the same
    numbers; no random QR whose signs depend on the LAPACK build). Row r uses DCT frequencies
    (r + 3j) mod w_dim, distinct because 3 and a power-of-two w_dim are coprime. Padding rows
    (j ≥ the row's size) are zero.
    """
    if w_dim < MAX_ROW_SIZE or w_dim % 3 == 0:
        raise ValueError(f"w_dim must be at least {MAX_ROW_SIZE} and not a multiple of 3, got {w_dim}")
    n = torch.arange(w_dim, dtype=torch.float64)
    bases = torch.zeros(NUM_ROWS, MAX_ROW_SIZE, w_dim, dtype=torch.float64)
    for r, (_, names) in enumerate(LATENT_ROWS):
        for j in range(len(names)):
            k = (r + 3 * j) % w_dim
            scale = math.sqrt((1 if k == 0 else 2) / w_dim)
            bases[r, j] = scale * torch.cos(math.pi / w_dim * (n + 0.5) * k)
    return bases.to(dtype=dtype, device=device)


def coordinates_to_rows(coordinates: torch.Tensor) -> torch.Tensor:
    """Flat coordinates (N, K) → per-row coordinates (N, 14, MAX_ROW_SIZE), zero-padded."""
    rows = []
    start = 0
    for _, names in LATENT_ROWS:
        part = coordinates[:, start : start + len(names)]
        rows.append(torch.nn.functional.pad(part, (0, MAX_ROW_SIZE - len(names))))
        start += len(names)
    return torch.stack(rows, dim=1)


def rows_to_coordinates(rows: torch.Tensor) -> torch.Tensor:
    """Per-row coordinates (N, 14, MAX_ROW_SIZE) → flat coordinates (N, K)."""
    return torch.cat([rows[:, r, : len(names)] for r, (_, names) in enumerate(LATENT_ROWS)], dim=1)


def encode(coordinates: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Coordinates (N, K) → latent (N, 14, C) with bases (14, MAX_ROW_SIZE, C) from `row_bases`."""
    return torch.einsum("nrj,rjc->nrc", coordinates_to_rows(coordinates), bases)


def decode(latent: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """Latent (N, 14, C) → coordinates (N, K): the exact inverse of `encode`, differentiable."""
    return rows_to_coordinates(torch.einsum("nrc,rjc->nrj", latent, bases))


def coordinates_from(
    identity: torch.Tensor, attributes: Sequence[Mapping[str, AttributeValue]]
) -> torch.Tensor:
    """Identity values (N, len(IDENTITY_PARAMS)) + N attribute dicts → coordinates (N, K) float32."""
    if (
        identity.ndim != 2
        or identity.shape[1] != len(IDENTITY_PARAMS)
        or identity.shape[0] != len(attributes)
    ):
        raise ValueError(
            f"expected identity (N, {len(IDENTITY_PARAMS)}) and N attribute sets, "
            f"got {tuple(identity.shape)} and {len(attributes)}"
        )
    coordinates = torch.zeros(
        identity.shape[0], len(COORDINATES), dtype=identity.dtype, device=identity.device
    )
    identity_index = [COORDINATE_INDEX[name] for name in IDENTITY_PARAMS]
    coordinates[:, identity_index] = identity
    codes = torch.tensor([_attribute_codes(complete_attributes(a)) for a in attributes], dtype=identity.dtype)
    attribute_index = [COORDINATE_INDEX[name] for name in ATTRIBUTE_COORDINATES]
    coordinates[:, attribute_index] = codes.to(identity.device)
    return coordinates


def attribute_change(
    source: Mapping[str, AttributeValue], target: Mapping[str, AttributeValue]
) -> torch.Tensor:
    """Coordinates (1, K) that move a head with attributes `source` to `target`, identity untouched
    (codes are linear, so adding them to any latent's coordinates is the exact edit)."""
    no_identity = torch.zeros(1, len(IDENTITY_PARAMS))
    return coordinates_from(no_identity, [target]) - coordinates_from(no_identity, [source])


def _attribute_codes(attributes: Attributes) -> list[float]:
    codes = [1.0 if attributes[name] else -1.0 for name in BINARY_ATTRIBUTES]
    for name, values in CATEGORICAL_ATTRIBUTES.items():
        codes += [1.0 if attributes[name] == value else -1.0 for value in values]
    return codes


def identity_of(coordinates: torch.Tensor) -> torch.Tensor:
    """Coordinates (N, K) → identity values (N, len(IDENTITY_PARAMS))."""
    return coordinates[:, [COORDINATE_INDEX[name] for name in IDENTITY_PARAMS]]


def attributes_of(coordinates: torch.Tensor) -> list[Attributes]:
    """Coordinates (N, K) → N attribute dicts (binary: code > 0; categorical: arg-max)."""
    result = []
    for row in coordinates.detach().cpu():
        attributes: Attributes = {name: bool(row[COORDINATE_INDEX[name]] > 0) for name in BINARY_ATTRIBUTES}
        for name, values in CATEGORICAL_ATTRIBUTES.items():
            scores = row[[COORDINATE_INDEX[c] for c in _categorical(name)]]
            attributes[name] = values[int(scores.argmax())]
        result.append(attributes)
    return result
