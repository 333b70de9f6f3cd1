"""Training-step benchmark: steps/s of one AdamW + EMA step at batch 1, random weights.

Each preset is timed twice: at t = 300, where the identity loss renders the one-step x0 prediction
with the frozen generator and back-propagates through it, and at t = 900 (≥ the 600 threshold),
where the step is the diffusion loss alone. The batch is random (costs depend on sizes, not
values), so no data set or encoding is involved.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from ip2n.bench.timing import peak_rss_mb
from ip2n.diffusion import make_schedule
from ip2n.text import tokenize
from ip2n.training.config import ModelConfig, ObjectiveConfig
from ip2n.training.loop import update_ema
from ip2n.training.models import build_dit, build_frozen_networks
from ip2n.training.objective import Batch, batch_losses, draw

# The model sections of configs/paper.yaml, configs/synthetic.yaml and configs/tiny.yaml, with random
# frozen networks; render_resolution is the identity-loss render of the same config.
PRESETS: dict[str, tuple[ModelConfig, int | None]] = {
    "paper": (ModelConfig(weights_dir=None), None),
    "synthetic": (
        ModelConfig(
            dit="tiny",
            dit_overrides={"in_channels": 128, "out_channels": 64, "context_dim": 64},
            text_encoder="small",
            encoder="small",
            encoder_type="WPlusEncoder",
            encoder_overrides={"style_dim": 64},
            identity="small",
            generator_family="synthetic",
            generator="synthetic",
            weights_dir=None,
        ),
        16,
    ),
    "tiny": (
        ModelConfig(
            dit="tiny",
            dit_overrides={"context_dim": 8},
            text_encoder="tiny",
            encoder="small",
            encoder_type="WPlusEncoder",
            identity="small",
            generator="eg3d-small",
            weights_dir=None,
        ),
        16,
    ),
}
IDENTITY_ON_TIMESTEP = 300
IDENTITY_OFF_TIMESTEP = 900


@dataclass(frozen=True)
class StepTiming:
    preset: str
    identity_loss: bool
    steps: int
    seconds_per_step: float
    peak_rss_mb: float

    @property
    def steps_per_second(self) -> float:
        return 1.0 / self.seconds_per_step


def time_training_steps(preset: str, steps: int = 3, device: torch.device | str = "cpu") -> list[StepTiming]:
    """Time `steps` training steps (after one warm-up step) with the identity loss on, then off."""
    if preset not in PRESETS:
        raise ValueError(f"unknown training preset {preset!r}; known: {', '.join(PRESETS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = torch.device(device)
    model_config, render_resolution = PRESETS[preset]
    objective = ObjectiveConfig(render_resolution=render_resolution)
    networks = build_frozen_networks(model_config, device)
    model = build_dit(model_config, device).train()
    ema = build_dit(model_config, device).requires_grad_(False).eval()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    schedule = make_schedule()
    generator = torch.Generator().manual_seed(0)
    latent_shape = (model_config.dit_config().out_channels, 4, 4)  # (w_dim, 4, 4)
    identity = torch.nn.functional.normalize(
        torch.randn(1, model_config.dit_config().identity_dim, generator=generator)
    )
    batch = Batch(
        source_latent=(0.1 * torch.randn(1, *latent_shape, generator=generator)).to(device),
        edited_latent=(0.1 * torch.randn(1, *latent_shape, generator=generator)).to(device),
        source_identity=identity.to(device),
        edited_identity=identity.to(device),
        tokens=tokenize(["make her smile"]).to(device),
    )

    def step(timestep: int) -> None:
        draws = dataclasses.replace(
            draw(1, latent_shape, schedule.num_steps, generator), timesteps=torch.tensor([timestep])
        )
        loss = batch_losses(model, batch, draws, networks, schedule, objective)["loss"].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_ema(ema, model, 0.9999)

    timings = []
    for timestep in (IDENTITY_ON_TIMESTEP, IDENTITY_OFF_TIMESTEP):
        step(timestep)  # warm-up: first-call allocations
        start = time.perf_counter()
        for _ in range(steps):
            step(timestep)
        seconds = (time.perf_counter() - start) / steps
        timings.append(
            StepTiming(
                preset,
                timestep < objective.identity_threshold,
                steps,
                round(seconds, 4),
                round(peak_rss_mb()),
            )
        )
    return timings


def table(timings: list[StepTiming]) -> str:
    lines = [f"{'preset':<10}  {'identity loss':<13}  {'s/step':>8}  {'steps/s':>8}  {'peak RSS MB':>11}"]
    for timing in timings:
        lines.append(
            f"{timing.preset:<10}  {'on (t=300)' if timing.identity_loss else 'off (t=900)':<13}  "
            f"{timing.seconds_per_step:>8.3f}  {timing.steps_per_second:>8.2f}  {timing.peak_rss_mb:>11.0f}"
        )
    return "\n".join(lines)
