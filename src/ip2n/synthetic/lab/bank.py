"""A bank of rendered heads with their ground truth: the training images of the world's vision models.

`n_identities` random identities, each rendered `views_per_identity` times with freshly drawn
attributes and poses, so that the inversion encoder sees every attribute on every kind of face, the
identity network learns that attributes and pose do not change who someone is, and the attribute
classifier sees each attribute from many angles. Rendering is the slow part (about 0.4 s per 64²
view on one thread), so it is spread over worker processes; every view is drawn from its own seed,
so the bank does not depend on how many workers rendered it.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ip2n.atomic import atomic_path
from ip2n.rendering.cameras import camera_labels
from ip2n.synthetic.world.attributes import sample_attributes, sample_identity
from ip2n.synthetic.world.generator import SyntheticHeadGenerator, SyntheticHeadsConfig, synthetic_preset
from ip2n.synthetic.world.latent import coordinates_from

# The vision models of the built-in world read 64² images: four times cheaper to render and to train
# on than 128², and every attribute still shows.
BANK_RESOLUTION = 64
VIEWS_PER_TASK = 16
# View set 1's seeds (`render_bank`'s `view_set`) lie 2³¹ above set 0's. The CPU generator keeps only a
# seed's low 32 bits, so a larger stride would repeat set 0 (2⁴⁰ did), and this one allows two sets.
VIEW_SET_STRIDE = 2**31
VIEW_SETS = 2


def bank_generator_config(resolution: int = BANK_RESOLUTION) -> SyntheticHeadsConfig:
    """The synthetic generator rendering bank images: neural render at half the image side."""
    return dataclasses.replace(
        synthetic_preset("synthetic"), img_resolution=resolution, neural_rendering_resolution=resolution // 2
    )


@dataclass(frozen=True)
class HeadBank:
    """Rendered heads and their truth; row i of every tensor is view i."""

    images: torch.Tensor  # (N, 3, R, R) uint8
    coordinates: torch.Tensor  # (N, K) float32 ground-truth latent coordinates (ip2n.synthetic.world.latent)
    identity_index: torch.Tensor  # (N,) int64, which identity the view shows
    cameras: torch.Tensor  # (N, 25) EG3D camera labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def pixels(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """Images of `rows` as float (n, 3, R, R) in [-1, 1]."""
        return self.images[rows].float().div(127.5).sub(1.0)

    def select(self, mask: torch.Tensor) -> HeadBank:
        """The views where `mask` (N,) is true, every tensor alike."""
        return HeadBank(*(getattr(self, field.name)[mask] for field in dataclasses.fields(self)))

    def joined(self, other: HeadBank) -> HeadBank:
        """This bank's views followed by `other`'s (same resolution; identity indices kept as they are)."""
        if other.images.shape[1:] != self.images.shape[1:]:
            raise ValueError(
                f"cannot join banks of {tuple(self.images.shape[1:])} "
                f"and {tuple(other.images.shape[1:])} images"
            )
        return HeadBank(
            *(
                torch.cat([getattr(self, field.name), getattr(other, field.name)])
                for field in dataclasses.fields(self)
            )
        )

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        with atomic_path(path) as temporary:
            save_file(
                {field.name: getattr(self, field.name).contiguous() for field in dataclasses.fields(self)},
                str(temporary),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> HeadBank:
        return cls(**load_file(str(path)))

    @staticmethod
    def views_in(path: str | os.PathLike) -> int:
        """How many views the bank file holds, from its header alone (no image is read)."""
        with safe_open(str(path), framework="pt") as bank_file:
            return bank_file.get_slice("images").get_shape()[0]


def _view_spec(
    seed: int, index: int, views_per_identity: int, view_set: int = 0
) -> tuple[torch.Tensor, dict, float, float]:
    """(identity (1, P), attributes, yaw, pitch) of view `index`: identity from its identity's seed
    (the same in every view set), attributes and pose from the view's own."""
    identity_seed = torch.Generator().manual_seed(seed * 1_000_003 + index // views_per_identity)
    identity = sample_identity(1, identity_seed)
    view = torch.Generator().manual_seed(seed * 1_000_003 + 500_000 + index + view_set * VIEW_SET_STRIDE)
    attributes = sample_attributes(view)
    # The bank covers the evaluation's pose range evenly (yaw ±30°, pitch ±20°) rather than the
    # frontal-heavy data distribution: the encoder and classifiers must work at every view.
    yaw, pitch = (
        (torch.rand(2, generator=view) * 2 - 1) * torch.tensor([math.radians(30), math.radians(20)])
    ).tolist()
    return identity, attributes, yaw, pitch


def _render_views(
    seed: int, indices: list[int], views_per_identity: int, resolution: int, view_set: int = 0
) -> dict[str, torch.Tensor]:
    """Worker: render `indices` on one thread → tensors of `HeadBank` (identity_index included)."""
    torch.set_num_threads(1)
    model = SyntheticHeadGenerator(bank_generator_config(resolution)).eval()
    specs = [_view_spec(seed, index, views_per_identity, view_set) for index in indices]
    identity = torch.cat([spec[0] for spec in specs])
    coordinates = coordinates_from(identity, [spec[1] for spec in specs])
    cameras = camera_labels(torch.tensor([s[2] for s in specs]), torch.tensor([s[3] for s in specs]))
    with torch.no_grad():
        images = model.synthesis(model.encode_heads(identity, [spec[1] for spec in specs]), cameras)["image"]
    return {
        "images": images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8),
        "coordinates": coordinates,
        "identity_index": torch.tensor([index // views_per_identity for index in indices]),
        "cameras": cameras,
    }


def render_bank(
    n_identities: int,
    views_per_identity: int,
    *,
    seed: int,
    resolution: int = BANK_RESOLUTION,
    workers: int = 2,
    view_set: int = 0,
    progress: bool = True,
) -> HeadBank:
    """Render the bank (see the module docstring) with `workers` single-threaded processes.

    `view_set` > 0 draws other views (attributes and poses) of the same identities, the first
    `n_identities` of every bank of this `seed`: more views of who they are, for the identity network.
    """
    if n_identities < 1 or views_per_identity < 1:
        raise ValueError("a bank needs at least one identity and one view per identity")
    if view_set not in range(VIEW_SETS):
        raise ValueError(f"view_set must be one of {list(range(VIEW_SETS))}, got {view_set}")
    total = n_identities * views_per_identity
    tasks = [
        list(range(start, min(start + VIEWS_PER_TASK, total))) for start in range(0, total, VIEWS_PER_TASK)
    ]
    parts: list[dict[str, torch.Tensor] | None] = [None] * len(tasks)
    with tqdm(total=total, desc="rendering heads", unit="view", disable=not progress) as bar:
        if workers <= 1:
            for number, task in enumerate(tasks):
                parts[number] = _render_views(seed, task, views_per_identity, resolution, view_set)
                bar.update(len(task))
        else:
            # spawn: forked children would inherit the parent's OpenMP state, which can deadlock them.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {
                    pool.submit(_render_views, seed, task, views_per_identity, resolution, view_set): number
                    for number, task in enumerate(tasks)
                }
                for future in as_completed(futures):
                    parts[futures[future]] = future.result()
                    bar.update(len(tasks[futures[future]]))
    rendered = cast("list[dict[str, torch.Tensor]]", parts)  # every task has filled its part
    return HeadBank(**{name: torch.cat([part[name] for part in rendered]) for name in rendered[0]})
