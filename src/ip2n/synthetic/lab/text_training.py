"""Training the world's text encoder: an OpenCLIP text tower taught what each instruction asks for.

No pretrained CLIP exists here, so the tower (OpenCLIP's architecture and real tokenizer, at a small
width) is trained to read instructions: its output tokens, mean-pooled over the prompt, must predict
for every attribute whether the instruction leaves it alone or sets it (and to which value). The
instructions come from the training split of the phrasings, several edits per sentence, with token
position randomization on, so the tokens the DiT later cross-attends to already carry every edit
of a long sentence wherever it sits in the context window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ip2n.synthetic.lab.data import sample_edit
from ip2n.synthetic.lab.fitting import fit
from ip2n.synthetic.world.attributes import (
    ATTRIBUTE_NAMES,
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    AttributeValue,
    sample_attributes,
)
from ip2n.synthetic.world.instructions import compose_instruction
from ip2n.text import TextEncoder, TextEncoderConfig, randomize_token_positions, text_encoder_config, tokenize

# Per attribute: class 0 = "left alone", then one class per value it can be set to.
EDIT_CLASSES: dict[str, tuple[AttributeValue, ...]] = {
    **{name: (True, False) for name in BINARY_ATTRIBUTES},
    **CATEGORICAL_ATTRIBUTES,
}
EDIT_COUNT_PROBABILITIES = (0.4, 0.3, 0.2, 0.1)  # 1 … 4 edits per training sentence


@dataclass(frozen=True)
class TextTrainingConfig:
    steps: int = 1500
    batch_size: int = 128
    pool_size: int = 65536  # distinct training sentences
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 0
    token_position_randomization: bool = True


def world_text_config() -> TextEncoderConfig:
    """The world's text tower: OpenCLIP layout, width 64, 4 layers (3 run: the penultimate output)."""
    return text_encoder_config("small")


def edit_labels(edits: dict[str, AttributeValue]) -> list[int]:
    """Class per attribute (len(ATTRIBUTE_NAMES)) of an edit dict (see `EDIT_CLASSES`)."""
    return [0 if name not in edits else 1 + EDIT_CLASSES[name].index(edits[name]) for name in ATTRIBUTE_NAMES]


def instruction_batch(
    size: int, generator: torch.Generator, split: str = "train"
) -> tuple[list[str], torch.Tensor]:
    """`size` random instructions (1–4 edits) and their labels (size, len(ATTRIBUTE_NAMES))."""
    sentences, labels = [], []
    for _ in range(size):
        _, edits = sample_edit(
            sample_attributes(generator), generator, count_probabilities=EDIT_COUNT_PROBABILITIES
        )
        sentences.append(compose_instruction(edits, generator, split=split))
        labels.append(edit_labels(edits))
    return sentences, torch.tensor(labels)


class EditReader(nn.Module):
    """Text tower + linear read-out of the edit classes from the mean of the prompt's tokens."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.sizes = [1 + len(EDIT_CLASSES[name]) for name in ATTRIBUTE_NAMES]
        self.head = nn.Linear(encoder.config.width, sum(self.sizes))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """tokens (N, 77) → one logit tensor (N, classes) per attribute."""
        # Causal attention: the prompt's outputs do not depend on the padding after the longest prompt.
        tokens = tokens[:, : int((tokens != 0).nonzero()[:, 1].max()) + 1]
        hidden = self.encoder(tokens)  # (N, L, D)
        mask = (tokens != 0).to(hidden.dtype)[..., None]  # (N, L, 1): the prompt's tokens, not the padding
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        return list(self.head(pooled).split(self.sizes, dim=1))


def train_text_encoder(
    config: TextTrainingConfig, *, progress: bool = True
) -> tuple[TextEncoder, EditReader, list[tuple[int, float]]]:
    """Train the tower (see the module docstring) → (encoder in eval mode, its read-out,
    (step, loss) history).

    The sentences come from a pool drawn once (`pool_size`): composing and BPE-encoding a sentence
    costs about a millisecond, more than the tiny tower's step spends on it.
    """
    generator = torch.Generator().manual_seed(config.seed)
    sentences, labels = instruction_batch(config.pool_size, generator)
    pool = tokenize(sentences)  # (P, 77)
    encoder = TextEncoder(world_text_config(), device="cpu")
    encoder.reset_parameters(torch.Generator().manual_seed(config.seed + 1))
    reader = EditReader(encoder)
    # A few hundred of the 49 408 token rows ever occur: sparse gradients and a sparse Adam for the
    # embedding table keep the step from updating 3 M untouched numbers.
    encoder.token_embedding.sparse = True
    embedding = [encoder.token_embedding.weight]
    dense = [p for p in reader.parameters() if p is not encoder.token_embedding.weight]
    optimizers = [
        torch.optim.AdamW(dense, lr=config.learning_rate, weight_decay=config.weight_decay),
        torch.optim.SparseAdam(embedding, lr=config.learning_rate),
    ]

    def loss_fn(rows: torch.Tensor) -> torch.Tensor:
        tokens = randomize_token_positions(
            pool[rows], training=config.token_position_randomization, generator=generator
        )
        logits = reader(tokens)
        return torch.stack(
            [F.cross_entropy(part, labels[rows, column]) for column, part in enumerate(logits)]
        ).mean()

    # The rows and the TPR offsets share `generator` (the one that drew the pool), as they always have.
    history = fit(
        reader,
        optimizers,
        loss_fn,
        len(pool),
        steps=config.steps,
        batch_size=config.batch_size,
        generator=generator,
        description="text encoder",
        progress=progress,
    )
    encoder.token_embedding.sparse = False
    reader.requires_grad_(False)  # fit leaves it in eval mode
    return encoder, reader, history


@torch.no_grad()
def reading_accuracy(reader: EditReader, *, count: int = 512, seed: int = 1, split: str = "heldout") -> float:
    """Share of instructions (1–4 edits, phrasings of `split`) whose every attribute class is read right."""
    sentences, labels = instruction_batch(count, torch.Generator().manual_seed(seed), split=split)
    reader.eval()
    predicted = torch.stack([part.argmax(dim=1) for part in reader(tokenize(sentences))], dim=1)
    return float((predicted == labels).all(dim=1).float().mean())
