"""Training objective of the conditional DiT, and the training-time condition dropout.

Loss (as in ADM / DiT with a learned variance range): per sample,

    loss = mean((noise − eps_pred)²) + vb,

where ``vb`` is the variational-bound term in bits per dimension that trains only the variance
channels: the predicted mean is taken from a stop-gradient copy of eps_pred, so the MSE alone
trains epsilon. At t = 0 the bound term is the discretized Gaussian negative log-likelihood of x0,
elsewhere the KL between the true posterior q(x_{t-1} | x_t, x0) and the model's p(x_{t-1} | x_t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ip2n.diffusion.sampling import ModelFn, epsilon_from_v, predict_xstart, q_sample, v_target
from ip2n.diffusion.schedule import DiffusionSchedule, coefficient

# Official per-sample dropout bands of one uniform draw r (training only).
TEXT_ONLY_DROP = 0.05  # r < 0.05: the instruction is replaced by the empty prompt
TEXT_AND_IMAGE_DROP = 0.10  # 0.05 ≤ r < 0.10: instruction, source latent and identity dropped
IMAGE_ONLY_DROP = 0.15  # 0.10 ≤ r < 0.15: source latent and identity dropped, instruction kept
LABEL_DROP = 0.1  # the label embedder's own dropout rate (class_dropout_prob)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch axis: (N, ...) → (N,)."""
    return x.flatten(1).mean(dim=1)


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF via the tanh approximation (the one ADM's bound uses)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Elementwise log-probability (nats) of x under a Gaussian discretized into 256 bins on [-1, 1].

    The edge bins extend to ±infinity. Inherited from image diffusion: the latents are not really
    8-bit data, but this is the t = 0 term the released model was trained with.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def q_posterior_mean(
    x_start: torch.Tensor, x_t: torch.Tensor, index: torch.Tensor, schedule: DiffusionSchedule
) -> torch.Tensor:
    """Mean of q(x_{t-1} | x_t, x0), (N, C, H, W)."""
    return (
        coefficient(schedule.posterior_mean_coef1, index, x_t) * x_start
        + coefficient(schedule.posterior_mean_coef2, index, x_t) * x_t
    )


def learned_range_log_variance(
    variance_values: torch.Tensor, index: torch.Tensor, schedule: DiffusionSchedule
) -> torch.Tensor:
    """Model log-variance from its variance channels v ∈ [-1, 1] (LEARNED_RANGE).

    Interpolates in log space between the posterior variance (v = -1) and beta (v = 1).
    """
    min_log = coefficient(schedule.posterior_log_variance_clipped, index, variance_values)
    max_log = coefficient(schedule.betas.log(), index, variance_values)
    fraction = (variance_values + 1) / 2
    return fraction * max_log + (1 - fraction) * min_log


def variational_bound_terms(
    eps: torch.Tensor,
    variance_values: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    index: torch.Tensor,
    schedule: DiffusionSchedule,
) -> torch.Tensor:
    """Per-sample variational-bound term (N,) in bits per dimension, ≥ 0."""
    true_mean = q_posterior_mean(x_start, x_t, index, schedule)
    true_log_variance = coefficient(schedule.posterior_log_variance_clipped, index, x_t)
    model_mean = q_posterior_mean(predict_xstart(x_t, index, eps, schedule), x_t, index, schedule)
    model_log_variance = learned_range_log_variance(variance_values, index, schedule)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)) / math.log(2.0)
    decoder_nll = -mean_flat(
        discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_variance)
    ) / math.log(2.0)
    return torch.where(index == 0, decoder_nll, kl)


