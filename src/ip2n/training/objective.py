"""The training objective for one batch (see docs/method.md).

Per sample: epsilon MSE + learned-variance bound (`ip2n.diffusion.training_losses`), with the
official condition dropout, label dropout and token position randomization (TPR) applied first,
plus λ_id · (1 − cos(F(render), F(edited image))) for samples with t < threshold, where the render
is EG3D's frontal view of the one-step x0 prediction and F the frozen ArcFace network.

All random draws come from one `torch.Generator` in a fixed order, for the whole (global) batch,
so that any slice of the batch (a DDP rank) sees the draws the single-process run would give it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.diffusion import (
    DiffusionSchedule,
    DiT,
    DiTConfig,
    condition_dropout,
    dropout_draws,
    label_dropout,
    training_losses,
    unpack_latent,
)
from ip2n.encoding.preprocess import ENCODER_RESOLUTION
from ip2n.rendering.cameras import frontal_camera
from ip2n.text import TPR_MAX_OFFSET, randomize_token_positions, tokenize
from ip2n.training.config import ObjectiveConfig
from ip2n.training.models import FrozenNetworks

REAL_LABEL = 0  # the single real class; the official training always passes y = 0


@dataclass(frozen=True)
class Batch:
    """One batch of training samples (tensors on the training device)."""

    source_latent: torch.Tensor  # (N, 512, 4, 4) packed W+ offsets
    edited_latent: torch.Tensor  # (N, 512, 4, 4)
    source_identity: torch.Tensor  # (N, 512) unit ArcFace features of the source image (condition)
    edited_identity: (
        torch.Tensor
    )  # (N, 512) unit ArcFace features of the edited image (identity-loss target; zeros: none)
    tokens: torch.Tensor  # (N, 77) int64 instruction token ids (before TPR)

    def rows(self, selection: slice) -> Batch:
        return Batch(*(getattr(self, name)[selection] for name in self.__dataclass_fields__))


@dataclass(frozen=True)
class Draws:
    """Every random choice of one training step, (N,) or (N, ...) for the global batch."""

    timesteps: torch.Tensor  # (N,) int64 in [0, num_steps)
    noise: torch.Tensor  # (N, 512, 4, 4)
    dropout: torch.Tensor  # (N,) uniform, consumed by condition_dropout
    label: torch.Tensor  # (N,) uniform, consumed by label_dropout
    tpr_offsets: torch.Tensor  # (N,) raw TPR offsets of the instruction tokens
    empty_tpr_offsets: torch.Tensor  # (N,) raw TPR offsets of the empty prompt that replaces dropped text

    def rows(self, selection: slice) -> Draws:
        return Draws(*(getattr(self, name)[selection] for name in self.__dataclass_fields__))


def draw(
    batch_size: int,
    latent_shape: tuple[int, ...],
    num_steps: int,
    generator: torch.Generator,
    max_tpr_offset: int = TPR_MAX_OFFSET,
) -> Draws:
    """The step's random choices, drawn in a fixed order from `generator` (CPU)."""
    return Draws(
        timesteps=torch.randint(0, num_steps, (batch_size,), generator=generator),
        noise=torch.randn((batch_size, *latent_shape), generator=generator),
        dropout=dropout_draws(batch_size, generator),
        label=torch.rand(batch_size, generator=generator),
        tpr_offsets=torch.randint(0, max_tpr_offset, (batch_size,), generator=generator),
        empty_tpr_offsets=torch.randint(0, max_tpr_offset, (batch_size,), generator=generator),
    )


def conditioned_tokens(
    tokens: torch.Tensor, draws: Draws, config: ObjectiveConfig, *, training: bool
) -> torch.Tensor:
    """Instruction tokens (N, 77) after TPR and text dropout, ready for the text encoder.

    TPR shifts both the instruction and the empty prompt (the official text encoder shifts every
    prompt it sees). The dropout's text decision is taken on token ids rather than on the encoded
    context: the encoder treats rows independently, so the result is the same and each row is
    encoded once.
    """
    tpr = training and config.token_position_randomization
    empty = tokenize([""]).to(tokens.device).expand_as(tokens)
    tokens = randomize_token_positions(tokens, training=tpr, offsets=draws.tpr_offsets if tpr else None)
    empty = randomize_token_positions(empty, training=tpr, offsets=draws.empty_tpr_offsets if tpr else None)
    if not (training and config.condition_dropout):
        return tokens
    # condition_dropout works on (N, L, D) contexts; token ids are a context of width 1 here.
    dropped = condition_dropout(
        draws.dropout.to(tokens.device),
        tokens[..., None],
        empty[..., None],
        torch.zeros(tokens.shape[0], 1, 1, 1, device=tokens.device),
    )
    return dropped.context[..., 0]


