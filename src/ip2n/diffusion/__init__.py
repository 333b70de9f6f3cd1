"""Diffusion in packed W+ space: the conditional DiT, its noise schedule, guided partial DDIM
sampling, dual guidance and the training objective. See docs/latent_layout.md."""

from ip2n.diffusion.dit import DIT_PRESETS, CrossAttentionCache, DiT, DiTConfig, dit_config
from ip2n.diffusion.guidance import (
    DualGuidanceDenoiser,
    dual_guidance,
    forward_dual_guidance,
    guide_branch_outputs,
)
from ip2n.diffusion.latent_packing import pack_latent, unpack_latent
from ip2n.diffusion.losses import condition_dropout, dropout_draws, label_dropout, training_losses
from ip2n.diffusion.sampling import DecodeResult, ddim_loop, ddim_step, partial_ddim_decode, q_sample
from ip2n.diffusion.schedule import DiffusionSchedule, make_schedule, space_timesteps

__all__ = [
    "DIT_PRESETS",
    "CrossAttentionCache",
    "DecodeResult",
    "DiT",
    "DiTConfig",
    "DiffusionSchedule",
    "DualGuidanceDenoiser",
    "condition_dropout",
    "ddim_loop",
    "ddim_step",
    "dit_config",
    "dropout_draws",
    "dual_guidance",
    "forward_dual_guidance",
    "guide_branch_outputs",
    "label_dropout",
    "make_schedule",
    "pack_latent",
    "partial_ddim_decode",
    "q_sample",
    "space_timesteps",
    "training_losses",
    "unpack_latent",
]
