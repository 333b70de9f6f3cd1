"""Forward noising and (partial) DDIM sampling as small pure functions.

A ``ModelFn`` maps a sample ``x`` (N, C, H, W) and the ORIGINAL 1000-step timesteps (N,) int64 to
the network output (N, C, H, W) or (N, 2C, H, W); with 2C channels (learned variance) the first C
are epsilon and the rest are ignored, since DDIM only needs epsilon. Indices ``index`` below are
respaced step indices into a ``DiffusionSchedule``; the functions translate them with
``schedule.timestep_map`` before calling the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ip2n.diffusion.schedule import DiffusionSchedule, coefficient, index_for_strength

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Called after each DDIM step with (step number from 0, the original timestep the model was called
# with, the sample after the step (N, C, H, W)); a tensor it returns replaces the sample, None keeps it.
StepEndFn = Callable[[int, int, torch.Tensor], torch.Tensor | None]

# The official edit loop noises the source to index t_start but starts denoising at t_start − 1.
OFFICIAL_START_OFFSET = -1


def q_sample(
    x0: torch.Tensor, index: torch.Tensor, noise: torch.Tensor, schedule: DiffusionSchedule
) -> torch.Tensor:
    """Noise clean samples x0 (N, C, H, W) to respaced indices ``index`` (N,):
    sqrt(ā)·x0 + sqrt(1 − ā)·noise."""
    return (
        coefficient(schedule.sqrt_alphas_cumprod, index, x0) * x0
        + coefficient(schedule.sqrt_one_minus_alphas_cumprod, index, x0) * noise
    )


def predict_xstart(
    x: torch.Tensor, index: torch.Tensor, eps: torch.Tensor, schedule: DiffusionSchedule
) -> torch.Tensor:
    """One-step estimate of x0 from a sample x (N, C, H, W) at ``index`` (N,) and its predicted noise."""
    return (
        coefficient(schedule.sqrt_recip_alphas_cumprod, index, x) * x
        - coefficient(schedule.sqrt_recipm1_alphas_cumprod, index, x) * eps
    )


def epsilon_from_v(v: torch.Tensor, x: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ε from a v prediction (N, C, H, W) of sample x at noise levels ā (N,):
    ε = sqrt(ā)·v + sqrt(1 − ā)·x."""
    alphas_cumprod = alphas_cumprod.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return alphas_cumprod.sqrt() * v + (1 - alphas_cumprod).sqrt() * x


