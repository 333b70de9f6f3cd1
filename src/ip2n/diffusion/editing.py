"""The edit loop of InstructPix2NeRF on encoder codes: the respaced schedule of an edit and guided
partial DDIM from the noised source (what `EditPipeline`, training's sample grids and the benchmarks
run).

An edit of strength s on an S-step DDIM schedule noises the packed source to step int(s·S) and
denoises from there, every step guided by the instruction (text scale) and the source (image scale).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ip2n.diffusion.dit import DiT
from ip2n.diffusion.guidance import DualGuidanceDenoiser
from ip2n.diffusion.latent_packing import pack_latent, unpack_latent
from ip2n.diffusion.sampling import StepEndFn, decode_timesteps, partial_ddim_decode
from ip2n.diffusion.schedule import DiffusionSchedule, make_schedule
from ip2n.ops.packed_linear import packed_linears


def edit_schedule(num_inference_steps: int, strength: float) -> DiffusionSchedule:
    """The respaced schedule of an edit, after checking that `strength` leaves at least one step."""
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= 1000:
        raise ValueError(
            f"num_inference_steps must be an integer from 1 to 1000, got {num_inference_steps!r}"
        )
    if not 0.0 < strength < 1.0:
        raise ValueError(f"strength must lie strictly between 0 and 1 (the paper uses 0.3), got {strength}")
    # The official loop noises to index int(s·S) and denoises from one below it.
    if int(strength * num_inference_steps) < 1:
        raise ValueError(
            f"strength {strength} with {num_inference_steps} steps leaves no denoising step "
            f"(int({strength} × {num_inference_steps}) = 0); raise the strength or the number of steps"
        )
    try:
        return make_schedule(f"ddim{num_inference_steps}")
    except ValueError:
        raise ValueError(
            f"{num_inference_steps} steps cannot be spaced evenly over the 1000 training timesteps; "
            "choose e.g. 10, 20, 25, 50 or 100"
        ) from None


def edit_codes(
    dit: DiT,
    source_codes: torch.Tensor,
    text_context: torch.Tensor,
    null_context: torch.Tensor,
    schedule: DiffusionSchedule,
    *,
    strength: float,
    text_scale: float,
    image_scale: float,
    noise: torch.Tensor,
    identity: torch.Tensor | None = None,
    source_conditioning: bool = True,
    on_step: Callable[[], None] | None = None,
    on_step_end: StepEndFn | None = None,
) -> torch.Tensor:
    """Guided partial DDIM on encoder codes (the official edit loop).

    source_codes (N, 14, C): offsets from w_avg; text_context (N, L, D) and null_context (L, D) or
    (N, L, D): the prompt's and the empty prompt's embeddings; noise (N, C, 4, 4): the noise the
    packed source is diffused with; identity (N, identity_dim) or None. `source_conditioning`
    False is the paper's img2img baseline: the source is only the starting point, never a
    condition (its "dropped" zeros are passed), so image guidance has no effect. `on_step` is
    called after each denoising step (progress); `on_step_end(step, timestep, latents)` after each
    DDIM update with the packed sample (N, C, 4, 4) in the DiT's units, which a tensor it returns
    replaces (`ip2n.diffusion.sampling.ddim_loop`).
    Returns the edited codes (N, 14, C), still relative to w_avg.
    """
    scale = dit.config.latent_scale
    source = pack_latent(source_codes) * scale  # (N, C, 4, 4) in the DiT's units
    condition = source if source_conditioning else torch.zeros_like(source)
    denoiser = DualGuidanceDenoiser(
        dit,
        condition,
        text_context,
        null_context,
        text_scale,
        image_scale,
        identity,
        timesteps=decode_timesteps(strength, schedule),
    )
    # Every step multiplies the same weights with a few rows (branches × samples × tokens): packing
    # them once for the loop saves about a quarter of the DiT's time on a CPU (`ip2n.ops.packed_linear`).
    rows = len(denoiser.branches) * source.shape[0] * dit.config.grid_size**2
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = denoiser
    if on_step is not None:

        def model_fn(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            output = denoiser(x, timesteps)
            on_step()
            return output

    with packed_linears(dit.per_step_linears(), rows):
        decoded = partial_ddim_decode(
            model_fn, source, strength, schedule, noise=noise, on_step_end=on_step_end
        )
    return unpack_latent(decoded.final / scale)
