"""The Gaussian diffusion schedule: 1000 linear betas, optionally respaced to fewer steps.

All tables are float64 (as the official code keeps them); ``coefficient`` casts a looked-up value to
the sample's dtype right before use, which is where the official code rounds to float32 too.

Respacing keeps a subset of the 1000 training timesteps ``timestep_map`` and recomputes the betas
so that the respaced ``alphas_cumprod`` are the original values at the kept timesteps. Samplers
index the respaced tables with a *respaced index* ``i`` but must show the model the original
timestep ``timestep_map[i]``: the network was trained on the 1000-step scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def linear_betas(num_steps: int = NUM_TRAIN_TIMESTEPS, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    """(num_steps,) float64 betas evenly spaced from ``start`` to ``end``."""
    return np.linspace(start, end, num_steps, dtype=np.float64)


def space_timesteps(num_steps: int, respacing: str) -> list[int]:
    """Sorted original timesteps kept by a respacing string.

    - ``""``: keep all ``num_steps``.
    - ``"ddimK"``: the smallest integer stride giving exactly K steps from 0 (``ddim50`` → 0, 20, …, 980).
    - ``"K"`` or ``"K1,K2,…"``: split the range into equal sections and take K_j evenly spread
      (rounded) timesteps from section j.
    """
    if respacing == "":
        return list(range(num_steps))
    if respacing.startswith("ddim"):
        count = int(respacing[len("ddim") :])
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == count:
                return list(range(0, num_steps, stride))
        raise ValueError(f"cannot take exactly {count} evenly strided steps out of {num_steps}")
    section_counts = [int(part) for part in respacing.split(",")]
    size_per, extra = divmod(num_steps, len(section_counts))
    kept: list[int] = []
    start = 0
    for section, count in enumerate(section_counts):
        size = size_per + (1 if section < extra else 0)
        if count > size:
            raise ValueError(f"cannot take {count} steps from a section of {size} steps")
        spacing = 1.0 if count <= 1 else (size - 1) / (count - 1)
        # Accumulating the float position (rather than k · spacing) matches the reference rounding.
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += spacing
        start += size
    return sorted(set(kept))


@dataclass(frozen=True)
class DiffusionSchedule:
    """Noise schedule tables, one entry per (respaced) step index. float64 CPU tensors.

    ``alphas_cumprod_prev`` is 1 at index 0; ``timestep_map`` (int64) holds the original timestep
    of each index. Build with ``make_schedule``.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor  # variance of q(x_{i-1} | x_i, x_0); 0 at index 0
    posterior_log_variance_clipped: torch.Tensor  # its log, index 0 copied from index 1 (log 0 = -inf)
    posterior_mean_coef1: torch.Tensor  # weight of x_0 in the posterior mean
    posterior_mean_coef2: torch.Tensor  # weight of x_i in the posterior mean
    timestep_map: torch.Tensor

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]

    def model_timesteps(self, index: torch.Tensor) -> torch.Tensor:
        """Respaced indices (N,) → the original 1000-step timesteps (N,) int64 the model expects."""
        return self.timestep_map.to(index.device)[index]


def make_schedule(respacing: str = "", num_train_steps: int = NUM_TRAIN_TIMESTEPS) -> DiffusionSchedule:
    """The linear-beta schedule, respaced by ``respacing`` (see ``space_timesteps``; "" = training).

    The tables are computed with NumPy in float64 on purpose: its sqrt/log/division are the ones the
    official tables were made with (torch's float64 sqrt differs in the last bit on some entries).
    """
    base_alphas_cumprod = np.cumprod(1.0 - linear_betas(num_train_steps))
    kept = space_timesteps(num_train_steps, respacing)
    kept_alphas_cumprod = base_alphas_cumprod[kept]
    # Respaced betas are chosen so that their cumulative product lands on the kept original values.
    betas = 1.0 - kept_alphas_cumprod / np.append(1.0, kept_alphas_cumprod[:-1])
    alphas_cumprod = np.cumprod(1.0 - betas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    tables = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1.0),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.append(posterior_variance[1], posterior_variance[1:])),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
    }
    return DiffusionSchedule(
        **{name: torch.from_numpy(table) for name, table in tables.items()},
        timestep_map=torch.tensor(kept, dtype=torch.int64),
    )


def coefficient(table: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Look up ``table[index]`` per sample and shape it to broadcast against ``like`` (N, ...).

    The float64 value is rounded to ``like``'s dtype *before* any arithmetic with the sample, which
    is the official order of operations (and what the fixtures encode).
    """
    values = table[index.cpu()].to(device=like.device, dtype=like.dtype)  # (N,)
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def index_for_strength(strength: float, num_steps: int) -> int:
    """Respaced index an edit of ``strength`` noises the source to: ``int(strength · num_steps)``.

    ``strength`` must leave the index inside the table, i.e. 0 ≤ strength < 1 (0.3 of ddim50 → 15).
    """
    index = int(strength * num_steps)
    if not 0 <= index < num_steps:
        raise ValueError(
            f"strength {strength} gives noise index {index}, outside 0…{num_steps - 1}; use 0 ≤ strength < 1"
        )
    return index
