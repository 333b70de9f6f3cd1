"""Text side of the edit: tokenization, token position randomization, the OpenCLIP text encoder."""

from ip2n.text.encoder import (
    DIT_CHECKPOINT_PREFIX,
    TEXT_ENCODER_PRESETS,
    PromptEncoder,
    TextEncoder,
    TextEncoderConfig,
    text_encoder_config,
    text_state_dict_from,
)
from ip2n.text.tokens import (
    CONTEXT_LENGTH,
    END_OF_TEXT,
    PAD,
    START_OF_TEXT,
    TPR_MAX_OFFSET,
    count_tokens,
    cut_text,
    randomize_token_positions,
    tokenize,
)

__all__ = [
    "CONTEXT_LENGTH",
    "DIT_CHECKPOINT_PREFIX",
    "END_OF_TEXT",
    "PAD",
    "START_OF_TEXT",
    "TEXT_ENCODER_PRESETS",
    "TPR_MAX_OFFSET",
    "PromptEncoder",
    "TextEncoder",
    "TextEncoderConfig",
    "count_tokens",
    "cut_text",
    "randomize_token_positions",
    "text_encoder_config",
    "text_state_dict_from",
    "tokenize",
]
