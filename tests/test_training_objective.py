"""The training objective (docs/method.md): dropout categories, TPR in training only, the identity loss."""

import pytest
import torch
from torch import nn

from helpers import randomize_
from helpers.training_data import TINY_MODELS
from ip2n.diffusion import DiT, make_schedule, training_losses
from ip2n.text import randomize_token_positions, tokenize
from ip2n.training.config import ObjectiveConfig
from ip2n.training.models import build_frozen_networks
from ip2n.training.objective import Batch, Draws, batch_losses, identity_loss

SCHEDULE = make_schedule()


@pytest.fixture(scope="module")
def networks():
    return build_frozen_networks(TINY_MODELS, torch.device("cpu"))


def make_batch(n: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    identity = torch.nn.functional.normalize(torch.randn(n, 512, generator=g), dim=1)
    return Batch(
        source_latent=torch.randn(n, 512, 4, 4, generator=g),
        edited_latent=torch.randn(n, 512, 4, 4, generator=g),
        source_identity=identity,
        edited_identity=torch.nn.functional.normalize(torch.randn(n, 512, generator=g), dim=1),
        tokens=tokenize(["make her smile", "add glasses", "turn the hair blond", "make him older"][:n]),
    )


def make_draws(n: int, timesteps, dropout, label, seed: int = 1) -> Draws:
    g = torch.Generator().manual_seed(seed)
    return Draws(
        torch.tensor(timesteps),
        torch.randn(n, 512, 4, 4, generator=g),
        torch.tensor(dropout),
        torch.tensor(label),
        torch.tensor([3, 0, 24, 7][:n]),
        torch.tensor([5, 1, 0, 20][:n]),
    )


class SpyDiT(nn.Module):
    """Records what the objective feeds the DiT; outputs zeros (with a gradient path)."""

    def __init__(self):
        super().__init__()
        self.config = TINY_MODELS.dit_config()  # the objective reads num_classes (the dropped-label row)
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, t, y, context, identity=None, identity_keep=None):
        self.calls.append(
            dict(x=x, t=t, y=y, context=context, identity=identity, identity_keep=identity_keep)
        )
        return self.weight * x.new_zeros(x.shape[0], 1024, *x.shape[2:])


