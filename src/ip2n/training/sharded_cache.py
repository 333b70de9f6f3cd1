"""The encoding cache as several safetensors shards, read through memory maps: for data sets whose
encodings do not fit in memory.

    <cache>.index.json       kind, scanned pair names, which were readable, network fingerprint, shards
    <cache>-00000.safetensors   the four PairEncodings tensors of up to `shard_pairs` scanned pairs
    <cache>-00001.safetensors   …

`<cache>` is `data.cache` without its `.safetensors` suffix. The writer encodes one shard at a time
(memory: one shard), writes each atomically and the index last, so an interrupted write leaves no
index and is redone. The reader maps every shard's tensors with `numpy.memmap` and copies out only
the rows a batch asks for; the operating system pages the rest in and out as needed.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ip2n.atomic import atomic_path, write_text_atomic
from ip2n.training.data import DataReport, TripletDataset
from ip2n.training.encoding import PairEncodings, encode_image_pairs, pair_names
from ip2n.training.models import FrozenNetworks

logger = logging.getLogger(__name__)

SHARDED_CACHE_KIND = "ip2n_training_encodings_sharded"
_FIELDS = tuple(PairEncodings.__dataclass_fields__)
_NUMPY_DTYPES = {"F32": np.float32}  # the writer stores float32 only


def _base(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix == ".safetensors" else path


def index_path(path: str | os.PathLike) -> Path:
    base = _base(path)
    return base.with_name(base.name + ".index.json")


def _shard_path(path: str | os.PathLike, number: int) -> Path:
    base = _base(path)
    return base.with_name(f"{base.name}-{number:05d}.safetensors")


def write_sharded_encodings(
    path: str | os.PathLike,
    dataset: TripletDataset,
    networks: FrozenNetworks,
    report: DataReport,
    fingerprint: dict,
    shard_pairs: int,
    batch_size: int = 16,
) -> list[bool]:
    """Encode `dataset` shard by shard into the sharded cache at `path`; returns which pairs were readable.

    Raises ValueError when no pair is readable (then no index is written).
    """
    keep: list[bool] = []
    shards: list[dict[str, str | int]] = []
    for start in range(0, len(dataset.pairs), shard_pairs):
        shard_keep, encodings = encode_image_pairs(
            dataset.pairs[start : start + shard_pairs], networks, report, batch_size
        )
        keep.extend(shard_keep)
        if encodings is None:
            continue  # every pair of this shard was unreadable: nothing to store
        shard = _shard_path(path, len(shards))
        with atomic_path(shard) as tmp:
            save_file({name: value.contiguous() for name, value in encodings.as_dict().items()}, tmp)
        shards.append({"file": shard.name, "rows": int(encodings.source_latent.shape[0])})
    if not shards:
        raise ValueError(f"no readable image pair in {dataset.root}")
    index = {
        "kind": SHARDED_CACHE_KIND,
        "pairs": pair_names(dataset),
        "keep": keep,
        "networks": fingerprint,
        "shards": shards,
    }
    write_text_atomic(index_path(path), json.dumps(index) + "\n")
    logger.info(
        "wrote the encodings of %d pairs as %d shards (index %s)", sum(keep), len(shards), index_path(path)
    )
    return keep


def load_sharded_encodings(
    path: str | os.PathLike, dataset: TripletDataset, fingerprint: dict
) -> tuple[list[bool], ShardedEncodings] | None:
    """(keep, encodings) when the sharded cache at `path` was made for these pairs and networks, else None."""
    index_file = index_path(path)
    if not index_file.is_file():
        return None
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("cannot read the encoding cache index %s (%s); re-encoding", index_file, exc)
        return None
    if (
        index.get("kind") != SHARDED_CACHE_KIND
        or index.get("pairs") != pair_names(dataset)
        or index.get("networks") != fingerprint
    ):
        logger.warning(
            "encoding cache %s does not match this data set or these networks; re-encoding", index_file
        )
        return None
    shard_files = [index_file.parent / shard["file"] for shard in index["shards"]]
    if not all(shard.is_file() for shard in shard_files):
        logger.warning("encoding cache %s lacks shard files; re-encoding", index_file)
        return None
    encodings = ShardedEncodings(shard_files)
    if len(encodings) != sum(index["keep"]):
        logger.warning(
            "encoding cache %s has %d rows for %d readable pairs; re-encoding",
            index_file,
            len(encodings),
            sum(index["keep"]),
        )
        return None
    logger.info(
        "using cached encodings of %d pairs from %d shards (%s)", len(encodings), len(shard_files), index_file
    )
    return index["keep"], encodings


def _memory_map(path: Path) -> dict[str, np.memmap]:
    """Read-only memory maps of the tensors of a safetensors file (8-byte header size, JSON header, data)."""
    with path.open("rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    header.pop("__metadata__", None)
    maps = {}
    for name, entry in header.items():
        start, _ = entry["data_offsets"]
        maps[name] = np.memmap(
            path,
            dtype=_NUMPY_DTYPES[entry["dtype"]],
            mode="r",
            offset=8 + header_size + start,
            shape=tuple(entry["shape"]),
        )
    return maps


class ShardedEncodings:
    """Pair encodings spread over shard files; `rows` reads just the requested rows (CPU float32).

    Row p is the p-th readable pair, as in the in-memory `PairEncodings`.
    """

    def __init__(self, shard_files: list[Path]):
        self._maps = [_memory_map(path) for path in shard_files]
        sizes = [maps[_FIELDS[0]].shape[0] for maps in self._maps]
        self._starts = np.cumsum([0, *sizes])  # (S + 1,) first row of each shard, then the total

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(w_dim, 4, 4): the shape of one packed latent."""
        return tuple(self._maps[0]["edited_latent"].shape[1:])

    def rows(self, pairs: torch.Tensor) -> PairEncodings:
        """The encodings of pair rows `pairs` (K,) int64, in that order."""
        positions = pairs.numpy()
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"pair rows must lie in [0, {len(self)}), got {positions.tolist()}")
        shards = np.searchsorted(self._starts, positions, side="right") - 1  # (K,)
        gathered = {}
        for name in _FIELDS:
            parts = np.empty((len(positions), *self._maps[0][name].shape[1:]), dtype=np.float32)
            for shard in np.unique(shards):
                selected = shards == shard
                parts[selected] = self._maps[shard][name][positions[selected] - self._starts[shard]]
            gathered[name] = torch.from_numpy(parts)
        return PairEncodings(**gathered)
