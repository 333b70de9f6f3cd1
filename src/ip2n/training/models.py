"""The networks of a training run: the trained DiT and the frozen ones around it.

Frozen networks (text encoder, PREIM3D encoder, ArcFace, EG3D) come from `ModelConfig.weights_dir`;
without one they get seeded random weights so tests and benchmarks run without downloads. The
synthetic-heads generator (`generator_family: synthetic`) is procedural and never loaded.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from ip2n.checkpoints.editing_weights import load_identity, load_preim3d_encoder, load_text_encoder
from ip2n.checkpoints.generator_weights import load_generator, load_latent_avg, random_generator
from ip2n.diffusion import DiT
from ip2n.encoding import IdentityEncoder, build_encoder, encoder_preset, identity_preset
from ip2n.generator.eg3d import TriPlaneGenerator
from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset
from ip2n.text import TextEncoder, text_encoder_config
from ip2n.training.config import ModelConfig

logger = logging.getLogger(__name__)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclass
class FrozenNetworks:
    """Networks that are never trained; all in eval mode without gradients."""

    text_encoder: TextEncoder
    encoder: nn.Module  # image (N, 3, S, S) in [-1, 1] → W+ offsets (N, 14, w_dim)
    encoder_resolution: int
    identity: IdentityEncoder
    generator: TriPlaneGenerator | SyntheticHeadGenerator  # synthesis(ws (N, 14, w_dim), cameras (N, 25))
    latent_avg: torch.Tensor  # (1, 14, w_dim)


def build_dit(config: ModelConfig, device: torch.device) -> DiT:
    """The DiT to train: DiT's from-scratch init, drawn from `config.init_seed`.

    The attribute, camera and CLIP-feature embedders exist only for checkpoint compatibility and no
    input ever reaches them; they are frozen so that DDP does not wait for gradients they never get
    (the official run never updated them either: AdamW skips parameters without gradients).
    """
    model = DiT(config.dit_config())
    model.initialize_weights(torch.Generator().manual_seed(config.init_seed))
    for unused in (model.attr_embedder, model.camera_embedder, model.clipfeatures_embedder):
        unused.requires_grad_(False)
    return model.to(device)


def build_frozen_networks(config: ModelConfig, device: torch.device) -> FrozenNetworks:
    generator: TriPlaneGenerator | SyntheticHeadGenerator
    if config.weights_dir is not None:
        text_encoder = load_text_encoder(config.weights_dir, device, preset=config.text_encoder)
        encoder, encoder_config = load_preim3d_encoder(config.weights_dir, device, preset=config.encoder)
        identity = load_identity(config.weights_dir, device, preset=config.identity)
        if config.generator_family == "eg3d":
            generator = load_generator(config.weights_dir, device)
            latent_avg = load_latent_avg(config.weights_dir, generator)
    else:
        logger.warning(
            "model.weights_dir is not set: the frozen networks get seeded RANDOM weights (tests only)"
        )
        generator_seed = torch.Generator().manual_seed(config.init_seed + 1)
        text_encoder = TextEncoder(text_encoder_config(config.text_encoder), device="cpu")
        text_encoder.reset_parameters(generator_seed)
        encoder_config = dataclasses.replace(
            encoder_preset(config.encoder, config.encoder_type), **dict(config.encoder_overrides)
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.init_seed + 2)
            encoder = build_encoder(encoder_config)
            identity = IdentityEncoder(identity_preset(config.identity))
        if config.generator_family == "eg3d":
            generator = random_generator(config.generator, seed=config.init_seed + 3)
            # The random mapping network's average would cost 10 000 mapping calls; any fixed offset will do.
            latent_avg = 0.1 * torch.randn(
                1, generator.num_ws, generator.config.w_dim, generator=generator_seed
            )
    if config.generator_family == "synthetic":
        generator = SyntheticHeadGenerator(synthetic_preset(config.generator))
        latent_avg = generator.backbone.mapping.w_avg[None]  # (1, 14, w_dim): the exact prior mean
    return FrozenNetworks(
        text_encoder=_freeze(text_encoder, device),
        encoder=_freeze(encoder, device),
        encoder_resolution=encoder_config.resolution,
        identity=_freeze(identity, device),
        generator=_freeze(generator, device),
        latent_avg=latent_avg.to(device),
    )


def _freeze(module: ModuleT, device: torch.device) -> ModuleT:
    # Float32 whatever the file stored: the built-in model ships float16 weights, and the frozen
    # networks take the training loop's float32 images and latents (autocast handles mixed precision).
    return module.to(device).float().eval().requires_grad_(False)