def test_condition_dropout_categories_and_tpr_in_training(networks):
    batch, spy = make_batch(4), SpyDiT()
    # r: text only | text and image | image only | nothing; label r: 0.05 drops the label, others keep it.
    draws = make_draws(4, [700, 700, 700, 700], [0.01, 0.07, 0.12, 0.5], [0.05, 0.5, 0.5, 0.5])
    config = ObjectiveConfig(identity_weight=0.0)
    batch_losses(spy, batch, draws, networks, SCHEDULE, config, training=True)
    call = spy.calls[0]

    shifted = randomize_token_positions(batch.tokens, training=True, offsets=draws.tpr_offsets)
    empty = randomize_token_positions(
        tokenize([""]).expand(4, -1), training=True, offsets=draws.empty_tpr_offsets
    )
    expected_tokens = torch.stack([empty[0], empty[1], shifted[2], shifted[3]])
    assert not torch.equal(shifted, batch.tokens)  # TPR really moved the prompts
    with torch.no_grad():
        assert torch.equal(call["context"], networks.text_encoder(expected_tokens))

    source = call["x"][:, 512:]
    assert torch.equal(source[[0, 3]], batch.source_latent[[0, 3]])
    assert not source[[1, 2]].any()
    assert call["identity_keep"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert torch.equal(call["identity"], batch.source_identity)
    assert call["y"].tolist() == [1, 0, 0, 0]  # row 1 = the dropped-label row
    assert call["t"].tolist() == [700] * 4


def test_no_tpr_and_no_dropout_outside_training(networks):
    batch, spy = make_batch(4), SpyDiT()
    draws = make_draws(4, [700] * 4, [0.01, 0.07, 0.12, 0.5], [0.05] * 4)
    batch_losses(spy, batch, draws, networks, SCHEDULE, ObjectiveConfig(identity_weight=0.0), training=False)
    call = spy.calls[0]
    with torch.no_grad():
        assert torch.equal(call["context"], networks.text_encoder(batch.tokens))
    assert torch.equal(call["x"][:, 512:], batch.source_latent)
    assert call["identity_keep"] is None and call["y"].tolist() == [0] * 4


def test_loss_terms_are_the_diffusion_objective(networks):
    batch = make_batch(2)
    dit = randomize_(DiT(TINY_MODELS.dit_config()), seed=3).train()
    draws = make_draws(2, [900, 10], [0.9, 0.9], [0.9, 0.9])
    config = ObjectiveConfig(identity_weight=0.0)
    terms = batch_losses(dit, batch, draws, networks, SCHEDULE, config, training=False)
    with torch.no_grad():
        context = networks.text_encoder(batch.tokens)
    reference = training_losses(
        lambda x, t: dit(
            torch.cat([x, batch.source_latent], 1),
            t,
            torch.zeros(2, dtype=torch.int64),
            context,
            batch.source_identity,
        ),
        batch.edited_latent,
        draws.timesteps,
        draws.noise,
        SCHEDULE,
    )
    assert torch.allclose(terms["loss"], reference["loss"], atol=1e-6)
    assert not terms["identity"].any()


def test_identity_loss_only_below_threshold_with_gradient_to_the_dit(networks, monkeypatch):
    batch = make_batch(2)
    dit = randomize_(DiT(TINY_MODELS.dit_config()), seed=3).train()
    draws = make_draws(2, [100, 900], [0.9, 0.9], [0.9, 0.9])
    config = ObjectiveConfig(identity_weight=0.1, identity_threshold=600, render_resolution=16)
    terms = batch_losses(dit, batch, draws, networks, SCHEDULE, config, training=True)
    plain = batch_losses(
        dit, batch, draws, networks, SCHEDULE, ObjectiveConfig(identity_weight=0.0), training=True
    )

    assert terms["identity"][1] == 0 and 0 < terms["identity"][0] <= 2
    assert torch.allclose(terms["loss"], plain["loss"] + 0.1 * terms["identity"], atol=1e-6)
    dit.zero_grad()
    terms["identity"][0].backward()
    identity_grads = [p.grad for p in dit.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(identity_grads) > 10  # the render → ArcFace path reaches the DiT's weights

    # Above the threshold nothing is rendered at all.
    monkeypatch.setattr(
        networks.generator, "synthesis", lambda *a, **k: pytest.fail("rendered above threshold")
    )
    late = make_draws(2, [600, 999], [0.9, 0.9], [0.9, 0.9])
    assert not batch_losses(dit, batch, late, networks, SCHEDULE, config)["identity"].any()


def test_rows_without_an_identity_target_take_no_identity_loss(networks):
    from dataclasses import replace

    batch = make_batch(2)
    batch = replace(batch, edited_identity=torch.cat([torch.zeros(1, 512), batch.edited_identity[1:]]))
    dit = randomize_(DiT(TINY_MODELS.dit_config()), seed=3).train()
    draws = make_draws(2, [100, 200], [0.9, 0.9], [0.9, 0.9])
    config = ObjectiveConfig(
        identity_weight=0.1, identity_threshold=600, render_resolution=16, identity_max_samples=1
    )
    identity = batch_losses(dit, batch, draws, networks, SCHEDULE, config, training=True)["identity"]
    assert identity[0] == 0 and identity[1] > 0  # the one rendered sample is the row that has a target


def test_identity_loss_is_one_minus_cosine(networks):
    g = torch.Generator().manual_seed(5)
    pred = 0.1 * torch.randn(1, 512, 4, 4, generator=g)
    target = torch.nn.functional.normalize(torch.randn(1, 512, generator=g), dim=1)
    value = identity_loss(pred, target, networks, render_resolution=16)
    from ip2n.diffusion import unpack_latent
    from ip2n.rendering.cameras import frontal_camera

    with torch.no_grad():
        image = networks.generator.synthesis(
            unpack_latent(pred, networks.latent_avg), frontal_camera(), neural_rendering_resolution=16
        )["image"]
        image = torch.nn.functional.interpolate(image, size=256, mode="bilinear", antialias=True)
        features = networks.identity(image)
    assert torch.allclose(value, 1 - torch.nn.functional.cosine_similarity(features, target), atol=1e-5)
