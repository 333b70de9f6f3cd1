"""The official triplet layout: one folder per image pair, instructions in a text file, camera labels.

    root/
      dataset.json            {"labels": [["00001/00001_0.png", [25 numbers]], ...]}  (EG3D style)
      00001/00001_0.png       source image
      00001/00001_1.png       edited image
      00001/00001.txt         one instruction per line

Every (pair, instruction) is one training sample. Labels are looked up by the source image's path
relative to `root` (POSIX separators), falling back to its file name. Incomplete pairs (missing edited
image, instruction file or camera label, no non-empty instruction) and empty lines are skipped with a
logged warning and counted in a `DataReport`; unreadable images are found when the pair is encoded
(`ip2n.training.encoding`). A data set left with zero samples is refused.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CAMERA_LABEL_SIZE = 25
SOURCE_SUFFIX = "_0.png"
EDITED_SUFFIX = "_1.png"


@dataclass(frozen=True)
class ImagePair:
    name: str
    source_path: Path
    edited_path: Path
    camera: tuple[float, ...]  # 25-number label of the source image: cam2world (16) + intrinsics (9)


@dataclass(frozen=True)
class Sample:
    pair_index: int  # into TripletDataset.pairs
    instruction: str


@dataclass
class DataReport:
    """What was skipped while reading, by reason (count of pairs or lines)."""

    skipped: collections.Counter = field(default_factory=collections.Counter)

    def skip(self, reason: str, what: str) -> None:
        self.skipped[reason] += 1
        logger.warning("skipping %s: %s", what, reason)

    def summary(self) -> str:
        if not self.skipped:
            return "nothing skipped"
        return ", ".join(f"{count} × {reason}" for reason, count in sorted(self.skipped.items()))


@dataclass(frozen=True)
class TripletDataset:
    """Pairs and the (pair, instruction) samples built on them."""

    root: Path
    pairs: tuple[ImagePair, ...]
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def cameras(self) -> torch.Tensor:
        """Camera labels of all pairs, (P, 25) float32."""
        return torch.tensor([pair.camera for pair in self.pairs], dtype=torch.float32).reshape(
            -1, CAMERA_LABEL_SIZE
        )

    def keep_pairs(self, keep: list[bool]) -> TripletDataset:
        """The data set without the pairs whose `keep` entry is False (samples renumbered)."""
        new_index: dict[int, int] = {}
        for old, kept in enumerate(keep):
            if kept:
                new_index[old] = len(new_index)
        pairs = tuple(pair for pair, kept in zip(self.pairs, keep) if kept)
        samples = tuple(
            Sample(new_index[s.pair_index], s.instruction) for s in self.samples if s.pair_index in new_index
        )
        return _require_samples(TripletDataset(self.root, pairs, samples))


def read_camera_labels(root: Path, report: DataReport) -> dict[str, tuple[float, ...]]:
    """`dataset.json` labels by relative path and by file name; {} (with a warning) when absent or
    unreadable."""
    path = root / "dataset.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("cannot read camera labels from %s (%s); every pair will be skipped", path, exc)
        return {}
    labels: dict[str, tuple[float, ...]] = {}
    for entry in entries or []:
        try:
            name, values = entry
            label = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            report.skip("malformed camera label", repr(entry)[:80])
            continue
        if len(label) != CAMERA_LABEL_SIZE:
            report.skip("malformed camera label", f"label of {name} ({len(label)} numbers)")
            continue
        labels[str(name).replace(os.sep, "/")] = label
        labels.setdefault(Path(name).name, label)
    return labels


def read_triplets(root: str | os.PathLike) -> tuple[TripletDataset, DataReport]:
    """Scan `root` (the layout in the module docstring) → data set and skip report.

    Raises ValueError when `root` is not a folder or no sample survives.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(
            f"training data folder {root} does not exist; set data.root in the config or pass --data"
        )
    report = DataReport()
    labels = read_camera_labels(root, report)
    pairs: list[ImagePair] = []
    samples: list[Sample] = []
    for source_path in sorted(root.glob(f"*/*{SOURCE_SUFFIX}")):
        name = source_path.name[: -len(SOURCE_SUFFIX)]
        folder = source_path.parent
        edited_path = folder / f"{name}{EDITED_SUFFIX}"
        text_path = folder / f"{name}.txt"
        relative = source_path.relative_to(root).as_posix()
        if not edited_path.is_file():
            report.skip("missing edited image", str(edited_path))
            continue
        camera = labels.get(relative, labels.get(source_path.name))
        if camera is None:
            report.skip("missing camera label", relative)
            continue
        try:
            lines = text_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            report.skip("missing or unreadable instruction file", f"{text_path} ({exc.__class__.__name__})")
            continue
        instructions = [line.strip() for line in lines]
        for _ in range(sum(1 for line in instructions if not line)):
            report.skip("empty instruction line", str(text_path))
        instructions = [line for line in instructions if line]
        if not instructions:
            report.skip("no instruction", str(text_path))
            continue
        samples.extend(Sample(len(pairs), text) for text in instructions)
        pairs.append(ImagePair(name, source_path, edited_path, camera))
    dataset = _require_samples(TripletDataset(root, tuple(pairs), tuple(samples)))
    logger.info("%s: %d pairs, %d samples (%s)", root, len(pairs), len(samples), report.summary())
    return dataset, report


def _require_samples(dataset: TripletDataset) -> TripletDataset:
    if not dataset.samples:
        raise ValueError(
            f"no usable training samples in {dataset.root}: expected pair folders with <name>_0.png, "
            "<name>_1.png, <name>.txt (one instruction per line) and camera labels in dataset.json"
        )
    return dataset
