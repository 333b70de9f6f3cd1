"""OpenCLIP text tower as InstructPix2NeRF uses it: penultimate-block tokens + final LayerNorm.

Only the text half of CLIP is built (token/positional embeddings, the transformer blocks that are
run, `ln_final`); the 632 M-parameter vision tower of the official checkpoint is never held.
The modules are open_clip's own (`open_clip.transformer.TextTransformer` parts), created on the meta
device so that construction never pays for open_clip's random init (~20 s for ViT-H); weights come
from `TextEncoder.from_state_dict` (or `load_state_dict`), or `reset_parameters` for tests.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from open_clip.transformer import LayerNorm, TextTransformer
from torch import nn

from ip2n.text.tokens import CONTEXT_LENGTH, tokenize

logger = logging.getLogger(__name__)

# Where an InstructPix2NeRF DiT checkpoint keeps the embedded OpenCLIP model.
DIT_CHECKPOINT_PREFIX = "cond_stage_model.model."
# CLIP entries outside the text tower, or after it (pooling head): never needed here.
_NOT_TEXT_TOWER = ("visual.", "text_projection", "logit_scale")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Sizes of an OpenCLIP text transformer (open_clip's `CLIPTextCfg` fields of the same names)."""

    width: int
    heads: int
    layers: int  # blocks in the checkpoint
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = 49408
    mlp_ratio: float = 4.0
    skip_last_layers: int = 1  # 1 = layer "penultimate": the output of all blocks but the last

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not 0 <= self.skip_last_layers < self.layers:
            raise ValueError(f"skip_last_layers must be in [0, {self.layers}), got {self.skip_last_layers}")

    @property
    def blocks_run(self) -> int:
        """Number of transformer blocks that are built and run (23 for ViT-H-14)."""
        return self.layers - self.skip_last_layers


TEXT_ENCODER_PRESETS: dict[str, TextEncoderConfig] = {
    # open_clip's "ViT-H-14" text_cfg (LAION-2B laion2b_s32b_b79k weights).
    "ViT-H-14": TextEncoderConfig(width=1024, heads=16, layers=24),
    # The sizes of the tokens/text_encoder_tiny reference fixture.
    "tiny": TextEncoderConfig(width=8, heads=2, layers=3),
    # Cheap random-weight stand-in for pipeline tests.
    "small": TextEncoderConfig(width=64, heads=4, layers=4),
}


def text_encoder_config(name: str) -> TextEncoderConfig:
    """Preset config by name (see ``TEXT_ENCODER_PRESETS``)."""
    if name not in TEXT_ENCODER_PRESETS:
        raise KeyError(f"unknown text-encoder preset {name!r}; choose one of {sorted(TEXT_ENCODER_PRESETS)}")
    return TEXT_ENCODER_PRESETS[name]


