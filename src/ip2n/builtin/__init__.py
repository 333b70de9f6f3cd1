"""The built-in model: the synthetic 3-D heads world, trained by `ip2n synth train-all`, shipped here.

`synthetic/` holds the world's trained networks as converted safetensors (stored in float16 to keep
the package small; they are widened to float32 on load): the DiT, the OpenCLIP-architecture text
encoder, the inversion encoder, the ArcFace identity network and the attribute classifier, plus
`world.json` (how they were trained and their validation figures). The generator is procedural and
has no weights. `EditPipeline.from_preset("synthetic")` loads it; `ip2n edit` and `ip2n demo` use it
when no `--weights` are given. It edits heads of its world only (`ip2n.pipeline.scope`): the
portraits rendered here (`render_portrait`, `sample_head`) carry the world's mark.

Importing this module does not import torch (the CLI's help reads `builtin_edit_default_values`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ip2n.registry import (
    SYNTHETIC_WORLD_KIND,
    FolderKind,
    ModelPreset,
    register_folder_kind,
    register_model,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ip2n.pipeline.edit import EditPipeline

WEIGHTS_DIR = Path(__file__).resolve().parent / "synthetic"
PRESET_NAME = "synthetic"
# Example edits of the built-in world: (seed of the head, instruction, attributes the head starts without).
EXAMPLES = (
    (0, "put glasses on him and make him smile", {"eyeglasses": False, "smile": False}),
    (1, "give her blond hair", {"hair_color": "black"}),
    (2, "make him bald and give him a beard", {"bald": False, "beard": False}),
    (3, "turn her into a bronze statue", {"style": "none"}),
)


def edit_default_values(weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """world.json's `edit_defaults` as a plain dict ({} when the folder has none); no torch needed."""
    manifest = Path(weights_dir) / "world.json"
    if not manifest.exists():
        return {}
    return dict(json.loads(manifest.read_text(encoding="utf-8")).get("edit_defaults") or {})


def builtin_edit_default_values() -> dict:
    """The built-in model's tuned sampling settings, e.g. {"strength": 0.6, ...} (for help texts)."""
    return edit_default_values(WEIGHTS_DIR)


def edit_defaults(weights_dir: str | Path = WEIGHTS_DIR):
    """The sampling settings a world's model was tuned with (world.json `edit_defaults`, chosen on
    validation cases, docs/synthetic_world.md); the paper's when the folder has none."""
    from ip2n.defaults import PAPER_DEFAULTS, EditDefaults

    values = edit_default_values(weights_dir)
    return EditDefaults.from_dict(values) if values else PAPER_DEFAULTS


def builtin_edit_defaults():
    """`edit_defaults` of the built-in model."""
    return edit_defaults(WEIGHTS_DIR)


def load_synthetic_pipeline(
    device: torch.device | str = "cpu",
    weights_dir: str | Path = WEIGHTS_DIR,
    dit_dir: str | Path | None = None,
    *,
    progress: bool = False,
) -> EditPipeline:
    """The synthetic world's `EditPipeline` on `device` (everything float32, eval mode).

    `weights_dir`: the world's trained networks (default: the built-in ones; `ip2n synth train-all`
    writes the same files); `dit_dir` takes the DiT from another folder (the ablations). The
    pipeline is a world model (`EditPipeline.world_model`): it edits heads of its world only.
    `progress` shows a bar over the networks as they load (stderr).
    """
    import torch

    from ip2n.checkpoints.editing_weights import (
        load_dit,
        load_identity,
        load_preim3d_encoder,
        load_text_encoder,
    )
    from ip2n.pipeline.edit import EditPipeline
    from ip2n.progress import stage_bar
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset

    device = torch.device(device)
    with stage_bar("loading the built-in model", 5, progress, unit="model") as bar:
        bar.set_postfix_str("generator")
        generator = SyntheticHeadGenerator(synthetic_preset(PRESET_NAME)).to(device).eval()
        bar.update()
        bar.set_postfix_str("DiT")
        dit = load_dit(dit_dir or weights_dir, device)
        bar.update()
        bar.set_postfix_str("text encoder")
        text_encoder = load_text_encoder(weights_dir, device)
        bar.update()
        bar.set_postfix_str("encoder")
        encoder = load_preim3d_encoder(weights_dir, device)[0]
        bar.update()
        bar.set_postfix_str("identity")
        identity = load_identity(weights_dir, device)
        bar.update()
    for network in (dit, text_encoder, encoder, identity):
        network.float().eval().requires_grad_(False)  # each call changes the module in place
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
        world_model=True,
        generator_source={"kind": SYNTHETIC_WORLD_KIND, "preset": PRESET_NAME},
    )


