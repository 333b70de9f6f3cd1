"""The factory's output folder: the official triplet layout, the append-only manifest, resume.

    OUT/
      factory.json            what this data set is (settings, sources, edits): a rerun must match it
      manifest.jsonl          one JSON line per finished pair, appended as pairs finish
      dataset.json            {"labels": [["00000/00000_0.png", [25 numbers]], ...]}, accepted pairs
      00000/00000_0.png       source (aligned crop / rendered head)
      00000/00000_1.png       edited image
      00000/00000.txt         20–30 instructions, one per line
      rejected/00001.png      source | edit of a rejected pair, side by side (for the contact sheet;
                              no `_0.png` name, so `ip2n train` never reads it)
      report.md, report/      counts, score histograms, contact sheet

Every file is written atomically (`ip2n.atomic`); a pair's images and instructions are written
before its manifest line, so a manifest line means its files are complete. The manifest is only
ever appended to, one line per pair, flushed and synced; a line cut by a crash (the last one) is
skipped when read. A pair counts as done when its last manifest line says accepted (and its files
are there) or rejected for a reason that a rerun would not change (`editor_error` is retried).
`dataset.json` is rebuilt from the manifest at the end of every run, so a killed run's data set is
complete again after the next one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ip2n.atomic import write_text_atomic
from ip2n.export.images import save_image
from ip2n.factory.spec import PairState, canonical_json

logger = logging.getLogger(__name__)

FORMAT = 1
FACTORY_JSON = "factory.json"
MANIFEST = "manifest.jsonl"
DATASET_JSON = "dataset.json"
REJECTED_DIR = "rejected"
RETRIED_REASONS = ("editor_error",)


class OutputFolderError(ValueError):
    """An OUT that cannot take this data set (another data set, other files, not a folder)."""


def check_output(out: Path, identity: dict[str, Any]) -> bool:
    """Whether `out` can take the data set described by `identity` → True when it resumes one.

    Writes nothing. Refuses a file, a non-empty folder that is not a factory output, and a factory
    output made with other settings, sources or edits (naming what differs).
    """
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output {out} exists and is not a folder; choose another -o")
    if not out.exists() or not any(out.iterdir()):
        return False
    record_path = out / FACTORY_JSON
    if not record_path.is_file():
        raise OutputFolderError(
            f"{out} already holds files and is not a data set made by `ip2n data make` (no {FACTORY_JSON}); "
            "choose a new or empty folder for -o"
        )
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputFolderError(f"cannot read {record_path} ({exc}); choose a new folder for -o") from None
    if record.get("fingerprint") == identity["fingerprint"]:
        return True
    differences = [
        key
        for key in sorted(set(record.get("identity", {})) | set(identity["identity"]))
        if canonical_json(record.get("identity", {}).get(key))
        != canonical_json(identity["identity"].get(key))
    ]
    detail = []
    for key in differences[:8]:
        old, new = record.get("identity", {}).get(key), identity["identity"].get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed = [
                k
                for k in sorted(set(old) | set(new))
                if canonical_json(old.get(k)) != canonical_json(new.get(k))
            ]
            detail.append(f"{key}: " + ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in changed[:6]))
        else:
            detail.append(key)
    raise OutputFolderError(
        f"{out} holds another data set (made with different {'; '.join(detail) or 'settings'}); "
        "rerun with the settings, sources and edits it was made with to resume it, "
        "or choose a new folder for -o"
    )


class Store:
    """Reads and writes one factory output folder."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.manifest = self.out / MANIFEST

    def create(self, identity: dict[str, Any]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        record = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **identity}
        write_text_atomic(
            self.out / FACTORY_JSON, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n"
        )

    # --- the manifest ---

    def records(self) -> list[dict[str, Any]]:
        """Every readable manifest line, in order (a cut or damaged line is skipped with a warning)."""
        if not self.manifest.is_file():
            return []
        records = []
        with open(self.manifest, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    logger.warning(
                        "%s, line %d is incomplete (an interrupted write); ignored", self.manifest, number
                    )
                    continue
                if isinstance(record, dict) and "pair" in record:
                    records.append(record)
        return records

    def latest(self) -> dict[str, dict[str, Any]]:
        """Pair name → its last manifest record."""
        return {record["pair"]: record for record in self.records()}

    def finished(self) -> set[str]:
        """Pairs a rerun skips (see the module docstring)."""
        done = set()
        for name, record in self.latest().items():
            if record.get("status") == "accepted":
                folder = self.out / name
                if all((folder / f"{name}{suffix}").is_file() for suffix in ("_0.png", "_1.png", ".txt")):
                    done.add(name)
            elif record.get("status") == "rejected" and record.get("reason") not in RETRIED_REASONS:
                done.add(name)
        return done

    def append(self, record: dict[str, Any]) -> None:
        """Append one line to the manifest, flushed and synced to disk."""
        line = json.dumps(record, sort_keys=True, default=str, allow_nan=False) + "\n"
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.manifest, "ab") as manifest:
            if manifest.tell() > 0 and not _ends_with_newline(self.manifest):
                manifest.write(b"\n")  # a line cut by a crash stays alone on its (skipped) line
            manifest.write(line.encode("utf-8"))
            manifest.flush()
            os.fsync(manifest.fileno())

    # --- pair files ---

    def write_pair(
        self, state: PairState, instructions: list[str], marks: tuple[dict, dict] | None = None
    ) -> None:
        """`NAME/NAME_0.png`, `NAME_1.png`, `NAME.txt`, each atomically. `marks`: the world's mark
        records of the two images (so the built-in model edits them, as `ip2n synth data`'s)."""
        assert state.chosen is not None and state.source_image is not None
        name = state.job.name
        folder = self.out / name
        edited = state.candidates[state.chosen].image
        assert edited is not None
        for side, array in ((0, state.source_image), (1, edited)):
            image = Image.fromarray(array)
            if marks is not None:
                from ip2n.synthetic.world.marks import mark_world_image

                mark_world_image(image, marks[side])
            save_image(image, folder / f"{name}_{side}.png")
        write_text_atomic(folder / f"{name}.txt", "\n".join(instructions) + "\n")

    def write_rejected(self, state: PairState) -> Path | None:
        """`rejected/NAME.png`: source | best rejected candidate (None when there is no image)."""
        if state.source_image is None:
            return None
        images = [
            c.image
            for c in state.candidates
            if c.image is not None and c.image.shape == state.source_image.shape
        ]
        if not images:
            return None
        strip = np.concatenate([state.source_image, images[0]], axis=1)
        path = self.out / REJECTED_DIR / f"{state.job.name}.png"
        save_image(Image.fromarray(strip), path)
        return path

    def write_dataset_json(self, records: Iterable[dict[str, Any]] | None = None) -> int:
        """Rebuild `dataset.json` from the accepted pairs of the manifest → their number."""
        latest = {r["pair"]: r for r in (records if records is not None else self.records())}
        labels = []
        for name in sorted(latest):
            record = latest[name]
            if record.get("status") != "accepted" or not record.get("camera"):
                continue
            for side in (0, 1):
                labels.append([f"{name}/{name}_{side}.png", [float(v) for v in record["camera"]]])
        write_text_atomic(self.out / DATASET_JSON, json.dumps({"labels": labels}))
        return len(labels) // 2


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as existing:
        existing.seek(-1, os.SEEK_END)
        return existing.read(1) == b"\n"