class TextEncoder(nn.Module):
    """Token ids (N, 77) int64 → text context (N, 77, width) float.

    Output = `ln_final` applied to the hidden states after the first `config.blocks_run` blocks
    (causal self-attention), no pooling, no projection — the conditioning the DiT cross-attends to.
    State-dict keys are open_clip's CLIP text keys (`token_embedding.weight`,
    `positional_embedding`, `transformer.resblocks.{i}.*`, `ln_final.*`).

    Parameters are uninitialised after construction (like `torch.empty`); load weights or call
    `reset_parameters`. On device "meta" nothing is allocated.
    """

    def __init__(
        self,
        config: TextEncoderConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.config = config
        with torch.device("meta"):
            tower = TextTransformer(
                context_length=config.context_length,
                vocab_size=config.vocab_size,
                width=config.width,
                heads=config.heads,
                layers=config.layers,
                mlp_ratio=config.mlp_ratio,
                output_dim=None,
                act_layer=nn.GELU,
                norm_layer=LayerNorm,
            )
        # Keep the parts of open_clip's tower we run, under the names open_clip's CLIP gives them.
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.transformer.resblocks = self.transformer.resblocks[: config.blocks_run]
        # Run the blocks sequence-first on a contiguous (L, N, D) copy. open_clip ≥ 3 runs them
        # batch-first, and PyTorch's attention then projects a transposed view, which for N > 1
        # cannot be flattened into one matrix product: two prompts took 3.4 s instead of 1.8 s on
        # one CPU thread for ViT-H. Same weights, same results up to float rounding.
        self.transformer.batch_first = False
        for block in self.transformer.resblocks:
            block.attn.batch_first = False
        self.ln_final = tower.ln_final
        if dtype is not None:
            self.to(dtype)
        device = torch.device(device) if device is not None else torch.get_default_device()
        if device.type != "meta":
            self.to_empty(device=device)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        config: TextEncoderConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> TextEncoder:
        """Build and load from an OpenCLIP or InstructPix2NeRF DiT state dict (see `text_state_dict_from`).

        The tensors are moved/cast once (`device`/`dtype` None keep their own) and become the
        parameters: no random init, and no second copy when nothing needs converting.
        """
        weights = text_state_dict_from(state_dict, config)
        encoder = cls(config, device="meta")
        weights = {name: tensor.to(device=device, dtype=dtype) for name, tensor in weights.items()}
        encoder.load_state_dict(weights, strict=True, assign=True)
        return encoder.eval()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random weights for tests: N(0, 0.02) matrices and embeddings, N(0, 0.01) biases,
        LayerNorm 1 + N(0, 0.01)."""
        for name, parameter in self.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator, device=_device_of(generator))
            if "ln_" in name and name.endswith("weight"):
                value = 1 + 0.01 * noise
            elif parameter.ndim >= 2:
                value = 0.02 * noise
            else:
                value = 0.01 * noise
            parameter.copy_(value)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, L) int64 → (N, L, width), LayerNorm-scaled values; L = context_length normally.

        The attention is causal, so a shorter L (a prefix of the padded ids) gives exactly the first
        L outputs of the full call: training uses it to skip the padding it does not read.
        """
        if tokens.ndim != 2 or not 0 < tokens.shape[1] <= self.config.context_length:
            raise ValueError(
                f"expected token ids (N, {self.config.context_length}), got {tuple(tokens.shape)}"
            )
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]  # (N, L, D)
        # Built per call (77², negligible) rather than kept as a buffer, so meta-device
        # construction leaves no state that needs re-initialising.
        causal_mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        x = self.transformer(x, attn_mask=causal_mask)  # (N, L, D) in and out (sequence-first inside)
        return self.ln_final(x)


def _device_of(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def text_state_dict_from(
    state_dict: Mapping[str, torch.Tensor],
    config: TextEncoderConfig = TEXT_ENCODER_PRESETS["ViT-H-14"],
    *,
    allow_unexpected: bool = False,
) -> dict[str, torch.Tensor]:
    """The `TextEncoder` weights inside an OpenCLIP or an InstructPix2NeRF DiT state dict.

    Accepts (a) an OpenCLIP CLIP state dict (keys as `open_clip.create_model("ViT-H-14")`), or
    (b) a DiT checkpoint state dict with the model embedded under `cond_stage_model.model.` (every
    other DiT entry is left alone). The vision tower, `text_projection`, `logit_scale` and the
    blocks that are never run (the last one for layer "penultimate") are dropped. Returns the
    remaining tensors (not copied) under `TextEncoder` keys. Raises ValueError listing the missing,
    unexpected and wrongly shaped keys if the text tower does not match `config`; with
    `allow_unexpected`, keys of no known OpenCLIP part are left out instead (files written by
    training runs may carry more than a fresh model).
    """
    if any(key.startswith(DIT_CHECKPOINT_PREFIX) for key in state_dict):
        source = "InstructPix2NeRF DiT checkpoint"
        clip = {
            key[len(DIT_CHECKPOINT_PREFIX) :]: value
            for key, value in state_dict.items()
            if key.startswith(DIT_CHECKPOINT_PREFIX)
        }
    else:
        source = "OpenCLIP state dict"
        clip = dict(state_dict)

    expected = TextEncoder(config, device="meta").state_dict()
    unused_blocks = tuple(f"transformer.resblocks.{i}." for i in range(config.blocks_run, config.layers))
    weights, ignored, unexpected, wrong_shape = {}, [], [], []
    for key, value in clip.items():
        if key in expected:
            weights[key] = value
            if tuple(value.shape) != tuple(expected[key].shape):
                wrong_shape.append(f"{key}: {tuple(value.shape)} (expected {tuple(expected[key].shape)})")
        elif key.startswith(_NOT_TEXT_TOWER + unused_blocks):
            ignored.append(key)
        else:
            unexpected.append(key)
    missing = [key for key in expected if key not in clip]

    if len(missing) == len(expected):
        raise ValueError(
            f"no OpenCLIP text-encoder weights found in this {source}: expected keys such as "
            f"'token_embedding.weight' or '{DIT_CHECKPOINT_PREFIX}token_embedding.weight'. Pass the "
            "OpenCLIP ViT-H-14 weights (laion2b_s32b_b79k) or a DiT checkpoint that embeds them."
        )
    if allow_unexpected:
        ignored += unexpected
        unexpected = []
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"the text encoder in this {source} does not match the configured one "
            f"(width {config.width}, {config.layers} layers):"
            + _key_report("missing", missing)
            + _key_report("unexpected", unexpected)
            + _key_report("wrong shape", wrong_shape)
        )
    logger.info(
        "text encoder: %d tensors from the %s; %d unused ones ignored (vision tower, projection, "
        "logit scale, blocks after the output layer)",
        len(weights),
        source,
        len(ignored),
    )
    return weights


