"""The DiT's training triplets in the synthetic world, built in latent space.

The paper encodes both images of each (original, edited, instruction) triplet with the inversion
encoder. The world knows exactly how an edit moves the latent (codes are linear in the attribute
values), so here the edited latent is the *encoded* source plus the exact edit:

    source  = E(image)                        (an inversion of a rendered bank view)
    edited  = E(image) + enc(target) − enc(source attributes)

which keeps what the encoder makes of the face (identity, its small errors) and changes only what
the instruction asks for. No edited image has to be rendered, so a few minutes of CPU give tens of
thousands of triplets. The identity-loss target is the source's identity features: edits must not
change who it is. Instructions use the training split of the phrasings only. `train-all` passes
out-of-fold inversions as the codes (`vision_training.invert_held_out_fold`): each view inverted by
an encoder that never saw its identity, so the sources are as imperfect as a new face's inversion.

*Recombined sources* (`recombined_fraction`): the bank has only ~2 000 encoded views, and a DiT trained
on them alone refuses some edits on new faces (it leaves the attribute untouched) that it makes
on the exact latent of the same face. A recombined source keeps one view's inversion error
E(image) − true latent and moves everything the world knows to a new random person:

    source  = E(image) + enc(new identity and attributes) − enc(true identity and attributes)

so each triplet gets a head nobody rendered, with an inversion error of the encoder's kind. Its
identity features (the DiT's identity condition) stay those of the rendered view, and it has no
identity-loss target (zero features: the objective skips such rows). Measured with half the
triplets recombined (the `recombined` variant): the DiT fits new heads better, but it does not
edit more of them successfully, so the built-in model does not use it (docs/synthetic_world.md).

*True targets* (`target_codes`, the world's true codes of the bank views): the edited latent is the true
latent of the edited head rather than the inversion plus the edit,

    source  = E(image)        edited  = true latent of the head + enc(target) − enc(source attributes)

so the DiT must also undo what the inversion lost, as in the paper, whose targets are inversions of
other images whose errors the source's do not predict. That loss is what the paper's identity module
compensates for; with the inversion's own identity kept in the target it has nothing to add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ip2n.diffusion import pack_latent
from ip2n.synthetic.lab.data import EDIT_COUNT_PROBABILITIES, sample_edit
from ip2n.synthetic.world.attributes import sample_attributes, sample_identity
from ip2n.synthetic.world.instructions import compose_instruction
from ip2n.synthetic.world.latent import attribute_change, attributes_of, coordinates_from, encode, row_bases
from ip2n.text import tokenize
from ip2n.training.objective import Batch
from ip2n.training.samples import SampleSet


@dataclass(frozen=True)
class SyntheticEditData:
    """Triplet samples over encoded bank views; the training loop's data (`len`, `batch`, `sample_set`)."""

    source_codes: (
        torch.Tensor
    )  # (V, 14, w_dim) encoder codes of the bank views, relative to the average latent
    target_codes: (
        torch.Tensor
    )  # (V, 14, w_dim) the codes each edit starts from: source_codes, or the true codes
    source_identity: torch.Tensor  # (V, 512) identity features of the bank views
    rows: torch.Tensor  # (S,) int64 bank view of each sample
    coordinate_deltas: torch.Tensor  # (S, K) target − source coordinates (attribute codes only)
    source_shifts: torch.Tensor  # (S, K) coordinates added to the view's encoding (zero unless recombined)
    recombined: torch.Tensor  # (S,) bool: the source is a recombined one (no identity-loss target)
    tokens: torch.Tensor  # (S, 77) int64 instruction ids
    instructions: tuple[str, ...]  # (S,) the instructions as text

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.source_codes.shape[2], 4, 4)

    def _codes(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bases = row_bases(self.source_codes.shape[2])
        shifts = encode(self.source_shifts[indices], bases)
        source = self.source_codes[self.rows[indices]] + shifts  # (n, 14, w_dim)
        edited = (
            self.target_codes[self.rows[indices]] + shifts + encode(self.coordinate_deltas[indices], bases)
        )
        return source, edited

    def batch(self, indices: list[int], device: torch.device) -> Batch:
        index = torch.tensor(indices, dtype=torch.int64)
        source, edited = self._codes(index)
        identity = self.source_identity[self.rows[index]]
        target_identity = identity * ~self.recombined[index, None]  # zero: no identity-loss target
        return Batch(
            source_latent=pack_latent(source).to(device),
            edited_latent=pack_latent(edited).to(device),
            source_identity=identity.to(device),
            edited_identity=target_identity.to(device),
            tokens=self.tokens[index].to(device),
        )

    def sample_set(self, count: int, seed: int, device: torch.device) -> SampleSet:
        """The first `count` samples, with noise drawn from `seed` (for the training sample grids)."""
        index = torch.arange(min(count, len(self)))
        source, edited = self._codes(index)
        noise = torch.randn((len(index), *self.latent_shape), generator=torch.Generator().manual_seed(seed))
        return SampleSet(
            instructions=tuple(self.instructions[i] for i in index.tolist()),
            source_latent=pack_latent(source).to(device),
            edited_latent=pack_latent(edited).to(device),
            source_identity=self.source_identity[self.rows[index]].to(device),
            noise=noise.to(device),
        )


def build_edit_data(
    coordinates: torch.Tensor,
    source_codes: torch.Tensor,
    source_identity: torch.Tensor,
    samples: int,
    *,
    seed: int,
    count_probabilities: tuple[float, ...] = EDIT_COUNT_PROBABILITIES,
    recombined_fraction: float = 0.0,
    target_codes: torch.Tensor | None = None,
    progress: bool = True,
) -> SyntheticEditData:
    """`samples` triplets: a random bank view (true `coordinates` (V, K)), a random visible edit of its
    attributes (1–3 by default, as `ip2n synth data`), and a training-split instruction for it.
    A share `recombined_fraction` of them edit a recombined source instead; with `target_codes` (V, 14,
    w_dim) the edits start from those codes (true targets) instead of `source_codes` (module docstring)."""
    if not 0.0 <= recombined_fraction <= 1.0:
        raise ValueError(f"recombined_fraction must be between 0 and 1, got {recombined_fraction}")
    if target_codes is not None and target_codes.shape != source_codes.shape:
        raise ValueError(
            f"target_codes must have the shape of source_codes {tuple(source_codes.shape)}, "
            f"got {tuple(target_codes.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    # Its own generator: with no recombined sources the triplets are exactly those of earlier versions.
    recombination = torch.Generator().manual_seed(seed + 1)
    attributes = attributes_of(coordinates)
    rows = torch.randint(len(attributes), (samples,), generator=generator)
    recombined = torch.rand(samples, generator=recombination) < recombined_fraction
    deltas, shifts, instructions = (
        torch.zeros(samples, coordinates.shape[1]),
        torch.zeros(samples, coordinates.shape[1]),
        [],
    )
    for sample, row in enumerate(
        tqdm(rows.tolist(), desc="edit triplets", unit="triplet", disable=not progress)
    ):
        source = attributes[row]
        if recombined[sample]:
            source = sample_attributes(recombination)
            shifts[sample] = (
                coordinates_from(sample_identity(1, recombination), [source])[0] - coordinates[row]
            )
        target, edits = sample_edit(source, generator, count_probabilities=count_probabilities)
        deltas[sample] = attribute_change(source, target)[0]
        instructions.append(compose_instruction(edits, generator, split="train"))
    return SyntheticEditData(
        source_codes=source_codes,
        target_codes=source_codes if target_codes is None else target_codes,
        source_identity=source_identity,
        rows=rows,
        coordinate_deltas=deltas,
        source_shifts=shifts,
        recombined=recombined,
        tokens=tokenize(instructions),
        instructions=tuple(instructions),
    )