def sample_head(seed: int) -> tuple[torch.Tensor, dict]:
    """A random head of the world: (identity (1, P), attributes), drawn from the world's prior."""
    import torch

    from ip2n.synthetic.world.attributes import sample_attributes, sample_identity

    random = torch.Generator().manual_seed(seed)
    identity = sample_identity(1, random)
    return identity, sample_attributes(random)


def example_heads(count: int = len(EXAMPLES)) -> list[tuple[torch.Tensor, dict, str]]:
    """The examples' source heads: [(identity (1, P), attributes, instruction)], from fixed seeds."""
    heads = []
    for seed, instruction, overrides in EXAMPLES[:count]:
        identity, attributes = sample_head(seed)
        heads.append((identity, {**attributes, **overrides}, instruction))
    return heads


def render_portrait(
    identity: torch.Tensor,
    attributes: dict,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    *,
    seed: int | None = None,
) -> Image.Image:
    """A 128² PIL portrait of a synthetic head at yaw/pitch degrees, marked as a head of the world
    (`ip2n.synthetic.world.marks`): what the built-in model edits. Save it with
    `ip2n.export.images.save_image` (or Pillow with `pnginfo`) to keep the mark in the PNG: Pillow's
    plain `save` drops it. `seed` (of `sample_head`) is recorded in the mark when given."""
    import torch

    from ip2n.export.images import to_pil
    from ip2n.rendering.cameras import camera_labels
    from ip2n.synthetic.world.attributes import complete_attributes
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset
    from ip2n.synthetic.world.marks import mark_world_image

    generator = SyntheticHeadGenerator(synthetic_preset(PRESET_NAME)).eval()
    camera = camera_labels(math.radians(yaw_deg), math.radians(pitch_deg))
    with torch.no_grad():
        image = generator.synthesis(generator.encode_heads(identity, [attributes]), camera)["image"][0]
    record = {
        "rendered_by": "ip2n.builtin.render_portrait",
        "seed": seed,
        "identity": [round(float(value), 6) for value in identity.reshape(-1).tolist()],
        "attributes": complete_attributes(attributes),
        "yaw_deg": float(yaw_deg),
        "pitch_deg": float(pitch_deg),
    }
    return mark_world_image(to_pil(image), record)


def _load_builtin(device: torch.device, progress: bool) -> EditPipeline:
    return load_synthetic_pipeline(device, progress=progress)


def _load_world_folder(folder: Path, device: torch.device, progress: bool) -> EditPipeline:
    return load_synthetic_pipeline(device, folder, progress=progress)


def _is_world_generator(pipeline: EditPipeline) -> bool:
    """Whether the pipeline renders with the world generator `load_synthetic_pipeline` rebuilds."""
    from ip2n.synthetic.world.generator import SyntheticHeadGenerator, synthetic_preset

    generator = pipeline.generator
    return isinstance(generator, SyntheticHeadGenerator) and generator.config == synthetic_preset(PRESET_NAME)


# The pipeline finds the built-in model, and folders of synthetic worlds, through the registry.
register_model(PRESET_NAME, ModelPreset(_load_builtin, builtin_edit_defaults, world_model=True))
register_folder_kind(SYNTHETIC_WORLD_KIND, FolderKind("world.json", _load_world_folder, _is_world_generator))