def _key_report(what: str, keys: Sequence[str], shown: int = 8) -> str:
    if not keys:
        return ""
    more = f", … ({len(keys) - shown} more)" if len(keys) > shown else ""
    return f"\n  {what} ({len(keys)}): " + ", ".join(keys[:shown]) + more


class PromptEncoder:
    """Encodes prompts with a `TextEncoder`, each distinct prompt only once.

    Prompts are cached by their token ids (prompts differing only in case or spacing share an
    entry). The empty prompt — the "no text" context of classifier-free guidance — stays cached for
    the life of this object; other prompts are evicted least-recently-used beyond `max_cached`.
    Encodings are computed without gradients and never shifted by TPR (training and the
    official-style inference TPR tokenize, shift and call the encoder directly). Call `clear`
    after moving the encoder or changing its weights.
    """

    def __init__(self, encoder: TextEncoder, max_cached: int = 64):
        self.encoder = encoder
        self.max_cached = max_cached
        self._empty_key = tuple(tokenize([""])[0].tolist())
        self._empty: torch.Tensor | None = None
        self._cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    def clear(self) -> None:
        self._empty = None
        self._cache.clear()

    def to(self, device: str | torch.device) -> PromptEncoder:
        """Move the cached encodings to `device` (after the encoder was moved there); returns self."""
        if self._empty is not None:
            self._empty = self._empty.to(device)
        for key, context in self._cache.items():
            self._cache[key] = context.to(device)
        return self

    def encode_prompts(self, texts: Sequence[str]) -> torch.Tensor:
        """Prompts (N strings) → text context (N, 77, width) on the encoder's device and dtype."""
        tokens = tokenize(texts)  # (N, 77)
        keys = [tuple(row.tolist()) for row in tokens]
        todo = OrderedDict((key, row) for key, row in zip(keys, tokens) if not self._is_cached(key))
        if todo:
            device = self.encoder.token_embedding.weight.device
            with torch.no_grad():
                encoded = self.encoder(torch.stack(list(todo.values())).to(device))  # (M, 77, width)
            for key, context in zip(todo, encoded):
                if key == self._empty_key:
                    self._empty = context
                else:
                    self._cache[key] = context
        # Every key is cached by now, the empty prompt's context in `_empty`.
        contexts = [
            cast(torch.Tensor, self._empty) if key == self._empty_key else self._cache[key] for key in keys
        ]
        for key in keys:
            if key in self._cache:
                self._cache.move_to_end(key)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return torch.stack(contexts)

    def _is_cached(self, key: tuple[int, ...]) -> bool:
        return self._empty is not None if key == self._empty_key else key in self._cache
