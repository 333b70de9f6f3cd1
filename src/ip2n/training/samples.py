"""Sample grids during training: source | target | edited for a few fixed training pairs.

Each row shows the frontal renders (frozen generator) of the encoded source, of the encoded edited
image and of the EMA model's edit of the source — the official guided partial DDIM of the edit
pipeline, with its default strength and guidance scales — captioned with the instruction. The
pairs, prompts and diffusion noise are the same at every step, so successive grids differ only by
the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw

from ip2n.defaults import DEFAULT_IMAGE_SCALE, DEFAULT_STRENGTH, DEFAULT_TEXT_SCALE
from ip2n.diffusion import DiT, pack_latent, unpack_latent
from ip2n.diffusion.editing import edit_codes, edit_schedule
from ip2n.export.images import make_grid, to_pil
from ip2n.rendering.cameras import frontal_camera
from ip2n.text import PromptEncoder
from ip2n.training.data import TripletDataset
from ip2n.training.encoding import PairEncodings
from ip2n.training.models import FrozenNetworks
from ip2n.training.sharded_cache import ShardedEncodings

CAPTION_HEIGHT = 14  # pixels of the instruction strip under each row
COLUMNS = 3  # source, target, edited
PADDING = 4  # make_grid's padding between tiles


@dataclass(frozen=True)
class SampleSet:
    """The fixed rows of every grid: K pairs with one instruction each (tensors on the training device)."""

    instructions: tuple[str, ...]
    source_latent: torch.Tensor  # (K, w_dim, 4, 4) packed offsets from latent_avg
    edited_latent: torch.Tensor  # (K, w_dim, 4, 4)
    source_identity: torch.Tensor  # (K, 512) identity conditioning of the edit
    noise: torch.Tensor  # (K, w_dim, 4, 4) the partial DDIM's starting noise


def choose_samples(
    dataset: TripletDataset,
    encodings: PairEncodings | ShardedEncodings,
    count: int,
    seed: int,
    device: torch.device,
) -> SampleSet:
    """The first instruction of each of the first `count` pairs, with noise drawn from `seed`."""
    first: dict[int, str] = {}
    for sample in dataset.samples:
        if len(first) == count:
            break
        first.setdefault(sample.pair_index, sample.instruction)
    rows = encodings.rows(torch.tensor(list(first), dtype=torch.int64))
    noise = torch.randn(rows.source_latent.shape, generator=torch.Generator().manual_seed(seed))
    return SampleSet(
        instructions=tuple(first.values()),
        source_latent=rows.source_latent.to(device),
        edited_latent=rows.edited_latent.to(device),
        source_identity=rows.source_identity.to(device),
        noise=noise.to(device),
    )


@torch.no_grad()
def render_frontal(packed: torch.Tensor, networks: FrozenNetworks, resolution: int | None) -> torch.Tensor:
    """Packed offsets (K, w_dim, 4, 4) → frontal renders (K, 3, R, R) in [-1, 1]."""
    ws = unpack_latent(packed, networks.latent_avg)  # (K, 14, w_dim) absolute
    cameras = frontal_camera(device=packed.device).expand(ws.shape[0], -1)  # (K, 25)
    return networks.generator.synthesis(ws, cameras, neural_rendering_resolution=resolution)["image"]


@torch.no_grad()
def edit_samples(dit: DiT, samples: SampleSet, networks: FrozenNetworks, num_steps: int) -> torch.Tensor:
    """The model's edits of the sample sources: packed offsets (K, w_dim, 4, 4)."""
    prompts = PromptEncoder(networks.text_encoder)
    contexts = prompts.encode_prompts(list(samples.instructions))  # (K, 77, D)
    null_context = prompts.encode_prompts([""])[0]  # (77, D)
    codes = edit_codes(
        dit,
        unpack_latent(samples.source_latent),
        contexts,
        null_context,
        edit_schedule(num_steps, DEFAULT_STRENGTH),
        strength=DEFAULT_STRENGTH,
        text_scale=DEFAULT_TEXT_SCALE,
        image_scale=DEFAULT_IMAGE_SCALE,
        noise=samples.noise,
        identity=samples.source_identity,
    )  # (K, 14, w_dim)
    return pack_latent(codes)


def sample_grid(
    dit: DiT, samples: SampleSet, networks: FrozenNetworks, num_steps: int, resolution: int | None
) -> Image.Image:
    """One grid: a row of source | target | edited renders per sample, the instruction below it.

    `dit` must be in eval mode (the EMA model is). Size: 3 tiles of the generator's image size
    R plus padding wide, K · (R + CAPTION_HEIGHT) plus padding high.
    """
    edited = edit_samples(dit, samples, networks, num_steps)
    columns = [
        render_frontal(latent, networks, resolution)
        for latent in (samples.source_latent, samples.edited_latent, edited)
    ]  # 3 × (K, 3, R, R)
    rows = []
    for index, instruction in enumerate(samples.instructions):
        tiles = make_grid([to_pil(column[index]) for column in columns], columns=COLUMNS, padding=PADDING)
        rows.append(_with_caption(tiles, instruction))
    return make_grid(rows, columns=1, padding=PADDING)


def _with_caption(image: Image.Image, text: str) -> Image.Image:
    captioned = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT), "white")
    captioned.paste(image, (0, 0))
    drawing = ImageDraw.Draw(captioned)
    # The default font is ~6 px per character: cut what does not fit (ASCII dots: any font has them).
    limit = max(image.width // 6, 4)
    caption = text if len(text) <= limit else text[: limit - 3] + "..."
    drawing.text((2, image.height + 1), caption, fill="black")
    return captioned
