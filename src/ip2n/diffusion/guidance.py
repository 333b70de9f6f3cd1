"""Dual classifier-free guidance (text and image) over three batched conditionings.

The three branches, in this batch order (each N samples):
1. text + image:  the instruction's context, the source latent, the identity features;
2. image only:    the empty-prompt context, the source latent, the identity features;
3. unconditional: the empty-prompt context, a zero source latent, zero identity FEATURES.

Guided epsilon: ``e = e_u + s_T·(e_ti − e_i) + s_I·(e_i − e_u)``. Expanded, that is
``s_T·e_ti + (s_I − s_T)·e_i + (1 − s_I)·e_u``: at the paper's image scale 1 the unconditional
branch has weight zero, so the sampling denoiser (`DualGuidanceDenoiser`) does not run it, which
takes a third off the DiT's work per step (likewise the image-only branch when s_I = s_T).

The unconditional identity follows the official inference: zero features go through the identity
MLP, whose output is then its bias path, not zero. Training's condition dropout instead zeroes the
identity *embedding* (``DiT.forward(identity_keep=0)``). The two "no identity" notions differ; the
released weights were only ever guided the inference way. Without identity features (the official
default, ``--id-cond`` off) no branch gets an identity term at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ip2n.diffusion.dit import ConditioningCache, CrossAttentionCache, DiT
from ip2n.diffusion.sampling import epsilon_from_v
from ip2n.diffusion.schedule import make_schedule

NUM_BRANCHES = 3
# The official inference passes label 1 (the dropped-label row for num_classes = 1) to every branch.
OFFICIAL_LABEL = 1


def dual_guidance(
    eps_text_image: torch.Tensor,
    eps_image: torch.Tensor,
    eps_uncond: torch.Tensor,
    text_scale: float,
    image_scale: float,
) -> torch.Tensor:
    """Combine the three branch epsilons (same shapes) into the guided epsilon."""
    return eps_uncond + text_scale * (eps_text_image - eps_image) + image_scale * (eps_image - eps_uncond)


def needed_branches(text_scale: float, image_scale: float) -> tuple[int, ...]:
    """Indices (0 text + image, 1 image only, 2 unconditional) of the branches the guided epsilon
    depends on. The text + image branch is always run: its variance channels are the output's."""
    weights = (text_scale, image_scale - text_scale, 1.0 - image_scale)
    return (0,) + tuple(branch for branch in (1, 2) if weights[branch] != 0.0)


def guide_branch_outputs(
    raw: torch.Tensor, text_scale: float, image_scale: float, eps_channels: int
) -> torch.Tensor:
    """Raw outputs (3N, C_out, H, W) of the three branches → the official guided layout.

    Channels [0, eps_channels) of all three thirds become the guided epsilon; the remaining
    (learned-variance) channels keep each branch's own values.
    """
    eps, rest = raw[:, :eps_channels], raw[:, eps_channels:]
    eps_text_image, eps_image, eps_uncond = eps.chunk(NUM_BRANCHES)  # each (N, eps_channels, H, W)
    guided = dual_guidance(eps_text_image, eps_image, eps_uncond, text_scale, image_scale)
    return torch.cat([guided.repeat(NUM_BRANCHES, 1, 1, 1), rest], dim=1)


def forward_dual_guidance(
    model: DiT,
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    context: torch.Tensor | CrossAttentionCache,
    text_scale: float,
    image_scale: float,
    identity: torch.Tensor | None = None,
    conditioning: ConditioningCache | None = None,
) -> torch.Tensor:
    """One guided DiT call on an already-assembled three-branch batch (the official layout).

    x (3N, in_channels, H, W) = noisy latent ‖ per-branch source; t, y (3N,); context (3N, L, D) or
    its ``CrossAttentionCache``; identity (3N, identity_dim) or None; `conditioning`, if given, the
    precomputed adaLN modulations of exactly these (t, y, identity). Returns (3N, C_out, H, W) as
    ``guide_branch_outputs`` lays it out.
    """
    raw = model(x, t, y, context, identity, conditioning=conditioning)
    return guide_branch_outputs(raw, text_scale, image_scale, model.config.out_channels)


