"""The conditional Diffusion Transformer of InstructPix2NeRF ("DiT-B_G/1_pair").

A DiT (adaLN-Zero transformer over patch tokens) that denoises a packed W+ latent. Its input
stacks the noisy edited latent and the source latent on the channel axis; each block adds a
cross-attention to the instruction's text embedding between self-attention and MLP. The
conditioning vector that drives the adaLN modulations is

    c = timestep embedding + label embedding (+ identity embedding, when identity features are given).

Parameter names follow the official checkpoint key for key (``to_out.0``, ``norm3``,
``adaLN_modulation.1`` …) so its weights load without renaming. The official model also carries
attribute (40-d), camera (25-d) and CLIP-feature (1024-d) embedders that no code path uses; they are
kept (``attr_embedder``, ``camera_embedder``, ``clipfeatures_embedder``) only so the state dicts
match. The text encoder is not part of this module: the caller passes its output as ``context``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

PREDICTION_TYPES = ("epsilon", "v")


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of a conditional DiT. Defaults are the released "DiT-B_G/1_pair"."""

    input_size: int = 4  # latent grid side (4×4 cells = 14 W+ styles + 2 zero cells)
    patch_size: int = 1
    in_channels: int = 1024  # noisy latent (512) ‖ source latent (512)
    out_channels: int = 512  # epsilon channels; doubled when learn_sigma
    hidden_size: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_classes: int = 1
    class_dropout_prob: float = 0.1  # > 0 adds the "dropped label" row to the label table
    learn_sigma: bool = True
    context_dim: int = 1024  # OpenCLIP ViT-H-14 text width
    identity_dim: int = 512  # ArcFace features
    attribute_dim: int = 40  # unused embedder, kept for checkpoint compatibility
    camera_dim: int = 25  # unused embedder, kept for checkpoint compatibility
    clip_feature_dim: int = 1024  # unused embedder, kept for checkpoint compatibility
    frequency_dim: int = 256  # sinusoidal timestep features
    # Packed W+ offsets are multiplied by this before diffusion and divided after (not a weight: the
    # edit loop and the training objective apply it). 1 for the official model; latents much smaller
    # than the unit diffusion noise (the synthetic world's, std ≈ 0.2) need ≈ 1/std, as latent
    # diffusion scales its latents to unit variance, or the edit drowns in the noise.
    latent_scale: float = 1.0
    # What the first out_channels predict: "epsilon" (the official model) or "v" = sqrt(ā)·ε − sqrt(1 − ā)·x0
    # (Salimans & Ho 2022). An epsilon network must encode x0 in ever smaller output differences as the
    # noise grows, so it learns little of what only the conditions can tell at the noisy steps; a v
    # network predicts ≈ −x0 there. The synthetic world needs it: its edits stay readable in x_t down to
    # high noise, so an epsilon model is never pushed to read the instruction (docs/synthetic_world.md).
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4 or self.frequency_dim % 2:
            raise ValueError("hidden_size must be a multiple of 4 and frequency_dim even (sin-cos tables)")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")

    @property
    def final_out_channels(self) -> int:
        return 2 * self.out_channels if self.learn_sigma else self.out_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def num_label_rows(self) -> int:
        return self.num_classes + int(self.class_dropout_prob > 0)


DIT_PRESETS: dict[str, DiTConfig] = {
    "DiT-B_G/1_pair": DiTConfig(),
    # The sizes of the dit_small reference fixture.
    "tiny": DiTConfig(hidden_size=64, depth=2, num_heads=4),
}


