"""The built-in model: the synthetic 3-D heads world, trained by `ip2n synth train-all`, shipped here.

`synthetic/` holds the world's trained networks as converted safetensors (stored in float16 to keep
the package small; they are widened to float32 on load): the DiT, the OpenCLIP-architecture text
encoder, the inversion encoder, the ArcFace identity network and the attribute classifier, plus
`world.json` (how they were trained and their validation figures). The generator is procedural and
has no weights. `EditPipeline.from_preset("synthetic")` loads it; `ip2n edit` and `ip2n demo` use it
when no `--weights` are given.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "synthetic"
PRESET_NAME = "synthetic"
# Example edits of the built-in world: (seed of the head, instruction, attributes the head starts without).
EXAMPLES = (
    (0, "put glasses on him and make him smile", {"eyeglasses": False, "smile": False}),
    (1, "give her blond hair", {"hair_color": "black"}),
    (2, "make him bald and give him a beard", {"bald": False, "beard": False}),
    (3, "turn her into a bronze statue", {"style": "none"}),
)


def edit_defaults(weights_dir: str | Path = WEIGHTS_DIR):
    """The sampling settings a world's model was tuned with (world.json `edit_defaults`, chosen on
    validation cases, docs/synthetic_world.md); the paper's when the folder has none."""
    from ip2n.pipeline.edit import PAPER_DEFAULTS, EditDefaults

    manifest = Path(weights_dir) / "world.json"
    if not manifest.exists():
        return PAPER_DEFAULTS
    values = json.loads(manifest.read_text(encoding="utf-8")).get("edit_defaults")
    return EditDefaults.from_dict(values) if values else PAPER_DEFAULTS


def builtin_edit_defaults():
    """`edit_defaults` of the built-in model."""
    return edit_defaults(WEIGHTS_DIR)


def load_synthetic_pipeline(
    device: torch.device | str = "cpu",
    weights_dir: str | Path = WEIGHTS_DIR,
    dit_dir: str | Path | None = None,
):
    """The synthetic world's `EditPipeline` on `device` (everything float32, eval mode).

    `weights_dir`: the world's trained networks (default: the built-in ones; `ip2n synth train-all`
    writes the same files); `dit_dir` takes the DiT from another folder (the ablations).
    """
    from ip2n.checkpoints.editing_weights import (
        load_dit,
        load_identity,
        load_preim3d_encoder,
        load_text_encoder,
    )
    from ip2n.pipeline.edit import EditPipeline
    from ip2n.synthetic.generator import SyntheticHeadGenerator, synthetic_preset

    generator = SyntheticHeadGenerator(synthetic_preset("synthetic")).to(device).eval()
    device = torch.device(device)
    networks = (
        load_dit(dit_dir or weights_dir, device),
        load_text_encoder(weights_dir, device),
        load_preim3d_encoder(weights_dir, device)[0],
        load_identity(weights_dir, device),
    )
    for network in networks:
        network.float().eval().requires_grad_(False)  # each call changes the module in place
    dit, text_encoder, encoder, identity = networks
    latent_avg = generator.backbone.mapping.w_avg[None].to(device)  # (1, 14, w_dim): the prior's exact mean
    name = (
        "built-in synthetic 3-D heads world"
        if Path(weights_dir) == WEIGHTS_DIR
        else f"synthetic world {weights_dir}"
    )
    return EditPipeline(
        generator,
        dit,
        text_encoder,
        encoder,
        identity,
        latent_avg,
        model_name=name,
        defaults=edit_defaults(weights_dir),
    )


def example_heads(count: int = len(EXAMPLES)) -> list[tuple[torch.Tensor, dict, str]]:
    """The examples' source heads: [(identity (1, P), attributes, instruction)], from fixed seeds."""
    from ip2n.synthetic.attributes import sample_attributes, sample_identity

    heads = []
    for seed, instruction, overrides in EXAMPLES[:count]:
        random = torch.Generator().manual_seed(seed)
        identity = sample_identity(1, random)
        heads.append((identity, {**sample_attributes(random), **overrides}, instruction))
    return heads


def render_portrait(
    identity: torch.Tensor, attributes: dict, yaw_degrees: float = 0.0, pitch_degrees: float = 0.0
):
    """A 128² PIL portrait of a synthetic head (what a user would upload to the built-in model)."""
    from ip2n.export.images import to_pil
    from ip2n.rendering.cameras import camera_labels
    from ip2n.synthetic.generator import SyntheticHeadGenerator, synthetic_preset

    generator = SyntheticHeadGenerator(synthetic_preset("synthetic")).eval()
    camera = camera_labels(math.radians(yaw_degrees), math.radians(pitch_degrees))
    with torch.no_grad():
        image = generator.synthesis(generator.encode_heads(identity, [attributes]), camera)["image"][0]
    return to_pil(image)
