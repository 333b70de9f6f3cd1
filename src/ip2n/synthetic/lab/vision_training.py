"""Training the world's vision models on a rendered `HeadBank`: the inversion encoder, the ArcFace
identity network and the attribute classifier.

All three are supervised by the world's ground truth:
- encoder: image → W+ codes relative to the average latent, regressed onto the true codes (the
  world's latent is exact, so no reconstruction loss through the renderer is needed);
- identity: ArcFace's additive angular margin over the bank's identities (each seen with several
  attribute sets and poses, so the features learn to ignore both);
- attribute classifier: cross-entropy per attribute.
Each loop is AdamW with a cosine learning-rate decay, batches drawn from a seeded generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.encoding import IdentityEncoder, build_encoder, encoder_preset, identity_preset
from ip2n.encoding.identity import IdentityConfig
from ip2n.encoding.preim3d import PREIM3DEncoderConfig
from ip2n.synthetic.lab.bank import HeadBank
from ip2n.synthetic.lab.classifier import (
    AttributeClassifier,
    AttributeClassifierConfig,
    attribute_targets,
    classification_loss,
    predicted_targets,
)
from ip2n.synthetic.lab.fitting import fit
from ip2n.synthetic.world.latent import encode, identity_of, row_bases

ARCFACE_SCALE = 32.0  # logit scale s of ArcFace
ARCFACE_MARGIN = (
    0.3  # additive angle margin m (radians); smaller than face recognition's 0.5: few views per identity
)
IDENTITY_REGRESSION_WEIGHT = (
    10.0  # the identity values' read-out loss next to the margin loss (see train_identity)
)
IDENTITY_ANCHOR_WEIGHT = (
    10.0  # the pull of the features towards an embedding of the identity values (see train_identity)
)


@dataclass(frozen=True)
class VisionTrainingConfig:
    steps: int
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def encoder_config(w_dim: int, resolution: int) -> PREIM3DEncoderConfig:
    """The world's inversion encoder: PREIM3D's e4e variant (its default) on the small IR-SE trunk.

    The single-vector W+ variant could not even overfit 16 bank views (its 14 codes all come from
    one pooled 64-d vector); e4e's per-level style heads fit them readily.
    """
    return dataclasses.replace(
        encoder_preset("small", "Encoder4Editing"), style_dim=w_dim, resolution=resolution
    )


def identity_config(resolution: int) -> IdentityConfig:
    """The world's identity network: small IR-SE trunk, 512-d features (the DiT's identity width)."""
    return dataclasses.replace(identity_preset("small"), input_size=resolution)


def true_codes(bank: HeadBank, w_dim: int) -> torch.Tensor:
    """The bank's ground-truth W+ codes relative to the prior mean latent, (N, 14, w_dim)."""
    from ip2n.synthetic.world.generator import prior_mean_coordinates

    bases = row_bases(w_dim)
    return encode(bank.coordinates, bases) - encode(prior_mean_coordinates(), bases)


def _fit(
    model: nn.Module,
    parameters: list[nn.Parameter],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    size: int,
    config: VisionTrainingConfig,
    description: str,
    progress: bool,
) -> list[tuple[int, float]]:
    """`fitting.fit` with one AdamW over `parameters` and rows drawn from `config.seed`."""
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    return fit(
        model,
        [optimizer],
        loss_fn,
        size,
        steps=config.steps,
        batch_size=config.batch_size,
        generator=torch.Generator().manual_seed(config.seed),
        description=description,
        progress=progress,
    )


