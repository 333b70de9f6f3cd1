"""The DiT's training triplets in the synthetic world, built in latent space.

The paper encodes both images of each (original, edited, instruction) triplet with the inversion
encoder. The world knows exactly how an edit moves the latent (codes are linear in the attribute
values), so here the edited latent is the *encoded* source plus the exact edit:

    source  = E(image)                        (the encoder's inversion of a rendered bank view)
    edited  = E(image) + enc(target) − enc(source attributes)

which keeps what the encoder makes of the face (identity, its small errors) and changes only what
the instruction asks for. No edited image has to be rendered, so a few minutes of CPU give tens of
thousands of triplets. The identity-loss target is the source's identity features: edits must not
change who it is. Instructions use the training split of the phrasings only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ip2n.diffusion import pack_latent
from ip2n.synthetic.data import EDIT_COUNT_PROBABILITIES, sample_edit
from ip2n.synthetic.instructions import compose_instruction
from ip2n.synthetic.latent import attribute_change, attributes_of, encode, row_bases
from ip2n.text import tokenize
from ip2n.training.objective import Batch
from ip2n.training.samples import SampleSet


@dataclass(frozen=True)
class SyntheticEditData:
    """Triplet samples over encoded bank views; the training loop's data (`len`, `batch`, `sample_set`)."""

    source_codes: torch.Tensor  # (V, 14, w_dim) encoder codes of the bank views, relative to the average latent
    source_identity: torch.Tensor  # (V, 512) identity features of the bank views
    rows: torch.Tensor  # (S,) int64 bank view of each sample
    coordinate_deltas: torch.Tensor  # (S, K) target − source coordinates (attribute codes only)
    tokens: torch.Tensor  # (S, 77) int64 instruction ids
    instructions: tuple[str, ...]  # (S,) the instructions as text

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.source_codes.shape[2], 4, 4)

    def _codes(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        source = self.source_codes[self.rows[indices]]  # (n, 14, w_dim)
        bases = row_bases(source.shape[2])
        return source, source + encode(self.coordinate_deltas[indices], bases)

    def batch(self, indices: list[int], device: torch.device) -> Batch:
        index = torch.tensor(indices, dtype=torch.int64)
        source, edited = self._codes(index)
        identity = self.source_identity[self.rows[index]].to(device)
        return Batch(source_latent=pack_latent(source).to(device), edited_latent=pack_latent(edited).to(device),
                     source_identity=identity, edited_identity=identity, tokens=self.tokens[index].to(device))

    def sample_set(self, count: int, seed: int, device: torch.device) -> SampleSet:
        """The first `count` samples, with noise drawn from `seed` (for the training sample grids)."""
        index = torch.arange(min(count, len(self)))
        source, edited = self._codes(index)
        noise = torch.randn((len(index), *self.latent_shape), generator=torch.Generator().manual_seed(seed))
        return SampleSet(
            instructions=tuple(self.instructions[i] for i in index.tolist()),
            source_latent=pack_latent(source).to(device), edited_latent=pack_latent(edited).to(device),
            source_identity=self.source_identity[self.rows[index]].to(device), noise=noise.to(device),
        )


def build_edit_data(
    coordinates: torch.Tensor, source_codes: torch.Tensor, source_identity: torch.Tensor, samples: int, *,
    seed: int, count_probabilities: tuple[float, ...] = EDIT_COUNT_PROBABILITIES, progress: bool = True,
) -> SyntheticEditData:
    """`samples` triplets: a random bank view (true `coordinates` (V, K)), a random visible edit of its
    attributes (1–3 by default, as `ip2n synth data`), and a training-split instruction for it."""
    generator = torch.Generator().manual_seed(seed)
    attributes = attributes_of(coordinates)
    rows = torch.randint(len(attributes), (samples,), generator=generator)
    deltas, instructions = torch.zeros(samples, coordinates.shape[1]), []
    for sample, row in enumerate(tqdm(rows.tolist(), desc="edit triplets", unit="triplet", disable=not progress)):
        source = attributes[row]
        target, edits = sample_edit(source, generator, count_probabilities=count_probabilities)
        deltas[sample] = attribute_change(source, target)[0]
        instructions.append(compose_instruction(edits, generator, split="train"))
    return SyntheticEditData(source_codes=source_codes, source_identity=source_identity, rows=rows,
                             coordinate_deltas=deltas, tokens=tokenize(instructions), instructions=tuple(instructions))
