"""Triplet data from the synthetic world, in the official on-disk layout (docs/training.md).

For pair `name` (a zero-padded index): folder `name/` with `name_0.png` (source), `name_1.png`
(edited) and `name.txt` (one instruction per line); at the top, an EG3D-style `dataset.json`
({"labels": [[relative path, 25 numbers], ...]}, both images of a pair share the camera) and
`truth.jsonl` with the ground truth of each pair (identity values, source and target attributes,
edits, yaw and pitch) for evaluation. The images carry the world's mark (`ip2n.synthetic.world.marks`):
the built-in model edits them.

Everything follows from the seed: the same seed and settings write the same bytes. Each file is
written atomically; `dataset.json` and `truth.jsonl` are written last, so a folder with them is
complete.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ip2n.atomic import write_text_atomic
from ip2n.export.images import save_image, to_pil
from ip2n.rendering.cameras import camera_labels
from ip2n.synthetic.world.attributes import (
    ATTRIBUTE_NAMES,
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    IDENTITY_PARAMS,
    Attributes,
    sample_attributes,
    sample_identity,
    visible_changes,
)
from ip2n.synthetic.world.generator import SyntheticHeadGenerator
from ip2n.synthetic.world.instructions import compose_instruction
from ip2n.synthetic.world.marks import mark_world_image

logger = logging.getLogger(__name__)

# EG3D's FFHQ poses cluster around the frontal view: normal draws clipped to ±30° yaw, ±20° pitch.
YAW_STD, YAW_LIMIT = math.radians(15), math.radians(30)
PITCH_STD, PITCH_LIMIT = math.radians(8), math.radians(20)
EDIT_COUNT_PROBABILITIES = (0.5, 0.3, 0.2)  # 1, 2 or 3 edited attributes per pair


@dataclass(frozen=True)
class PairSpec:
    """Everything that defines one pair before rendering."""

    identity: torch.Tensor  # (1, len(IDENTITY_PARAMS))
    source: Attributes
    target: Attributes
    edits: dict  # attribute → target value, every one visible
    yaw: float  # radians
    pitch: float


def sample_pose(generator: torch.Generator) -> tuple[float, float]:
    """(yaw, pitch) radians from the clipped-normal pose distribution."""
    yaw, pitch = torch.randn(2, generator=generator).tolist()
    return (
        max(-YAW_LIMIT, min(YAW_LIMIT, yaw * YAW_STD)),
        max(-PITCH_LIMIT, min(PITCH_LIMIT, pitch * PITCH_STD)),
    )


def sample_edit(
    source: Attributes,
    generator: torch.Generator,
    count_probabilities: tuple[float, ...] = EDIT_COUNT_PROBABILITIES,
) -> tuple[Attributes, dict]:
    """A target attribute set differing from `source` in visible attributes → (target, edits); the
    number of edits is 1 + k with probability count_probabilities[k] (default: 1–3 edits)."""
    while True:
        n_edits = 1 + int(torch.multinomial(torch.tensor(count_probabilities), 1, generator=generator))
        names = [
            ATTRIBUTE_NAMES[i]
            for i in torch.randperm(len(ATTRIBUTE_NAMES), generator=generator)[:n_edits].tolist()
        ]
        target = dict(source)
        for name in names:
            if name in BINARY_ATTRIBUTES:
                target[name] = not source[name]
            else:
                others = [v for v in CATEGORICAL_ATTRIBUTES[name] if v != source[name]]
                target[name] = others[int(torch.randint(len(others), (1,), generator=generator))]
        edits = visible_changes(source, target)
        # Every requested change must show, and the target must be a head the prior can produce.
        if set(edits) == set(names) and not (target["bald"] and target["bangs"]):
            return target, edits


def sample_pair(generator: torch.Generator) -> PairSpec:
    identity = sample_identity(1, generator)
    source = sample_attributes(generator)
    target, edits = sample_edit(source, generator)
    yaw, pitch = sample_pose(generator)
    return PairSpec(identity, source, target, edits, yaw, pitch)


def write_triplets(
    out_dir: Path,
    n_pairs: int,
    *,
    model: SyntheticHeadGenerator,
    seed: int = 0,
    instructions_per_pair: int = 20,
    progress: bool = True,
) -> list[Path]:
    """Render `n_pairs` pairs into `out_dir` (official layout, see the module docstring) → pair folders."""
    if n_pairs < 1:
        raise ValueError(f"need at least one pair, got {n_pairs}")
    generator = torch.Generator().manual_seed(seed)
    width = max(5, len(str(n_pairs - 1)))
    labels, truth, folders = [], [], []
    for index in tqdm(range(n_pairs), desc="writing pairs", unit="pair", disable=not progress):
        spec = sample_pair(generator)
        name = f"{index:0{width}d}"
        folder = out_dir / name
        ws = model.encode_heads(spec.identity.expand(2, -1), [spec.source, spec.target])
        camera = camera_labels(spec.yaw, spec.pitch)
        with torch.no_grad():
            images = model.synthesis(ws, camera.expand(2, -1))["image"]
        for side in (0, 1):
            record = {
                "rendered_by": "ip2n synth data",
                "seed": seed,
                "pair": name,
                "side": side,
                "attributes": [spec.source, spec.target][side],
                "yaw_deg": round(math.degrees(spec.yaw), 6),
                "pitch_deg": round(math.degrees(spec.pitch), 6),
            }
            save_image(mark_world_image(to_pil(images[side]), record), folder / f"{name}_{side}.png")
            labels.append([f"{name}/{name}_{side}.png", [float(v) for v in camera[0].tolist()]])
        write_text_atomic(
            folder / f"{name}.txt",
            "\n".join(_instructions(spec.edits, instructions_per_pair, generator)) + "\n",
        )
        truth.append(
            {
                "name": name,
                "identity": dict(zip(IDENTITY_PARAMS, spec.identity[0].tolist())),
                "source": spec.source,
                "target": spec.target,
                "edits": spec.edits,
                "yaw": spec.yaw,
                "pitch": spec.pitch,
            }
        )
        folders.append(folder)
    write_text_atomic(
        out_dir / "truth.jsonl", "".join(json.dumps(row, sort_keys=True) + "\n" for row in truth)
    )
    write_text_atomic(out_dir / "dataset.json", json.dumps({"labels": labels}))
    logger.info("wrote %d pairs to %s", n_pairs, out_dir)
    return folders


def _instructions(edits: dict, count: int, generator: torch.Generator) -> list[str]:
    """Up to `count` distinct training-split instructions for the edits (fewer if the wording runs out)."""
    found: list[str] = []
    for _ in range(count * 10):
        sentence = compose_instruction(edits, generator, split="train")
        if sentence not in found:
            found.append(sentence)
            if len(found) == count:
                break
    return found
