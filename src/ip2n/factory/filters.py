"""The filters that decide which edited images become training pairs, each with its score and threshold.

Every candidate (one per editor seed) is scored, in this order; the first filter it fails is its
rejection reason (`spec.REASONS`):

- **degenerate**: scores `std` (pixel standard deviation) and `saturated` (share of pixels black
  or white in every channel); passes when the image is finite, std ≥ 0.01 and saturated ≤ 0.9;
  reason `degenerate`.
- **change**: `change`, the mean absolute pixel difference to the source (images in [0, 1]);
  passes when ≥ `min_change`; reason `no_change`.
- **identity**: `identity`, the ArcFace cosine between source and edit; passes when
  ≥ `min_identity`; reason `identity`.
- **clip**: `clip`, the CLIP directional similarity (below); passes when ≥ `min_clip_direction`;
  reason `clip`.
- **face** (photos only): `face`, 1 when the edit still aligns as a face, else 0; reason
  `face_lost`.

Scores of the first four are computed for every finite candidate, so the report's histograms show
the rejected as well as the accepted; the face check, the costly one, only runs on candidates that
passed the others. Among the candidates that pass, the one with the highest CLIP score is kept
(identity cosine without CLIP; the first seed without either).

**Identity**: the official feature extraction (`ip2n.encoding.identity`): images resized to the
encoder resolution (256² for IR-SE50; the world's images as they are), [−1, 1], pooled to the
network's input, L2-normalised features; the score is their dot product. Photos use the network in
`identity_weights` (`model_ir_se50.pth` or a converted `identity.safetensors`); heads of the
synthetic world use the world's own identity network (the built-in model's).

**CLIP directional similarity** (as in StyleGAN-NADA and InstructPix2Pix's evaluation, with the
instruction in place of an edited caption): cos(E_I(edit) − E_I(source), E_T(instruction) −
E_T("a photo of a person")), all embeddings L2-normalised: does the image move the way the text
asks? It needs a CLIP model (`clip_model`, `clip_pretrained`, open_clip); without one it is
skipped with a warning and recorded as null.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ip2n.factory.spec import FILTER_REASONS, Candidate, FactorySettings, MissingWeightsError, PairState

logger = logging.getLogger(__name__)

BLANK_STD = 0.01
MAX_SATURATED = 0.9
SATURATION_MARGIN = 2  # uint8 levels from 0 or 255
NEUTRAL_CAPTION = "a photo of a person"


def degenerate_scores(image: np.ndarray) -> dict[str, float]:
    pixels = image.astype(np.float32) / 255.0
    low = (image <= SATURATION_MARGIN).all(axis=2)
    high = (image >= 255 - SATURATION_MARGIN).all(axis=2)
    return {"std": float(pixels.std()), "saturated": float((low | high).mean())}


def change_score(source: np.ndarray, edited: np.ndarray) -> float:
    return float(np.abs(source.astype(np.float32) - edited.astype(np.float32)).mean() / 255.0)


class IdentityJudge:
    """ArcFace cosine between two uint8 images with an `IdentityEncoder` (eval mode)."""

    def __init__(self, network: torch.nn.Module, resolution: int | None = 256, name: str = "") -> None:
        self.network = network.eval()
        self.resolution = resolution  # None: the images as they are
        self.name = name

    @classmethod
    def from_weights(cls, weights: str | Path, resolution: int | None = 256) -> IdentityJudge:
        from ip2n.checkpoints.editing_weights import load_identity

        path = Path(weights)
        if not path.exists():
            raise MissingWeightsError(
                f"identity weights {path} do not exist; pass the folder (or file) holding model_ir_se50.pth "
                "or a converted identity.safetensors (`ip2n weights convert`)"
            )
        return cls(load_identity(path).float(), resolution, name=str(path))

    @classmethod
    def world(cls) -> IdentityJudge:
        """The synthetic world's identity network (the built-in model's), on images as rendered."""
        from ip2n.builtin import WEIGHTS_DIR

        judge = cls.from_weights(WEIGHTS_DIR, resolution=None)
        judge.name = "built-in synthetic world identity network"
        return judge

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        from ip2n.encoding.preprocess import encoder_input

        if self.resolution is None:
            return torch.from_numpy(image).permute(2, 0, 1).float().div(127.5).sub(1.0)
        return encoder_input(image, self.resolution)

    @torch.no_grad()
    def cosine(self, source: np.ndarray, edited: np.ndarray) -> float:
        batch = torch.stack([self._tensor(source), self._tensor(edited)])
        features = torch.nn.functional.normalize(self.network(batch).float(), dim=1)
        return float((features[0] * features[1]).sum())


class ClipJudge:
    """CLIP directional similarity with an open_clip model (see the module docstring).

    `tokenize` maps a list of texts to token ids, `preprocess` a PIL image to the model's input
    tensor (both as `open_clip.create_model_and_transforms` / `open_clip.get_tokenizer` give them).
    """

    def __init__(
        self,
        model: Any,
        tokenize: Callable[[list[str]], torch.Tensor],
        preprocess: Callable[[Image.Image], torch.Tensor],
        name: str = "",
    ) -> None:
        self.model = model.eval()
        self.tokenize = tokenize
        self.preprocess = preprocess
        self.name = name
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_name(cls, model: str, pretrained: str | None, device: str = "cpu") -> ClipJudge:
        import open_clip

        if pretrained and ("/" in pretrained or Path(pretrained).suffix) and not Path(pretrained).is_file():
            raise MissingWeightsError(f"CLIP weights {pretrained} do not exist")
        network, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device
        )
        return cls(network, open_clip.get_tokenizer(model), preprocess, name=f"{model}:{pretrained}")

    @torch.no_grad()
    def _text(self, text: str) -> torch.Tensor:
        if text not in self._text_cache:
            embedding = self.model.encode_text(self.tokenize([text])).float()
            self._text_cache[text] = torch.nn.functional.normalize(embedding, dim=-1)[0]
        return self._text_cache[text]

    @torch.no_grad()
    def direction(self, source: np.ndarray, edited: np.ndarray, instruction: str) -> float:
        images = torch.stack([self.preprocess(Image.fromarray(image)) for image in (source, edited)])
        features = torch.nn.functional.normalize(self.model.encode_image(images).float(), dim=-1)
        image_direction = features[1] - features[0]
        text_direction = self._text(instruction) - self._text(NEUTRAL_CAPTION)
        return float(torch.nn.functional.cosine_similarity(image_direction, text_direction, dim=0))


@dataclass
class Judges:
    """The networks the filters use (None: that filter is skipped). `detector` checks faces in edits
    of photos; `face` False switches that check off (world heads are not photos)."""

    identity: IdentityJudge | None = None
    clip: ClipJudge | None = None
    detector: Any = None
    face: bool = True


def build_judges(settings: FactorySettings, world_sources: bool) -> Judges:
    """The judges the settings ask for (loading their networks)."""
    identity = None
    if settings.filter_enabled("identity"):
        if world_sources and not settings.identity_weights:
            identity = IdentityJudge.world()
        else:
            if not settings.identity_weights:
                raise MissingWeightsError(
                    "the identity filter needs --identity-weights (the folder of model_ir_se50.pth or a "
                    "converted identity.safetensors); or switch it off with --skip-filter identity"
                )
            identity = IdentityJudge.from_weights(
                settings.identity_weights, resolution=None if world_sources else 256
            )
    clip = None
    if settings.filter_enabled("clip") and settings.clip_model:
        clip = ClipJudge.from_name(settings.clip_model, settings.clip_pretrained, settings.device)
    face = settings.filter_enabled("face") and not world_sources
    detector = None
    if face:
        from ip2n.align.landmarks import default_detector

        detector = default_detector()
    return Judges(identity=identity, clip=clip, detector=detector, face=face)


def score_candidate(
    candidate: Candidate, state: PairState, settings: FactorySettings, judges: Judges
) -> None:
    """Fill `candidate.scores` and `candidate.failed` (the first filter it fails, or None)."""
    assert state.source_image is not None and state.edit is not None
    scores: dict[str, float | None] = {}
    failures: list[tuple[str, str]] = []
    candidate.scores = scores
    image = candidate.image
    if image is None:
        candidate.failed, candidate.detail = "degenerate", "the edited image holds NaN or infinite values"
        return
    if image.shape != state.source_image.shape:
        candidate.failed = "degenerate"
        candidate.detail = f"the edited image is {image.shape}, the source {state.source_image.shape}"
        return
    scores.update(degenerate_scores(image))
    if settings.filter_enabled("degenerate"):
        if scores["std"] is not None and scores["std"] < BLANK_STD:
            failures.append(("degenerate", f"blank image (pixel std {scores['std']:.4f} < {BLANK_STD})"))
        elif (scores["saturated"] or 0.0) > MAX_SATURATED:
            failures.append(
                ("degenerate", f"saturated image ({scores['saturated']:.0%} of pixels black or white)")
            )
    change = scores["change"] = change_score(state.source_image, image)
    if settings.filter_enabled("change") and change < settings.min_change:
        failures.append(("change", f"mean pixel change {change:.4f} < {settings.min_change:g}"))
    scores["identity"] = judges.identity.cosine(state.source_image, image) if judges.identity else None
    if judges.identity and scores["identity"] is not None and scores["identity"] < settings.min_identity:
        failures.append(("identity", f"identity cosine {scores['identity']:.3f} < {settings.min_identity:g}"))
    scores["clip"] = (
        judges.clip.direction(state.source_image, image, state.edit.prompt) if judges.clip else None
    )
    if judges.clip and scores["clip"] is not None and scores["clip"] < settings.min_clip_direction:
        failures.append(
            ("clip", f"CLIP directional similarity {scores['clip']:.3f} < {settings.min_clip_direction:g}")
        )
    if not failures and judges.face:
        from ip2n.align import AlignmentError, align_face

        try:
            align_face(Image.fromarray(image), detector=judges.detector, name="the edited image")
            scores["face"] = 1.0
        except AlignmentError as exc:
            scores["face"] = 0.0
            failures.append(("face", str(exc)))
    if failures:
        name, detail = failures[0]
        candidate.failed, candidate.detail = FILTER_REASONS[name], detail


def judge_pair(state: PairState, settings: FactorySettings, judges: Judges) -> PairState:
    """Score every candidate, keep the best one that passes, or reject the pair with the reason of the
    candidate that came furthest."""
    if state.reason is not None:
        return state
    if not state.candidates:
        return state.reject("editor_error", "the editor returned no image")
    for candidate in state.candidates:
        score_candidate(candidate, state, settings, judges)
    passing = [i for i, c in enumerate(state.candidates) if c.failed is None]
    if passing:

        def rank(index: int) -> float:
            scores = state.candidates[index].scores
            for key in ("clip", "identity"):
                if scores.get(key) is not None:
                    return float(scores[key])  # type: ignore[arg-type]
            return -index  # the first seed

        state.chosen = max(passing, key=rank)
        state.reason, state.detail = None, ""
        return state
    order = list(FILTER_REASONS.values())
    furthest = max(
        range(len(state.candidates)),
        key=lambda i: (order.index(state.candidates[i].failed or "face_lost"), -i),
    )
    worst = state.candidates[furthest]
    return state.reject(worst.failed or "editor_error", worst.detail)
