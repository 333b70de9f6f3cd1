"""Prompt tokenization (open_clip's CLIP BPE tokenizer) and token position randomization (TPR).

Token contract: ids are int64 tensors of shape (N, 77): start-of-text (49406) at index 0, the
prompt's BPE ids, end-of-text (49407), then padding 0. A prompt that needs more than 77 tokens is
cut to 77 with end-of-text forced into the last slot; `count_tokens` / `cut_text` say when and what.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import open_clip
import torch

logger = logging.getLogger(__name__)

CONTEXT_LENGTH = 77
START_OF_TEXT = 49406
END_OF_TEXT = 49407
PAD = 0
# Official TPR draws the offset from 0 … 24 (the paper says the start is drawn from [0, 30]).
TPR_MAX_OFFSET = 25


@functools.cache
def _tokenizer() -> open_clip.SimpleTokenizer:
    # Building the tokenizer parses the 49 k BPE merges (~0.3 s); it is immutable, so share one.
    return open_clip.get_tokenizer("ViT-H-14")


def tokenize(texts: str | Sequence[str]) -> torch.Tensor:
    """Prompts → token ids (N, 77) int64, exactly as open_clip (and the official code) tokenizes.

    Text is ftfy-fixed, lower-cased and whitespace-collapsed by open_clip. Over-long prompts are cut
    (a warning is logged; use `cut_text` to show the user what was dropped).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    tokenizer = _tokenizer()
    tokens = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.int64)
    for row, text in enumerate(texts):
        # open_clip's own call, with each text BPE-encoded once (training tokenizes every step).
        ids = [START_OF_TEXT, *tokenizer.encode(text), END_OF_TEXT]
        if len(ids) > CONTEXT_LENGTH:
            logger.warning(
                "prompt longer than %d tokens; ignoring its end: %r",
                CONTEXT_LENGTH,
                tokenizer.decode(ids[CONTEXT_LENGTH - 1 : -1]).strip(),
            )
            ids = [*ids[: CONTEXT_LENGTH - 1], END_OF_TEXT]
        tokens[row, : len(ids)] = torch.tensor(ids)
    return tokens


def count_tokens(text: str) -> int:
    """Number of tokens `text` needs, start- and end-of-text included (at most 77 fit)."""
    return len(_tokenizer().encode(text)) + 2


def cut_text(text: str) -> str:
    """The (normalised) end of `text` that does not fit into the 77 tokens; "" when all of it fits."""
    ids = _tokenizer().encode(text)
    kept = CONTEXT_LENGTH - 2  # start- and end-of-text take two slots
    if len(ids) <= kept:
        return ""
    return _tokenizer().decode(ids[kept:]).strip()


def randomize_token_positions(
    tokens: torch.Tensor,
    *,
    training: bool,
    at_inference: bool = False,
    generator: torch.Generator | None = None,
    max_offset: int = TPR_MAX_OFFSET,
    offsets: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Token position randomization: shift each prompt (start- … end-of-text) right by a random offset.

    tokens: (N, L) int64 ids as produced by `tokenize` (padding 0 after end-of-text).
    Returns (N, L) int64 ids. Row i is shifted by min(s_i, L − n_i), n_i = index of its last
    non-zero id + 1, so end-of-text never leaves the window (too large an offset right-aligns the
    prompt); the slots in front hold 0.

    The shift is applied when `training` is True or `at_inference` is True; otherwise `tokens` is
    returned as is (the same tensor). The official code applies it to *every* text-encoder call —
    training, inference, all three guidance branches, the empty prompt included — with offsets from
    NumPy's unseeded global RNG; `at_inference=True` reproduces that behaviour on request.

    s_i is uniform on 0 … max_offset − 1, drawn from `generator` (torch's default generator if
    None), unless `offsets` (N,) gives the raw draws s_i explicitly (e.g. to replay the official
    `np.random.randint(0, 25)` draws); the clipping above is applied to them as well.
    """
    if not (training or at_inference):
        if offsets is not None:
            raise ValueError("offsets were given but TPR is off: pass training=True or at_inference=True")
        return tokens
    if tokens.ndim != 2:
        raise ValueError(f"expected token ids of shape (N, L), got {tuple(tokens.shape)}")
    rows, length = tokens.shape
    if offsets is None:
        draw_device = generator.device if generator is not None else tokens.device
        offsets = torch.randint(0, max_offset, (rows,), generator=generator, device=draw_device)
    offsets = torch.as_tensor(offsets, dtype=torch.int64).to(tokens.device)
    if offsets.shape != (rows,) or bool((offsets < 0).any()):
        raise ValueError(f"offsets must be {rows} non-negative integers, got {offsets.tolist()}")

    positions = torch.arange(length, device=tokens.device)  # (L,)
    # Prompt length n = last non-zero index + 1 (a mid-prompt id 0, e.g. a non-final "!", is
    # carried along like padding, as in the official code).
    used = torch.where(tokens != PAD, positions + 1, 0).amax(dim=1)  # (N,)
    shift = torch.minimum(offsets, length - used)  # (N,)
    source = positions - shift[:, None]  # (N, L): where each output slot reads from
    shifted = tokens.gather(1, source.clamp(min=0))
    return torch.where(source >= 0, shifted, torch.zeros_like(shifted))