class DualGuidanceDenoiser:
    """A sampling ``ModelFn`` that runs the guidance branches for fixed edit conditions.

    Built once per edit: it stacks the branch conditions and projects the text contexts to
    cross-attention keys/values up front, so each denoising step is a single DiT call on up to 3N
    samples. Branches whose weight in the guided epsilon is zero (`needed_branches`) are left out:
    with the default image scale 1 that is the unconditional one, i.e. 2N samples per step.

    - source_latent (N, C, H, W): packed source codes.
    - text_context (N, L, D): the instruction embedding; null_context (N, L, D) or (L, D): the
      empty-prompt embedding used by the image-only and unconditional branches.
    - identity (N, identity_dim) or None.
    - timesteps: the original timesteps the sampler will call it with (`decode_timesteps`); their
      adaLN modulations are then computed up front in one batched pass. Other timesteps still work.
    Calling it with x (N, C, H, W) and original timesteps (N,) returns (N, 2C, H, W): the guided
    epsilon, then the text+image branch's variance channels.
    """

    def __init__(
        self,
        model: DiT,
        source_latent: torch.Tensor,
        text_context: torch.Tensor,
        null_context: torch.Tensor,
        text_scale: float,
        image_scale: float,
        identity: torch.Tensor | None = None,
        label: int = OFFICIAL_LABEL,
        timesteps: Sequence[int] | None = None,
    ):
        batch = source_latent.shape[0]
        null_context = null_context.expand_as(text_context)
        self.model = model
        self.text_scale = text_scale
        self.image_scale = image_scale
        self.branches = needed_branches(text_scale, image_scale)

        def stacked(
            text_image: torch.Tensor, image: torch.Tensor, unconditional: torch.Tensor
        ) -> torch.Tensor:
            per_branch = (text_image, image, unconditional)
            return torch.cat([per_branch[branch] for branch in self.branches])

        self.branch_sources = stacked(
            source_latent, source_latent, torch.zeros_like(source_latent)
        )  # (runs·N, C, H, W)
        self.context_cache = model.precompute_context(stacked(text_context, null_context, null_context))
        self.labels = torch.full(
            (len(self.branches) * batch,), label, dtype=torch.int64, device=source_latent.device
        )
        self.identity = None if identity is None else stacked(identity, identity, torch.zeros_like(identity))
        self.conditioning_by_timestep: dict[int, ConditioningCache] = {}
        # ā by original timestep (respacing keeps these values), to turn v predictions into epsilon.
        self.base_alphas_cumprod = (
            make_schedule().alphas_cumprod if model.config.prediction_type == "v" else None
        )
        if timesteps:
            self._precompute_conditioning(list(timesteps))

    def _precompute_conditioning(self, timesteps: list[int]) -> None:
        """adaLN modulations of all steps at once: one (steps·3N)-row product per block."""
        rows = self.labels.shape[0]
        t_all = torch.tensor(timesteps, dtype=torch.int64, device=self.labels.device).repeat_interleave(rows)
        identity_all = None if self.identity is None else self.identity.repeat(len(timesteps), 1)
        cache = self.model.precompute_conditioning(t_all, self.labels.repeat(len(timesteps)), identity_all)
        for step, timestep in enumerate(timesteps):
            self.conditioning_by_timestep[timestep] = cache.rows(slice(step * rows, (step + 1) * rows))

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        runs = len(self.branches)
        branch_x = torch.cat([x.repeat(runs, 1, 1, 1), self.branch_sources], dim=1)  # (runs·N, 2C, H, W)
        timestep = int(t[0])
        conditioning = self.conditioning_by_timestep.get(timestep) if bool((t == timestep).all()) else None
        raw = self.model(
            branch_x,
            t.repeat(runs),
            self.labels,
            self.context_cache,
            self.identity,
            conditioning=conditioning,
        )
        eps_channels = self.model.config.out_channels
        eps = dict(zip(self.branches, raw[:, :eps_channels].chunk(runs), strict=True))
        # A left-out branch has weight zero, so any stand-in cancels exactly; standing in the branch it
        # would be subtracted from makes its terms vanish without rounding (e.g. s_I = 1: e_u := e_i).
        eps.setdefault(1, eps.get(2, eps[0]))
        eps.setdefault(2, eps[1])
        guided_eps = dual_guidance(eps[0], eps[1], eps[2], self.text_scale, self.image_scale)
        guided = torch.cat(
            [guided_eps, raw[: x.shape[0], eps_channels:]], dim=1
        )  # text + image branch's variance
        if self.model.config.prediction_type == "v":  # the sampler works with epsilon
            channels = x.shape[1]
            assert self.base_alphas_cumprod is not None  # set in __init__ for v-prediction models
            alphas_cumprod = self.base_alphas_cumprod[t.cpu()]
            guided = torch.cat(
                [epsilon_from_v(guided[:, :channels], x, alphas_cumprod), guided[:, channels:]], dim=1
            )
        return guided
