"""W+ codes ↔ the 4×4 "image" the diffusion model works on.

EG3D's W+ space has 14 style vectors of 512 dimensions. The DiT treats the 512 dimensions as
channels and lays the 14 style vectors out on a 4×4 grid, row-major (style ``s`` at row ``s // 4``,
column ``s % 4``); the two spare cells (14 and 15) are zero. See ``docs/latent_layout.md``.
"""

from __future__ import annotations

import torch

NUM_STYLES = 14
GRID_SIZE = 4


def pack_latent(codes: torch.Tensor) -> torch.Tensor:
    """W+ codes (N, 14, C) → packed latent (N, C, 4, 4), cells 14 and 15 zero.

    The codes are whatever the caller diffuses: for ip2n these are the encoder's offsets from
    ``w_avg``, not absolute W+ codes.
    """
    if codes.ndim != 3 or codes.shape[1] != NUM_STYLES:
        raise ValueError(f"expected codes of shape (N, {NUM_STYLES}, C), got {tuple(codes.shape)}")
    channels_first = codes.transpose(1, 2)  # (N, C, 14)
    padded = torch.nn.functional.pad(channels_first, (0, GRID_SIZE * GRID_SIZE - NUM_STYLES))  # (N, C, 16)
    return padded.reshape(codes.shape[0], codes.shape[2], GRID_SIZE, GRID_SIZE)  # (N, C, 4, 4)


def unpack_latent(packed: torch.Tensor, latent_avg: torch.Tensor | None = None) -> torch.Tensor:
    """Packed latent (N, C, 4, 4) → W+ codes (N, 14, C); cells 14 and 15 are dropped.

    ``latent_avg`` (1, 14, C) or (N, 14, C), when given, is added to the unpacked codes: pass
    ``w_avg`` to turn the diffused offsets into absolute W+ codes for EG3D.
    """
    if packed.ndim != 4 or packed.shape[2:] != (GRID_SIZE, GRID_SIZE):
        raise ValueError(f"expected a packed latent of shape (N, C, 4, 4), got {tuple(packed.shape)}")
    cells = packed.flatten(2)[:, :, :NUM_STYLES]  # (N, C, 14)
    codes = cells.transpose(1, 2)  # (N, 14, C)
    if latent_avg is not None:
        codes = codes + latent_avg
    return codes