def training_losses(
    model_fn: ModelFn,
    x_start: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    schedule: DiffusionSchedule,
    prediction_type: str = "epsilon",
    **conditions: object,
) -> dict[str, torch.Tensor]:
    """Loss terms for clean latents x_start (N, C, H, W) at step indices t (N,) with noise (N, C, H, W).

    ``model_fn(x_t, timesteps, **conditions)`` must return (N, 2C, H, W) (prediction ‖ variance
    values); it receives ``schedule.timestep_map[t]`` (identical to t for the 1000-step training
    schedule). The prediction is epsilon or, with ``prediction_type="v"``, v; the MSE is taken on
    what the model predicts. Returns per-sample (N,) ``loss`` = ``mse`` + ``vb``, and
    ``pred_xstart`` (N, C, H, W), the one-step x0 estimate with gradients (the identity loss renders it).
    """
    x_t = q_sample(x_start, t, noise, schedule)
    output = model_fn(x_t, schedule.model_timesteps(t), **conditions)
    channels = x_start.shape[1]
    if output.shape[1] != 2 * channels:
        raise ValueError(
            f"training needs prediction and variance channels ({2 * channels}), got {output.shape[1]}"
        )
    prediction, variance_values = output[:, :channels], output[:, channels:]
    if prediction_type == "v":
        alphas_cumprod = schedule.alphas_cumprod[t.cpu()]
        target, eps = (
            v_target(x_start, noise, alphas_cumprod),
            epsilon_from_v(prediction, x_t, alphas_cumprod),
        )
    elif prediction_type == "epsilon":
        target, eps = noise, prediction
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; use 'epsilon' or 'v'")
    # The bound term must only train the variance: its mean comes from a frozen copy of epsilon.
    vb = variational_bound_terms(eps.detach(), variance_values, x_start, x_t, t, schedule)
    mse = mean_flat((target - prediction) ** 2)
    return {"loss": mse + vb, "mse": mse, "vb": vb, "pred_xstart": predict_xstart(x_t, t, eps, schedule)}


@dataclass(frozen=True)
class DroppedConditions:
    """Conditions after training-time dropout, per sample."""

    context: torch.Tensor  # (N, L, D) instruction or empty-prompt embedding
    source_latent: torch.Tensor  # (N, C, H, W) source latent or zeros
    identity_keep: torch.Tensor  # (N,) 1.0 keeps the identity embedding, 0.0 drops it


def dropout_draws(
    batch_size: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """The per-sample uniform draws r (N,) in [0, 1) that ``condition_dropout`` consumes."""
    return torch.rand(batch_size, generator=generator, device=device)


def condition_dropout(
    r: torch.Tensor,
    context: torch.Tensor,
    empty_context: torch.Tensor,
    source_latent: torch.Tensor,
) -> DroppedConditions:
    """The official training dropout of text and image conditions (training only).

    One draw r (N,) per sample (``dropout_draws``): r < 0.05 → the instruction context (N, L, D)
    becomes ``empty_context`` ((L, D) or (N, L, D)); 0.05 ≤ r < 0.10 → instruction dropped AND the
    source latent (N, C, H, W) zeroed AND the identity embedding multiplied by 0;
    0.10 ≤ r < 0.15 → source latent and identity dropped, instruction kept; otherwise all kept.
    Pass ``identity_keep`` to ``DiT.forward``: training drops the identity *embedding*, whereas
    inference guidance feeds zero identity *features* (see ``ip2n.diffusion.guidance``).
    """
    drop_text = r < TEXT_AND_IMAGE_DROP
    drop_image = (r >= TEXT_ONLY_DROP) & (r < IMAGE_ONLY_DROP)
    empty_context = empty_context.expand_as(context)
    return DroppedConditions(
        context=torch.where(drop_text.reshape(-1, 1, 1), empty_context, context),
        source_latent=torch.where(
            drop_image.reshape(-1, 1, 1, 1), torch.zeros_like(source_latent), source_latent
        ),
        identity_keep=(~drop_image).to(source_latent.dtype),
    )


def label_dropout(
    labels: torch.Tensor, r: torch.Tensor, null_label: int, probability: float = LABEL_DROP
) -> torch.Tensor:
    """Training-time label dropout: labels (N,) become ``null_label`` (= num_classes) where
    r (N,) < probability.

    The official training draws r for this independently of ``condition_dropout``'s draws.
    """
    return torch.where(r < probability, torch.full_like(labels, null_label), labels)
