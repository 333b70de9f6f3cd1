"""What a factory run is made of: its settings, edits, jobs (one per pair) and the state of a pair.

Everything random about a pair is drawn from seeds derived from (run seed, what, pair): a pair's
head, pose, edit, editor seeds and phrasings do not depend on which other pairs run, in which
order, in which process or on which machine. That is what makes a resumed run, a one-process run
and a Ray run produce the same accepted set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EDITORS = ("world", "ip2p")
FILTERS = ("degenerate", "change", "identity", "clip", "face")

# Reason codes of a rejected pair (manifest "reason") → what they mean (report.md, docs).
REASONS: dict[str, str] = {
    "unreadable": "the source image cannot be read",
    "too_small": "the source image is too small",
    "no_face": "no face could be aligned in the source",
    "editor_error": "the editor failed on this pair",
    "degenerate": "the edited image is degenerate (NaN, blank or saturated)",
    "no_change": "the edit changed (almost) nothing",
    "identity": "the edit did not keep the identity (ArcFace cosine below the threshold)",
    "clip": "the change does not follow the instruction (CLIP directional similarity below the threshold)",
    "face_lost": "no face could be aligned in the edited image",
}
# The filter that sets each candidate-level reason.
FILTER_REASONS = {
    "degenerate": "degenerate",
    "change": "no_change",
    "identity": "identity",
    "clip": "clip",
    "face": "face_lost",
}


class MissingWeightsError(ValueError):
    """Weights (or a model folder) that are not where the settings say; the message says what is expected."""


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the run seed and a path of names/numbers, the same on every machine."""
    text = "/".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Edit:
    """One edit: `id` names it in the manifest and report; `prompt` is what a 2-D editor is told;
    `attributes` (attribute → target value) is set for edits of the synthetic world's attributes,
    whose instructions come from the world's phrasing grammar."""

    id: str
    prompt: str
    attributes: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "attributes": self.attributes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Edit:
        return cls(str(data["id"]), str(data["prompt"]), data.get("attributes"))


@dataclass(frozen=True)
class FactorySettings:
    """Settings of one data set. Everything here that changes which pairs are made or accepted is in
    the fingerprint (`fingerprint_fields`): a rerun on the same OUT must use the same values."""

    editor: str = "world"
    seed: int = 0
    # Sources: `world_heads` heads of the synthetic world, or the photos passed to make_dataset.
    world_heads: int = 0
    world_size: int = 128  # side of the world's rendered images (the neural render is half of it)
    edits_per_source: int = 1  # photos: pairs made from each source (distinct edits)
    # The 2-D editor (ip2p): weights (a local folder or a Hugging Face model id) and its knobs.
    ip2p_weights: str | None = None
    seeds_per_pair: int = 3  # candidates per (image, instruction); the best one that passes is kept
    steps: int = 50
    text_guidance: float = 7.5
    image_guidance: float = 1.5
    resolution: int = 512  # side of the square images the 2-D editor sees and the pairs are saved at
    # Instructions written per pair (drawn uniformly from min..max, deduplicated).
    min_phrasings: int = 20
    max_phrasings: int = 30
    # Filters and their thresholds.
    min_identity: float = 0.5  # ArcFace cosine, source vs edit
    min_change: float = 0.001  # mean absolute pixel change, images in [0, 1]
    min_clip_direction: float = 0.05  # CLIP directional similarity
    skip_filters: tuple[str, ...] = ()
    identity_weights: str | None = None  # folder or file of the ArcFace network (photos)
    clip_model: str | None = None  # open_clip model name; None: the CLIP filter is skipped
    clip_pretrained: str | None = None  # open_clip pretrained tag or local weights file
    min_source_side: int = 64  # photos smaller than this (pixels, shorter side) are rejected
    paraphraser: str | None = None  # a local instruction-tuned model (transformers text generation)
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = []
        if self.editor not in EDITORS:
            problems.append(f"editor must be one of {', '.join(EDITORS)}, got {self.editor!r}")
        if self.world_heads < 0:
            problems.append(f"world_heads must be at least 0, got {self.world_heads}")
        if self.world_size < 32 or self.world_size % 2:
            problems.append(f"world_size must be an even number of at least 32, got {self.world_size}")
        if self.edits_per_source < 1:
            problems.append(f"edits_per_source must be at least 1, got {self.edits_per_source}")
        if self.seeds_per_pair < 1:
            problems.append(f"seeds_per_pair must be at least 1, got {self.seeds_per_pair}")
        if self.steps < 1:
            problems.append(f"steps must be at least 1, got {self.steps}")
        if self.resolution < 64 or self.resolution % 8:
            problems.append(f"resolution must be a multiple of 8, at least 64, got {self.resolution}")
        if not 1 <= self.min_phrasings <= self.max_phrasings:
            problems.append(
                "phrasings per pair must satisfy 1 ≤ min ≤ max, "
                f"got {self.min_phrasings}-{self.max_phrasings}"
            )
        unknown = set(self.skip_filters) - set(FILTERS)
        if unknown:
            problems.append(f"unknown filters {sorted(unknown)}; filters: {', '.join(FILTERS)}")
        for name in ("min_identity", "min_change", "min_clip_direction", "text_guidance", "image_guidance"):
            if not np.isfinite(getattr(self, name)):
                problems.append(f"{name} must be a finite number")
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **changes: Any) -> FactorySettings:
        return dataclasses.replace(self, **changes)

    def filter_enabled(self, name: str) -> bool:
        return name not in self.skip_filters

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that decide the data set (all but the device)."""
        fields = dataclasses.asdict(self)
        fields.pop("device")
        fields["skip_filters"] = sorted(self.skip_filters)
        if self.editor == "world":  # the 2-D editor's knobs do not apply
            for name in ("ip2p_weights", "seeds_per_pair", "steps", "text_guidance", "image_guidance"):
                fields.pop(name)
        return fields


@dataclass(frozen=True)
class SourceRef:
    """Where a pair's source comes from: a photo (path relative to the sources' root, and the full
    path) or head number `index` of the synthetic world."""

    kind: str  # "photo" | "world"
    name: str  # manifest "source": relative path, or "world-head-NNNNN"
    path: str | None = None
    index: int | None = None


@dataclass(frozen=True)
class Job:
    """One pair to make. `edit` is None for world sources, whose edit is drawn once the head is known."""

    index: int
    name: str  # the pair's folder and file stem, e.g. "00042"
    source: SourceRef
    edit: Edit | None
    seeds: tuple[int, ...]


@dataclass
class Candidate:
    """One output of the editor for a pair (one per seed): the image (uint8 (H, W, 3), None when the
    output held NaN or infinity), its filter scores and the first filter it failed."""

    seed: int
    image: np.ndarray | None
    scores: dict[str, float | None] = field(default_factory=dict)
    failed: str | None = None  # reason code (REASONS) or None when it passed every filter
    detail: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairState:
    """A pair as it goes through the stages: prepared source → candidates → verdict."""

    job: Job
    edit: Edit | None = None
    source_image: np.ndarray | None = None  # uint8 (H, W, 3)
    camera: list[float] | None = None  # 25-number EG3D label of the source (shared by the edit)
    source_meta: dict[str, Any] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None  # index into candidates of the kept one
    reason: str | None = None  # set when rejected
    detail: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.reason is None and self.chosen is not None

    def reject(self, reason: str, detail: str = "") -> PairState:
        self.reason, self.detail, self.chosen = reason, detail, None
        return self


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:16]