def identity_loss(
    pred_xstart: torch.Tensor,
    target_identity: torch.Tensor,
    networks: FrozenNetworks,
    render_resolution: int | None,
) -> torch.Tensor:
    """1 − cos(F(frontal render of x0), target) per sample (N,), differentiable w.r.t. pred_xstart.

    pred_xstart (N, 512, 4, 4) packed offsets; target_identity (N, 512) unit vectors.
    """
    ws = unpack_latent(pred_xstart, networks.latent_avg.to(pred_xstart.dtype))  # (N, 14, 512) absolute W+
    cameras = frontal_camera(device=pred_xstart.device).expand(ws.shape[0], -1)  # (N, 25)
    image = networks.generator.synthesis(ws, cameras, neural_rendering_resolution=render_resolution)["image"]
    image = F.interpolate(
        image, size=ENCODER_RESOLUTION, mode="bilinear", align_corners=False, antialias=True
    )
    features = networks.identity(image)  # (N, 512) unit vectors
    return 1.0 - (features * target_identity).sum(dim=1)


def batch_losses(
    dit: nn.Module,
    batch: Batch,
    draws: Draws,
    networks: FrozenNetworks,
    schedule: DiffusionSchedule,
    config: ObjectiveConfig,
    *,
    training: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample loss terms (N,): `loss` (the total), `mse`, `vb`, `identity` (0 where t ≥ threshold).

    `dit` is the DiT (or its DDP wrapper). `training` enables TPR and condition/label dropout; the
    objective terms themselves are the same either way. `autocast_dtype` (e.g. bfloat16) runs the
    DiT forward under autocast; the loss terms are always computed in float32.
    """
    device = batch.edited_latent.device
    timesteps = draws.timesteps.to(device)
    dropout = draws.dropout.to(device)
    tokens = conditioned_tokens(batch.tokens, draws, config, training=training)
    with torch.no_grad():
        context = networks.text_encoder(tokens)  # (N, 77, D)

    # The DiT diffuses offsets times its latent_scale (1 for the official model).
    scale = _dit_config(dit).latent_scale
    source_latent = batch.source_latent * scale
    identity_keep = None
    labels = torch.full_like(timesteps, REAL_LABEL)
    if training and config.condition_dropout:
        dropped = condition_dropout(
            dropout, context, context, source_latent
        )  # text already handled on tokens
        source_latent, identity_keep = dropped.source_latent, dropped.identity_keep
        labels = label_dropout(labels, draws.label.to(device), null_label=_null_label(dit))
    if not config.source_conditioning:  # img2img ablation: the source is never seen (as if always dropped)
        source_latent = torch.zeros_like(source_latent)
    if not config.identity_conditioning:  # ablation: the identity embedding is always dropped
        identity_keep = torch.zeros_like(timesteps, dtype=source_latent.dtype)

    def model_fn(x_t: torch.Tensor, model_timesteps: torch.Tensor) -> torch.Tensor:
        with torch.autocast(
            device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
        ):
            output = dit(
                torch.cat([x_t, source_latent], dim=1),
                model_timesteps,
                labels,
                context,
                batch.source_identity,
                identity_keep,
            )
        return output.float()

    terms = training_losses(
        model_fn,
        batch.edited_latent * scale,
        timesteps,
        draws.noise.to(device),
        schedule,
        prediction_type=_dit_config(dit).prediction_type,
    )
    identity = torch.zeros_like(terms["loss"])
    selected = schedule.model_timesteps(timesteps) < config.identity_threshold
    selected &= (
        batch.edited_identity.abs().sum(dim=1) > 0
    )  # all-zero features: this row has no identity target
    if config.identity_weight > 0 and bool(selected.any()):
        rows = selected.nonzero().squeeze(1)[: config.identity_max_samples]
        per_sample = identity_loss(
            terms["pred_xstart"][rows].float() / scale,
            batch.edited_identity[rows],
            networks,
            config.render_resolution,
        )
        identity = identity.index_put((rows,), per_sample.to(identity.dtype))
    loss = terms["loss"] + config.identity_weight * identity
    return {"loss": loss, "mse": terms["mse"], "vb": terms["vb"], "identity": identity}


def _dit_config(dit: nn.Module) -> DiTConfig:
    """The DiT's config, through a DDP wrapper if there is one."""
    return cast(DiT, dit.module if hasattr(dit, "module") else dit).config


def _null_label(dit: nn.Module) -> int:
    return _dit_config(dit).num_classes