def dit_config(name: str) -> DiTConfig:
    """Preset config by name (see ``DIT_PRESETS``)."""
    if name not in DIT_PRESETS:
        raise KeyError(f"unknown DiT preset {name!r}; choose one of {sorted(DIT_PRESETS)}")
    return DIT_PRESETS[name]


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position table (1, grid_size², embed_dim), tokens row-major.

    The first half of the channels encodes the column, the second half the row; each half is
    [sin | cos] of the coordinate times frequencies 10000^(-k / (embed_dim / 4)). Computed in float64
    and rounded once, like the official table.
    """
    quarter = embed_dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, columns = torch.meshgrid(coords, coords, indexing="ij")  # (G, G) each

    def encode(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1, 1) * frequencies  # (G², D/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (G², D/2)

    table = torch.cat([encode(columns), encode(rows)], dim=1)  # (G², D)
    return table.float().unsqueeze(0)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of tokens x (N, T, D) by per-sample shift/scale (N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Timesteps (N,) on the 1000-step scale → (N, hidden): sinusoid features then an MLP."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def frequencies(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) → (N, frequency_dim) = [cos | sin] of t times geometric frequencies (float32)."""
        half = self.frequency_dim // 2
        exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
        freqs = torch.exp(-math.log(self.max_period) * exponents)  # (half,)
        angles = t.float().unsqueeze(1) * freqs.unsqueeze(0)  # (N, half)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.frequencies(t).to(cast(nn.Linear, self.mlp[0]).weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels (N,) int64 → (N, hidden). Row ``num_classes`` is the "dropped label" row.

    Label dropout is a training-time choice of the caller (set the label to ``num_classes``); the
    official inference passes that dropped-label row (y = 1) to every branch.
    """

    def __init__(self, num_rows: int, hidden_size: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_rows, hidden_size)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


class FeatureEmbedder(nn.Module):
    """Feature vectors (N, in_dim) → (N, hidden) through Linear–SiLU–Linear."""

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


class PatchEmbed(nn.Module):
    """Latent (N, C, H, W) → tokens (N, T, hidden), one token per p×p patch, row-major."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A strided convolution is a linear map of each flattened (C, p, p) patch; run as a matmul it
        # avoids the convolution setup cost, which dominates on a 4×4 input.
        batch, channels, height, width = x.shape
        p = self.patch_size
        patches = x.reshape(batch, channels, height // p, p, width // p, p).permute(
            0, 2, 4, 1, 3, 5
        )  # (N, h, w, C, p, p)
        patches = patches.reshape(batch, (height // p) * (width // p), channels * p * p)  # (N, T, C·p²)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, L, heads·d) → (N, heads, L, d)."""
    batch, length, width = x.shape
    return x.reshape(batch, length, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, L, d) → (N, L, heads·d)."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens (N, T, D) with a fused, biased qkv projection."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (N, heads, T, d) each
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Tokens (N, T, D) attend to a text context (N, L, context_dim); q/k/v have no bias."""

    def __init__(self, hidden_size: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.to_k = nn.Linear(context_dim, hidden_size, bias=False)
        self.to_v = nn.Linear(context_dim, hidden_size, bias=False)
        # A one-element Sequential only so the key reads "to_out.0" as in the official checkpoint.
        self.to_out = nn.Sequential(nn.Linear(hidden_size, hidden_size))

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (N, L, context_dim) → keys, values (N, heads, L, head_dim) each."""
        return split_heads(self.to_k(context), self.num_heads), split_heads(
            self.to_v(context), self.num_heads
        )

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.to_q(x), self.num_heads)  # (N, heads, T, d)
        return self.to_out(merge_heads(F.scaled_dot_product_attention(q, keys, values)))


class Mlp(nn.Module):
    """Token-wise MLP with tanh-approximated GELU."""

    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero self-attention, ungated text cross-attention, adaLN-Zero MLP."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        hidden = config.hidden_size
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden, config.num_heads)
        self.cross_attn = CrossAttention(hidden, config.context_dim, config.num_heads)
        # The cross-attention pre-norm ("norm3" in the checkpoint) is affine with the default eps;
        # the adaLN norms get their scale and shift from the conditioning instead.
        self.norm3 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * config.mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(
        self, x: torch.Tensor, modulation: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Tokens x (N, T, D), adaLN modulation = adaLN_modulation(c) (N, 6D), context keys/values
        (N, heads, L, d)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + self.cross_attn(self.norm3(x), keys, values)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated projection of tokens (N, T, D) to patch outputs (N, T, p²·C_out)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """Tokens x (N, T, D), adaLN modulation = adaLN_modulation(c) (N, 2D)."""
        shift, scale = modulation.chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


@dataclass(frozen=True)
class CrossAttentionCache:
    """Per-block text keys/values, computed once per edit by ``DiT.precompute_context``.

    ``keys_values[b]`` = (keys, values) of block b, each (N, heads, L, head_dim).
    """

    keys_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass(frozen=True)
class ConditioningCache:
    """The adaLN modulations of every block and of the final layer, by ``DiT.precompute_conditioning``.

    ``blocks[b]`` (N, 6·hidden), ``final`` (N, 2·hidden). During an edit only the timestep changes
    from step to step, so the modulations of all steps can be computed in one batched product per
    block instead of a 3-row matrix product per block and step (the adaLN weights are a quarter
    of the DiT and reading them dominated those small products).
    """

    blocks: tuple[torch.Tensor, ...]
    final: torch.Tensor

    def rows(self, selection: slice) -> ConditioningCache:
        return ConditioningCache(tuple(block[selection] for block in self.blocks), self.final[selection])


class DiT(nn.Module):
    """Conditional DiT denoiser of packed W+ latents.

    ``forward(x, t, y, context, identity=None, identity_keep=None)``:
    - x (N, in_channels, H, W): noisy edited latent ‖ source latent on channels (1024, 4, 4 for the
      released model); a zero source latent means "no image condition".
    - t (N,) int64: timesteps on the 1000-step training scale (not respaced indices).
    - y (N,) int64: class label; ``num_classes`` selects the dropped-label row.
    - context (N, L, context_dim) text embedding (77, 1024), or a ``CrossAttentionCache`` of it.
    - identity (N, identity_dim) ArcFace features, or None for no identity term at all.
    - identity_keep (N,) float multiplier on the identity *embedding* (training's condition
      dropout zeroes the embedding, not the features).
    Returns (N, final_out_channels, H, W): epsilon first, then the learned-variance values.
    """

    pos_embed: torch.Tensor  # buffer (1, T, hidden)

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        # Fixed, not learned; persistent because the official checkpoint stores it.
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden, config.grid_size))
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, hidden)
        self.t_embedder = TimestepEmbedder(hidden, config.frequency_dim)
        self.y_embedder = LabelEmbedder(config.num_label_rows, hidden)
        self.attr_embedder = FeatureEmbedder(config.attribute_dim, hidden)
        self.camera_embedder = FeatureEmbedder(config.camera_dim, hidden)
        self.clipfeatures_embedder = FeatureEmbedder(config.clip_feature_dim, hidden)
        self.id_embedder = FeatureEmbedder(config.identity_dim, hidden)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(hidden, config.patch_size, config.final_out_channels)

    def _blocks(self) -> Iterable[DiTBlock]:
        """`blocks` as what they are: an nn.ModuleList only promises nn.Modules to the type checker."""
        return cast("Iterable[DiTBlock]", self.blocks)

    def per_step_linears(self) -> list[nn.Linear]:
        """The linear layers applied to the tokens at every denoising step (the adaLN modulations
        and the context's keys/values are computed once per edit, see the precompute methods)."""
        layers: list[nn.Linear] = []
        for block in self._blocks():
            layers += [
                block.attn.qkv,
                block.attn.proj,
                block.cross_attn.to_q,
                cast(nn.Linear, block.cross_attn.to_out[0]),
                block.mlp.fc1,
                block.mlp.fc2,
            ]
        return [*layers, self.final_layer.linear]

    def precompute_context(self, context: torch.Tensor) -> CrossAttentionCache:
        """Text context (N, L, context_dim) → per-block cross-attention keys/values.

        The context is fixed during an edit, so projecting it once saves most of the per-step cost.
        """
        return CrossAttentionCache(
            tuple(block.cross_attn.project_context(context) for block in self._blocks())
        )

    def conditioning(
        self,
        t: torch.Tensor,
        y: torch.Tensor,
        identity: torch.Tensor | None = None,
        identity_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The adaLN conditioning vector c (N, hidden)."""
        c = self.t_embedder(t) + self.y_embedder(y)
        if identity is not None:
            identity_embedding = self.id_embedder(identity)
            if identity_keep is not None:
                identity_embedding = identity_embedding * identity_keep.to(
                    identity_embedding.dtype
                ).unsqueeze(1)
            c = c + identity_embedding
        return c

    def precompute_conditioning(
        self,
        t: torch.Tensor,
        y: torch.Tensor,
        identity: torch.Tensor | None = None,
        identity_keep: torch.Tensor | None = None,
    ) -> ConditioningCache:
        """adaLN modulations of every block for conditionings (t, y, identity), each (N,) / (N, dim)."""
        c = self.conditioning(t, y, identity, identity_keep)  # (N, D)
        return ConditioningCache(
            tuple(block.adaLN_modulation(c) for block in self._blocks()),
            self.final_layer.adaLN_modulation(c),
        )

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor,
        context: torch.Tensor | CrossAttentionCache,
        identity: torch.Tensor | None = None,
        identity_keep: torch.Tensor | None = None,
        *,
        conditioning: ConditioningCache | None = None,
    ) -> torch.Tensor:
        """See the class docstring; `conditioning`, when given, replaces (t, y, identity, identity_keep)."""
        cache = context if isinstance(context, CrossAttentionCache) else self.precompute_context(context)
        if conditioning is None:
            conditioning = self.precompute_conditioning(t, y, identity, identity_keep)
        tokens = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        for block, modulation, (keys, values) in zip(
            self.blocks, conditioning.blocks, cache.keys_values, strict=True
        ):
            tokens = block(tokens, modulation, keys, values)
        return self.unpatchify(self.final_layer(tokens, conditioning.final))

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, p²·C) → (N, C, H, W)."""
        p, grid, channels = self.config.patch_size, self.config.grid_size, self.config.final_out_channels
        patches = tokens.reshape(tokens.shape[0], grid, grid, p, p, channels)  # (N, h, w, p, p, C)
        return patches.permute(0, 5, 1, 3, 2, 4).reshape(tokens.shape[0], channels, grid * p, grid * p)

    @torch.no_grad()
    def initialize_weights(self, generator: torch.Generator | None = None) -> None:
        """Training-from-scratch init in the DiT manner: the network starts as the zero map.

        Xavier-uniform linear/conv weights, zero biases, N(0, 0.02²) label table and conditioning
        MLPs, and zero adaLN and output projections (each block then starts as the identity).
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1), generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02, generator=generator)
        embedders: tuple[TimestepEmbedder | FeatureEmbedder, ...] = (
            self.t_embedder,
            self.attr_embedder,
            self.camera_embedder,
            self.clipfeatures_embedder,
            self.id_embedder,
        )
        for embedder in embedders:
            nn.init.normal_(cast(nn.Linear, embedder.mlp[0]).weight, std=0.02, generator=generator)
            nn.init.normal_(cast(nn.Linear, embedder.mlp[2]).weight, std=0.02, generator=generator)
        for block in self._blocks():
            nn.init.ones_(block.norm3.weight)
            nn.init.zeros_(block.norm3.bias)
            nn.init.zeros_(cast(nn.Linear, block.adaLN_modulation[1]).weight)
            nn.init.zeros_(cast(nn.Linear, block.adaLN_modulation[1]).bias)
        for layer in (cast(nn.Linear, self.final_layer.adaLN_modulation[1]), self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
