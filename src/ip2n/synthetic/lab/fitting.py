"""The training loop shared by the synthetic world's vision and text models.

Each step draws a batch of row indices, asks the caller's `loss_fn` for the loss, and steps every
optimizer (the text tower pairs AdamW with a sparse Adam for its embedding table) under a cosine
learning-rate decay to zero. The caller owns the random generator: the text loop draws its TPR
offsets from the same stream as the rows, so handing the generator in keeps that stream as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

LOG_EVERY = 50  # steps per (step, mean loss) history entry


def fit(
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    size: int,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    description: str,
    progress: bool,
) -> list[tuple[int, float]]:
    """`steps` steps of `loss_fn(rows)` on random rows < `size` → (step, mean loss) every LOG_EVERY steps.

    `model` is put in training mode for the loop and back in eval mode after it.
    """
    schedules = [
        torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
        )
        for optimizer in optimizers
    ]
    history, window = [], []
    model.train()
    with tqdm(range(steps), desc=description, unit="step", disable=not progress) as bar:
        for step in bar:
            rows = torch.randint(size, (batch_size,), generator=generator)
            loss = loss_fn(rows)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for optimizer, schedule in zip(optimizers, schedules):
                optimizer.step()
                schedule.step()
            window.append(float(loss.detach()))
            if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                history.append((step + 1, sum(window) / len(window)))
                bar.set_postfix(loss=f"{history[-1][1]:.4f}")
                window = []
    model.eval()
    return history