def train_encoder(
    bank: HeadBank, config: VisionTrainingConfig, *, w_dim: int, progress: bool = True
) -> tuple[nn.Module, PREIM3DEncoderConfig, list[tuple[int, float]]]:
    """Encoder regressing the true codes; the loss is the MSE relative to the codes' variance."""
    model_config = encoder_config(w_dim, bank.images.shape[-1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        encoder = build_encoder(model_config)
    targets = true_codes(bank, w_dim)
    variance = targets.var()

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(encoder(bank.pixels(rows)), targets[rows]) / variance

    history = _fit(encoder, list(encoder.parameters()), loss_fn, len(bank), config, "encoder", progress)
    return encoder, model_config, history


@torch.no_grad()
def run_on_views(
    network: Callable[[torch.Tensor], torch.Tensor], bank: HeadBank, batch_size: int = 128
) -> torch.Tensor:
    """`network` applied to every view of `bank` in batches of pixels in [-1, 1], outputs concatenated."""
    return torch.cat(
        [network(bank.pixels(slice(start, start + batch_size))) for start in range(0, len(bank), batch_size)]
    )


def fold_encoder_steps(steps: int, folds: int) -> int:
    """Steps for an encoder trained on (folds − 1) / folds of the views: as many passes over its
    views as `steps` give the encoder trained on all of them."""
    return max(1, round(steps * (folds - 1) / folds))


def in_fold(bank: HeadBank, fold: int, folds: int) -> torch.Tensor:
    """(N,) bool: the views of fold `fold` of `folds`, whole identities (index % folds == fold)."""
    return bank.identity_index % folds == fold


def invert_held_out_fold(
    bank: HeadBank, fold: int, folds: int, config: VisionTrainingConfig, *, w_dim: int, progress: bool = False
) -> torch.Tensor:
    """Codes (n, 14, w_dim) of the views of fold `fold` (`in_fold`), inverted by an encoder trained
    on the other folds only.

    The encoder learns the bank by heart: its relative error is 0.18 on its training views and 0.60
    on identities it never saw (identity values are then barely read at all). A DiT trained on its
    in-sample inversions meets far cleaner sources than the inversions of new faces it edits; these
    out-of-fold inversions carry the errors of unseen faces, as the paper's triplet images are new
    to its pretrained encoder.
    """
    held_out = in_fold(bank, fold, folds)
    encoder, _, _ = train_encoder(bank.select(~held_out), config, w_dim=w_dim, progress=progress)
    return run_on_views(encoder.eval(), bank.select(held_out))


class ArcFaceHead(nn.Module):
    """Additive angular margin logits: s · cos(θ_y + m) for the true class, s · cos θ for the others."""

    def __init__(self, feature_dim: int, classes: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(classes, feature_dim, generator=generator) / math.sqrt(feature_dim)
        )

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T  # (N, classes)
        true = cosine.gather(1, labels[:, None]).clamp(-1 + 1e-6, 1 - 1e-6)
        with_margin = torch.cos(torch.acos(true) + ARCFACE_MARGIN)
        return ARCFACE_SCALE * cosine.scatter(1, labels[:, None], with_margin)


def train_identity(
    bank: HeadBank, config: VisionTrainingConfig, *, progress: bool = True
) -> tuple[IdentityEncoder, IdentityConfig, list[tuple[int, float]]]:
    """ArcFace identity network over the bank's identities.

    A few hundred identities with three views each are too few for the margin loss alone to give
    features that carry over to new faces (same-identity cosine 0.3 on held-out identities in a
    first run), so a linear read-out of the true identity values from the features is trained
    alongside (weight `IDENTITY_REGRESSION_WEIGHT`): it ties the features to face shape and colour
    rather than to the training identities' labels. The read-out alone still leaves the features
    free to carry attributes in the directions it ignores (an exact beard or baldness edit kept a
    cosine of 0.75 with its source), so the features are also pulled towards a learned linear
    embedding of the identity values (weight `IDENTITY_ANCHOR_WEIGHT`), which attributes and pose
    cannot move. Views are mirrored at random (a mirrored face is the same person).
    """
    model_config = identity_config(bank.images.shape[-1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = IdentityEncoder(model_config)
    labels = torch.unique(bank.identity_index, return_inverse=True)[1]
    values = identity_of(bank.coordinates)  # (N, P) the true identity values
    generator = torch.Generator().manual_seed(config.seed)
    head = ArcFaceHead(model_config.feature_dim, int(labels.max()) + 1, generator)
    readout = nn.Linear(model_config.feature_dim, values.shape[1])
    anchor = nn.Linear(values.shape[1], model_config.feature_dim)
    wrapper = nn.ModuleDict({"network": network, "head": head, "readout": readout, "anchor": anchor})
    flips = torch.Generator().manual_seed(config.seed + 1)

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:
        pixels = bank.pixels(rows)
        mirrored = torch.rand(len(rows), generator=flips) < 0.5
        pixels = torch.where(mirrored[:, None, None, None], pixels.flip(3), pixels)
        features = network(pixels)
        margin_loss = F.cross_entropy(head(features, labels[rows]), labels[rows])
        anchor_loss = 1 - F.cosine_similarity(features, anchor(values[rows]), dim=1).mean()
        return (
            margin_loss
            + IDENTITY_REGRESSION_WEIGHT * F.mse_loss(readout(features), values[rows])
            + IDENTITY_ANCHOR_WEIGHT * anchor_loss
        )

    history = _fit(wrapper, list(wrapper.parameters()), loss_fn, len(bank), config, "identity", progress)
    return network, model_config, history


def train_attribute_classifier(
    bank: HeadBank, config: VisionTrainingConfig, *, progress: bool = True
) -> tuple[AttributeClassifier, AttributeClassifierConfig, list[tuple[int, float]]]:
    model_config = AttributeClassifierConfig(input_size=bank.images.shape[-1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        classifier = AttributeClassifier(model_config)
    targets = attribute_targets(bank.coordinates)

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:
        return classification_loss(classifier(bank.pixels(rows)), targets[rows])

    history = _fit(
        classifier, list(classifier.parameters()), loss_fn, len(bank), config, "attributes", progress
    )
    return classifier, model_config, history


@torch.no_grad()
def attribute_accuracy(classifier: AttributeClassifier, bank: HeadBank, batch_size: int = 128) -> float:
    """Share of (view, attribute) predictions that match the truth."""
    predictions = run_on_views(lambda pixels: predicted_targets(classifier(pixels)), bank, batch_size)
    return float((predictions == attribute_targets(bank.coordinates)).float().mean())
