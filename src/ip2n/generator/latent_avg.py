"""The average W+ latent that PREIM3D's encoder offsets are relative to.

The official code does not store it: pSp/PREIM3D recompute it from the generator at load time with
a fixed recipe, which we reproduce exactly (fixtures/eg3d_small `latent_avg_psp`) and cache with
the converted weights (latent_avg.safetensors, written by `ip2n weights convert`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ip2n.rendering.cameras import latent_avg_camera

if TYPE_CHECKING:
    from ip2n.generator.eg3d import TriPlaneGenerator

LATENT_AVG_SAMPLES = 10_000
LATENT_AVG_SEED = 123
LATENT_AVG_PSI = 0.7
LATENT_AVG_CUTOFF = 14


@torch.no_grad()
def compute_latent_avg(generator: TriPlaneGenerator, batch_size: int = 1000) -> torch.Tensor:
    """Mean of mapping(z, c_front, ψ=0.7, cutoff 14) over 10 000 z → (1, num_ws, w_dim), float32.

    z are NumPy `RandomState(123).randn(10000, 512)` (float64, cast to float32 by the mapping),
    c_front is the look-at camera at angles (3.14/2, 3.14/2) — literally 3.14, as in the recipe.
    The mean is accumulated in float64 so the result does not depend on `batch_size`.
    """
    device = generator.backbone.mapping.w_avg.device
    z_all = np.random.RandomState(LATENT_AVG_SEED).randn(LATENT_AVG_SAMPLES, generator.config.z_dim)
    camera = latent_avg_camera(device=device)
    total: torch.Tensor | None = None
    for start in range(0, LATENT_AVG_SAMPLES, batch_size):
        z = torch.from_numpy(z_all[start : start + batch_size]).to(device=device, dtype=torch.float32)
        ws = generator.mapping(z, camera.expand(z.shape[0], -1), LATENT_AVG_PSI, LATENT_AVG_CUTOFF)
        batch_sum = ws.double().sum(dim=0, keepdim=True)
        total = batch_sum if total is None else total + batch_sum
    assert total is not None  # LATENT_AVG_SAMPLES > 0: at least one batch
    return (total / LATENT_AVG_SAMPLES).float()