def v_target(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """What a v model should output for x0 (N, C, H, W) noised with `noise` at levels ā (N,):
    sqrt(ā)·ε − sqrt(1 − ā)·x0."""
    alphas_cumprod = alphas_cumprod.to(device=x0.device, dtype=x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return alphas_cumprod.sqrt() * noise - (1 - alphas_cumprod).sqrt() * x0


def epsilon_from_output(output: torch.Tensor, channels: int) -> torch.Tensor:
    """The epsilon part (N, channels, H, W) of a model output with ``channels`` or 2·``channels`` channels."""
    if output.shape[1] not in (channels, 2 * channels):
        raise ValueError(
            f"model output has {output.shape[1]} channels; expected {channels} or {2 * channels}"
        )
    return output[:, :channels]


def ddim_step(
    x: torch.Tensor,
    index: torch.Tensor,
    eps: torch.Tensor,
    schedule: DiffusionSchedule,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update from ``index`` (N,) to ``index − 1`` without clipping.

    Returns (x_prev, pred_xstart), both (N, C, H, W). ``eta`` = 0 is deterministic; ``eta`` > 0 adds
    ``noise`` (required then) scaled so that ``eta`` = 1 matches the DDPM posterior variance.
    At index 0 ``ā_prev`` = 1, so the step returns pred_xstart itself.
    """
    pred_xstart = predict_xstart(x, index, eps, schedule)
    # Recovering eps from x0 is an algebraic no-op; it is kept because the reference loop does it
    # and it fixes the float32 rounding of the trajectory to the recorded one.
    eps = (coefficient(schedule.sqrt_recip_alphas_cumprod, index, x) * x - pred_xstart) / coefficient(
        schedule.sqrt_recipm1_alphas_cumprod, index, x
    )
    alpha_bar = coefficient(schedule.alphas_cumprod, index, x)
    alpha_bar_prev = coefficient(schedule.alphas_cumprod_prev, index, x)
    x_prev = pred_xstart * alpha_bar_prev.sqrt()
    if eta == 0.0:
        return x_prev + (1 - alpha_bar_prev).sqrt() * eps, pred_xstart
    if noise is None:
        raise ValueError("ddim_step with eta > 0 needs a noise tensor")
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar)).sqrt() * (1 - alpha_bar / alpha_bar_prev).sqrt()
    # sigma vanishes at index 0 (ā_prev = 1), so the last step stays noise-free.
    return x_prev + (1 - alpha_bar_prev - sigma**2).sqrt() * eps + sigma * noise, pred_xstart


@dataclass(frozen=True)
class DecodeResult:
    """Output of a DDIM run of K steps on N samples of shape (C, H, W)."""

    final: torch.Tensor  # (N, C, H, W) the sample after the last step (index 0)
    trajectory: torch.Tensor  # (K, N, C, H, W) sample after each step
    pred_xstart: torch.Tensor  # (K, N, C, H, W) x0 estimate at each step


def ddim_loop(
    model_fn: ModelFn,
    x: torch.Tensor,
    first_index: int,
    schedule: DiffusionSchedule,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    on_step_end: StepEndFn | None = None,
) -> DecodeResult:
    """DDIM from respaced ``first_index`` down to 0 on x (N, C, H, W); the model sees original timesteps.

    ``on_step_end`` (see `StepEndFn`) is called after each step; the sample it returns, if any, is the
    one the loop continues from (and the one the trajectory records). Without it, or when it returns
    None, nothing changes.
    """
    if not 0 <= first_index < schedule.num_steps:
        raise ValueError(f"first_index {first_index} is outside 0…{schedule.num_steps - 1}")
    samples, xstarts = [], []
    for step, step_index in enumerate(range(first_index, -1, -1)):
        index = torch.full((x.shape[0],), step_index, dtype=torch.int64, device=x.device)
        timesteps = schedule.model_timesteps(index)
        eps = epsilon_from_output(model_fn(x, timesteps), x.shape[1])
        noise = None
        if eta > 0.0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x, pred_xstart = ddim_step(x, index, eps, schedule, eta=eta, noise=noise)
        if on_step_end is not None:
            replaced = on_step_end(step, int(timesteps[0]), x)
            if replaced is not None:
                x = _replacement_sample(replaced, x)
        samples.append(x)
        xstarts.append(pred_xstart)
    return DecodeResult(final=x, trajectory=torch.stack(samples), pred_xstart=torch.stack(xstarts))


def _replacement_sample(replaced: object, x: torch.Tensor) -> torch.Tensor:
    """The sample a step-end callback returned, checked to stand in for `x` (same shape, finite)."""
    if not isinstance(replaced, torch.Tensor):
        raise TypeError(f"a step-end callback must return a tensor or None, got {type(replaced).__name__}")
    if replaced.shape != x.shape:
        raise ValueError(
            f"a step-end callback returned latents of shape {tuple(replaced.shape)}; the sampler's are "
            f"{tuple(x.shape)}"
        )
    return replaced.to(device=x.device, dtype=x.dtype)


def decode_timesteps(
    strength: float, schedule: DiffusionSchedule, start_offset: int = OFFICIAL_START_OFFSET
) -> list[int]:
    """The original timesteps `partial_ddim_decode` will show the model, in calling order (280 … 0)."""
    first_index = index_for_strength(strength, schedule.num_steps) + start_offset
    return [int(schedule.model_timesteps(torch.tensor([index]))[0]) for index in range(first_index, -1, -1)]


def partial_ddim_decode(
    model_fn: ModelFn,
    source: torch.Tensor,
    strength: float,
    schedule: DiffusionSchedule,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    start_offset: int = OFFICIAL_START_OFFSET,
    eta: float = 0.0,
    on_step_end: StepEndFn | None = None,
) -> DecodeResult:
    """SDEdit-style edit: noise ``source`` (N, C, H, W) part-way, then denoise it with DDIM.

    The source is noised to respaced index ``t_start = int(strength · S)`` (S = schedule steps) with
    ``noise`` (N, C, H, W), or fresh N(0, 1) noise from ``generator``. Denoising then starts at
    ``t_start + start_offset``. The default −1 is the official behaviour (ddim50, strength 0.3: noise
    to index 15 = timestep 300, then 15 steps from timestep 280), which the released model was tuned
    with. ``start_offset=0`` starts where the noise actually is: the first step then sees the correct
    noise level instead of treating the sample as slightly cleaner than it is, and does one more
    step; results differ slightly from the official ones. ``on_step_end``: see `ddim_loop`.
    """
    t_start = index_for_strength(strength, schedule.num_steps)
    if noise is None:
        noise = torch.randn(source.shape, generator=generator, device=source.device, dtype=source.dtype)
    start = torch.full((source.shape[0],), t_start, dtype=torch.int64, device=source.device)
    x_t = q_sample(source, start, noise, schedule)
    return ddim_loop(
        model_fn, x_t, t_start + start_offset, schedule, eta=eta, generator=generator, on_step_end=on_step_end
    )
