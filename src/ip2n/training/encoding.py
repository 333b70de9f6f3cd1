"""Pre-encoding of the image pairs with the frozen networks, once per run (optionally cached on disk).

The PREIM3D encoder and ArcFace never change during training, so every image is encoded once instead
of once per epoch. Per pair this keeps the packed source and edited latents and the identity
features of both images (the source's condition the DiT, the edited one's are the identity loss
target).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ip2n.checkpoints.safetensors_io import load_weights, save_weights, weights_paths
from ip2n.diffusion import pack_latent
from ip2n.encoding import encoder_input
from ip2n.training.data import DataReport, ImagePair, TripletDataset
from ip2n.training.models import FrozenNetworks

logger = logging.getLogger(__name__)

CACHE_KIND = "ip2n_training_encodings"


@dataclass(frozen=True)
class PairEncodings:
    """Per-pair tensors, row p = dataset.pairs[p]; CPU float32."""

    source_latent: torch.Tensor  # (P, w_dim, 4, 4) packed W+ offsets from latent_avg
    edited_latent: torch.Tensor  # (P, w_dim, 4, 4)
    source_identity: torch.Tensor  # (P, 512) unit vectors
    edited_identity: torch.Tensor  # (P, 512) unit vectors

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.__dict__)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(w_dim, 4, 4): the shape of one packed latent."""
        return tuple(self.edited_latent.shape[1:])

    def rows(self, pairs: torch.Tensor) -> PairEncodings:
        """The encodings of pair rows `pairs` (K,) int64, in that order."""
        return PairEncodings(**{name: value[pairs] for name, value in self.as_dict().items()})


def _read_image(path: Path, resolution: int) -> torch.Tensor | None:
    """(3, S, S) in [-1, 1], or None when the file cannot be decoded."""
    try:
        with Image.open(path) as image:
            return encoder_input(image.convert("RGB"), resolution)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        logger.debug("cannot decode %s: %s", path, exc)
        return None


@torch.no_grad()
def encode_image_pairs(
    pairs: Sequence[ImagePair], networks: FrozenNetworks, report: DataReport, batch_size: int = 16
) -> tuple[list[bool], PairEncodings | None]:
    """Encode `pairs`; those with an unreadable image are left out (warning + count in `report`).

    Returns which pairs were encoded and their encodings (None when none was readable).
    """
    device = networks.latent_avg.device
    keep: list[bool] = []
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in PairEncodings.__dataclass_fields__}
    batch: list[tuple[torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        images = torch.stack([image for pair in batch for image in pair]).to(
            device
        )  # (2B, 3, S, S): src, edit, …
        codes = networks.encoder(images)  # (2B, 14, w_dim)
        identity = networks.identity(images)  # (2B, 512), pooled to 112² inside as the official features

        latents = pack_latent(codes).float().cpu()
        chunks["source_latent"].append(latents[0::2])
        chunks["edited_latent"].append(latents[1::2])
        chunks["source_identity"].append(identity[0::2].float().cpu())
        chunks["edited_identity"].append(identity[1::2].float().cpu())
        batch.clear()

    for pair in pairs:
        source = _read_image(pair.source_path, networks.encoder_resolution)
        edited = _read_image(pair.edited_path, networks.encoder_resolution)
        keep.append(source is not None and edited is not None)
        if source is None or edited is None:
            report.skip("unreadable image", pair.source_path.parent.name)
            continue
        batch.append((source, edited))
        if len(batch) == batch_size:
            flush()
    flush()
    if not any(keep):
        return keep, None
    return keep, PairEncodings(**{name: torch.cat(parts) for name, parts in chunks.items()})


def encode_pairs(
    dataset: TripletDataset, networks: FrozenNetworks, report: DataReport, batch_size: int = 16
) -> tuple[list[bool], PairEncodings]:
    """Encode every pair of `dataset` in memory (see `encode_image_pairs`); no readable pair is an error.

    Returns which pairs were encoded (`dataset.keep_pairs(keep)` drops the others) and their encodings.
    """
    keep, encodings = encode_image_pairs(dataset.pairs, networks, report, batch_size)
    if encodings is None:
        raise ValueError(f"no readable image pair in {dataset.root}")
    return keep, encodings


def pair_names(dataset: TripletDataset) -> list[str]:
    return [pair.source_path.relative_to(dataset.root).as_posix() for pair in dataset.pairs]


def save_encodings(
    path: str | os.PathLike,
    dataset: TripletDataset,
    keep: list[bool],
    encodings: PairEncodings,
    fingerprint: dict,
) -> None:
    """Write the cache (atomic safetensors; scanned pair names, which were readable, network config)."""
    meta = {"kind": CACHE_KIND, "pairs": pair_names(dataset), "keep": keep, "networks": fingerprint}
    save_weights(path, encodings.as_dict(), meta)


def load_encodings(
    path: str | os.PathLike, dataset: TripletDataset, fingerprint: dict
) -> tuple[list[bool], PairEncodings] | None:
    """(keep, encodings) from the cache when it was made for exactly these pairs and networks, else None."""
    if not weights_paths(path)[0].is_file():
        return None
    tensors, meta = load_weights(path)
    if (
        meta.get("kind") != CACHE_KIND
        or meta.get("pairs") != pair_names(dataset)
        or meta.get("networks") != fingerprint
    ):
        logger.warning("encoding cache %s does not match this data set or these networks; re-encoding", path)
        return None
    logger.info("using cached encodings of %d pairs from %s", sum(meta["keep"]), path)
    return meta["keep"], PairEncodings(**{name: tensors[name] for name in PairEncodings.__dataclass_fields__})


def network_fingerprint(model_config: dict) -> dict:
    """What the cached encodings depend on (JSON-comparable)."""
    keys = ("encoder", "encoder_type", "encoder_overrides", "identity", "weights_dir", "init_seed")
    return json.loads(json.dumps({key: model_config[key] for key in keys}))
