"""Editing quality in the synthetic world, measured against its ground truth (`ip2n synth eval`).

Each case is a head with an identity never seen in training, a source attribute set, 1–4 requested
edits and one instruction for them (held-out phrasings, or someone else's from a JSON-lines file).
The source is rendered at a random pose (yaw ±30°, pitch ±20°) and edited by the `EditPipeline`;
source reconstruction and edit are then rendered at 4 further random views. Figures:

- **success (truth)**: every requested attribute has its target value in the edited latent (the
  world's latent decodes exactly into attributes);
- **success (classifier)**: the attribute classifier sees every requested value, in the majority of
  the 4 edited views;
- **attribute dependency (truth)**: share of non-requested attributes whose value changed, from the
  true source to the edit. Two causes mix in it: attributes the encoder misread in the input
  (reported on their own, reconstruction against truth) and attributes the editor changed (reported
  on their own as the share changed from the *reconstruction* to the edit);
- **AA** (attribute alteration, paper §4): share of requested attributes the classifier sees reached,
  over all views; **AD** (attribute dependency): mean absolute change of the classifier's
  probability for non-requested attributes between source and edited views, in percent;
- **identity cosine**: identity-network cosine between the source reconstruction and the edit, per
  view. The world's identity network is not blind to attributes (a bronze finish or baldness moves
  its features), so the same cosine for the *exact* edit (the reconstruction with precisely the
  requested attributes changed) is reported beside it as the ceiling an editor can reach. The
  judge is the model's own identity network unless another is given (`identity_judge`);
- **classifier on the exact edit**: the classifier's success and AA on the exact edit's views, the
  most the classifier-judged figures can show (the classifier misses some edits that are there);
- **identity drift (truth)**: mean absolute change of the identity coordinates (head shape, skin
  tone, eye colour...) between the source reconstruction and the edit, in the world's units
  (identities are drawn from a standard normal: two random people differ by about 1.1);
- **identity error against the truth**: the same mean absolute difference, between the true head's
  identity coordinates and the edit's (and, for reference, the reconstruction's): what the inversion
  lost and whether the edit gave it back;
- **reconstruction**: relative latent error of the encoder and the share of source attributes
  the encoded latent gets right.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ip2n.encoding.identity import extract_identity
from ip2n.export.images import to_pil
from ip2n.rendering.cameras import camera_labels
from ip2n.synthetic.lab.bank import bank_generator_config
from ip2n.synthetic.lab.classifier import GROUPS, AttributeClassifier
from ip2n.synthetic.lab.data import sample_edit
from ip2n.synthetic.lab.train_all import DIT_VARIANTS
from ip2n.synthetic.world.attributes import (
    ATTRIBUTE_NAMES,
    BINARY_ATTRIBUTES,
    CATEGORICAL_ATTRIBUTES,
    Attributes,
    complete_attributes,
    hidden_attributes,
    sample_attributes,
    sample_identity,
    visible_changes,
)
from ip2n.synthetic.world.generator import SyntheticHeadGenerator
from ip2n.synthetic.world.instructions import compose_instruction
from ip2n.synthetic.world.latent import attribute_change, attributes_of, decode, encode, identity_of
from ip2n.synthetic.world.marks import mark_world_image

YAW_RANGE, PITCH_RANGE = math.radians(30), math.radians(20)


@dataclass(frozen=True)
class EvalCase:
    identity: torch.Tensor  # (1, P) never seen in training
    source: Attributes
    edits: dict  # attribute → requested value (every one visible on this head)
    instruction: str

    @property
    def target(self) -> Attributes:
        return {**self.source, **self.edits}


@dataclass(frozen=True)
class EvalSettings:
    cases_per_count: int = 50
    counts: tuple[int, ...] = (1, 2, 3, 4)
    views: int = 4
    seed: int = 2024
    # Phrasings of the generated cases: "heldout" (the measure) or "train" (the wording the text encoder
    # learned: the gap between the two is what the text encoder fails to generalise).
    phrasings: str = "heldout"
    # Sampling settings; None = the model's own defaults (`EditPipeline.defaults`, see `resolved`).
    num_inference_steps: int | None = None
    strength: float | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    # Shift the prompt's tokens at inference too, as the official code does (off by default, as in the
    # pipeline: docs/pipeline.md).
    token_position_randomization: bool = False

    def resolved(self, defaults) -> EvalSettings:
        """These settings with every unset sampling value taken from `defaults` (an `EditDefaults`)."""
        names = ("num_inference_steps", "strength", "guidance_scale", "image_guidance_scale")
        return replace(
            self, **{name: getattr(defaults, name) for name in names if getattr(self, name) is None}
        )


def random_poses(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 2) yaw, pitch uniform in ±YAW_RANGE, ±PITCH_RANGE: the evaluation's views."""
    return (torch.rand(count, 2, generator=generator) * 2 - 1) * torch.tensor([YAW_RANGE, PITCH_RANGE])


def _one_hot_counts(count: int) -> tuple[float, ...]:
    return tuple(1.0 if k + 1 == count else 0.0 for k in range(max(count, 1)))


def make_cases(settings: EvalSettings) -> list[EvalCase]:
    """`cases_per_count` cases for each number of edits, new identities, phrasings of `settings.phrasings`."""
    generator = torch.Generator().manual_seed(settings.seed)
    cases = []
    for count in settings.counts:
        for _ in range(settings.cases_per_count):
            identity = sample_identity(1, generator)
            source = sample_attributes(generator)
            _, edits = sample_edit(source, generator, count_probabilities=_one_hot_counts(count))
            cases.append(
                EvalCase(
                    identity, source, edits, compose_instruction(edits, generator, split=settings.phrasings)
                )
            )
    return cases


def read_instruction_cases(path: str | os.PathLike, seed: int) -> list[EvalCase]:
    """Cases from JSON lines {"instruction": "...", "edits": {"attribute": value, ...}}.

    Each line gets a new head whose source attributes differ from every requested value (so the
    edit shows). Raises ValueError naming the line for unknown attributes or values.
    """
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
            instruction, edits = row["instruction"], dict(row["edits"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(
                f'{where}: expected {{"instruction": "...", "edits": {{"attribute": value}}}}'
            ) from None
        if not isinstance(instruction, str) or not instruction.strip() or not edits:
            raise ValueError(f"{where}: the instruction must be non-empty text and edits a non-empty object")
        for name, value in edits.items():
            if name in BINARY_ATTRIBUTES:
                if not isinstance(value, bool):
                    raise ValueError(f"{where}: {name} takes true or false, got {value!r}")
            elif name in CATEGORICAL_ATTRIBUTES:
                if value not in CATEGORICAL_ATTRIBUTES[name]:
                    raise ValueError(
                        f"{where}: {name} takes one of {', '.join(CATEGORICAL_ATTRIBUTES[name])}, "
                        f"got {value!r}"
                    )
            else:
                raise ValueError(f"{where}: unknown attribute {name!r}; known: {', '.join(ATTRIBUTE_NAMES)}")
        cases.append(
            EvalCase(sample_identity(1, generator), _source_for(edits, generator, where), edits, instruction)
        )
    if not cases:
        raise ValueError(f"{path} holds no instructions")
    return cases


def _source_for(edits: dict, generator: torch.Generator, where: str) -> Attributes:
    """A random head on which every requested edit is a visible change."""
    for _ in range(1000):
        source = sample_attributes(generator)
        for name, value in edits.items():
            if source[name] == value:
                others = [v for v in (CATEGORICAL_ATTRIBUTES.get(name) or (True, False)) if v != value]
                source[name] = others[int(torch.randint(len(others), (1,), generator=generator))]
        source = complete_attributes(source)
        if not (source["bald"] and source["bangs"]) and visible_changes(source, {**source, **edits}) == edits:
            return source
    raise ValueError(f"{where}: these edits cannot all be visible on one head ({edits})")


@dataclass
class CaseResult:
    count: int
    success_truth: bool
    success_classifier: bool
    changed_others_truth: int
    others: int
    altered_views: int  # (view, requested attribute) pairs the classifier sees reached
    requested_views: int
    exact_success_classifier: bool  # the classifier's verdict on the exact edit: its ceiling
    exact_altered_views: int
    dependency: float  # mean |Δ probability| of non-requested attributes (classifier), 0–1
    identity_cosine: float  # mean over views
    input_identity_cosine: float  # the paper's ID: the input image against each edited view
    exact_edit_identity_cosine: float  # the same for the exact edit of the reconstruction: the ceiling
    identity_drift: float  # mean |Δ identity coordinates| between reconstruction and edit (truth)
    identity_error: float  # mean |identity coordinates of the edit − the true head's|
    reconstruction_identity_error: float  # the same for the reconstruction
    reconstruction_error: float  # relative latent MSE of the encoder on the source
    reconstruction_attributes: float  # share of source attributes read right from the encoded latent
    changed_others_reconstruction: int  # non-requested attributes the edit changed from the reconstruction's
    misread_others: int  # non-requested attributes the encoder already got wrong (reconstruction ≠ truth)


def _probabilities(logits: torch.Tensor) -> list[torch.Tensor]:
    """Logits (N, NUM_LOGITS) → per group: (N,) P(True) for binary, (N, values) softmax for categorical."""
    parts, start = [], 0
    for _, size in GROUPS:
        part = logits[:, start : start + size]
        parts.append(torch.sigmoid(part[:, 0]) if size == 1 else part.softmax(dim=1))
        start += size
    return parts


def _classifier_sees(probabilities: list[torch.Tensor], name: str, value) -> torch.Tensor:
    """(V,) bool: the classifier's arg-max equals `value` for attribute `name`, per view."""
    group = [g for g, _ in GROUPS].index(name)
    if name in BINARY_ATTRIBUTES:
        return (probabilities[group] > 0.5) == bool(value)
    return probabilities[group].argmax(dim=1) == CATEGORICAL_ATTRIBUTES[name].index(value)


def _attribute_change(before: list[torch.Tensor], after: list[torch.Tensor], name: str) -> torch.Tensor:
    group = [g for g, _ in GROUPS].index(name)
    difference = (after[group] - before[group]).abs()
    return (
        difference if difference.ndim == 1 else difference.sum(dim=1) / 2
    )  # total variation for categorical


@torch.no_grad()
def evaluate_case(
    pipeline,
    case: EvalCase,
    settings: EvalSettings,
    classifier: AttributeClassifier,
    renderer: SyntheticHeadGenerator,
    index: int,
    variant: str = "full",
    identity_judge: torch.nn.Module | None = None,
) -> CaseResult:
    """One case's figures. `identity_judge` measures the identity cosines (default: the model's own
    identity network); a fixed judge compares models whose identity networks differ."""
    switches = DIT_VARIANTS[variant]  # the conditions this variant was trained with
    generator = torch.Generator().manual_seed(settings.seed * 7919 + index)
    poses = random_poses(settings.views + 1, generator)
    cameras = camera_labels(
        poses[:, 0], poses[:, 1]
    )  # (1 + V, 25): the input view, then the evaluation views
    true_source = renderer.encode_heads(case.identity, [case.source])
    image = renderer.synthesis(true_source, cameras[:1])["image"][0]
    # The input is a head of the world (marked as such); the instruction is what is measured, so it is
    # edited even when the world's vocabulary check (`ip2n.synthetic.world.vocabulary`) would refuse it.
    result = pipeline(
        mark_world_image(to_pil(image), {"rendered_by": "ip2n synth eval", "case": index}),
        case.instruction,
        allow_any_instruction=True,
        num_inference_steps=settings.num_inference_steps,
        strength=settings.strength,
        guidance_scale=settings.guidance_scale,
        image_guidance_scale=settings.image_guidance_scale,
        generator=generator,
        identity_conditioning=switches.identity,
        source_conditioning=switches.source_conditioning,
        token_position_randomization=settings.token_position_randomization,
    )
    bases = renderer.backbone.bases
    edited = attributes_of(decode(result.edited_latent, bases))[0]
    encoded = attributes_of(decode(result.source_latent, bases))[0]
    target = case.target
    requested = list(case.edits)
    visible = [
        name
        for name in ATTRIBUTE_NAMES
        if name not in requested
        and name not in hidden_attributes(case.source)
        and name not in hidden_attributes(target)
    ]
    views = cameras[1:]
    source_views = renderer.synthesis(result.source_latent.expand(len(views), -1, -1), views)["image"]
    edited_views = renderer.synthesis(result.edited_latent.expand(len(views), -1, -1), views)["image"]
    # The exact edit: the reconstruction with the requested attributes moved exactly to their targets.
    exact_edit = result.source_latent + encode(attribute_change(case.source, target), bases)
    exact_views = renderer.synthesis(exact_edit.expand(len(views), -1, -1), views)["image"]
    identity_network = pipeline.identity_encoder if identity_judge is None else identity_judge
    source_features, edited_features = identity_network(source_views), identity_network(edited_views)
    cosine = (source_features * edited_features).sum(dim=1)
    # The paper's ID compares the input photo itself (its own camera) with the edited views, so identity
    # lost by the inversion counts too; `cosine` compares the reconstruction at the same cameras.
    input_cosine = (identity_network(image[None]) * edited_features).sum(dim=1)
    exact_cosine = (source_features * identity_network(exact_views)).sum(dim=1)
    edited_identity, reconstructed_identity = (
        identity_of(decode(latent, bases)) for latent in (result.edited_latent, result.source_latent)
    )
    drift = (edited_identity - reconstructed_identity).abs().mean()  # decode is linear
    before, after = _probabilities(classifier(source_views)), _probabilities(classifier(edited_views))
    seen = torch.stack([_classifier_sees(after, name, case.edits[name]) for name in requested])  # (E, V)
    exact = _probabilities(classifier(exact_views))
    seen_exact = torch.stack([_classifier_sees(exact, name, case.edits[name]) for name in requested])
    dependency = (
        torch.stack([_attribute_change(before, after, name) for name in visible]).mean()
        if visible
        else torch.zeros(())
    )
    true_latent_error = (result.source_latent - true_source).square().mean() / (
        true_source - pipeline.latent_avg
    ).square().mean()
    return CaseResult(
        count=len(requested),
        success_truth=all(edited[name] == target[name] for name in requested),
        success_classifier=bool((seen.float().mean(dim=1) > 0.5).all()),
        changed_others_truth=sum(edited[name] != case.source[name] for name in visible),
        others=len(visible),
        altered_views=int(seen.sum()),
        requested_views=seen.numel(),
        exact_success_classifier=bool((seen_exact.float().mean(dim=1) > 0.5).all()),
        exact_altered_views=int(seen_exact.sum()),
        dependency=float(dependency),
        identity_cosine=float(cosine.mean()),
        input_identity_cosine=float(input_cosine.mean()),
        exact_edit_identity_cosine=float(exact_cosine.mean()),
        identity_drift=float(drift),
        identity_error=float((edited_identity - case.identity).abs().mean()),
        reconstruction_identity_error=float((reconstructed_identity - case.identity).abs().mean()),
        reconstruction_error=float(true_latent_error),
        reconstruction_attributes=sum(encoded[name] == case.source[name] for name in ATTRIBUTE_NAMES)
        / len(ATTRIBUTE_NAMES),
        changed_others_reconstruction=sum(edited[name] != encoded[name] for name in visible),
        misread_others=sum(encoded[name] != case.source[name] for name in visible),
    )


def summarize(results: list[CaseResult]) -> dict:
    """Figures over all cases and per number of edits."""

    def figures(rows: list[CaseResult]) -> dict:
        others = sum(r.others for r in rows)
        return {
            "cases": len(rows),
            "success_truth": sum(r.success_truth for r in rows) / len(rows),
            "success_classifier": sum(r.success_classifier for r in rows) / len(rows),
            "other_attributes_changed_truth": sum(r.changed_others_truth for r in rows) / max(others, 1),
            "other_attributes_changed_reconstruction": sum(r.changed_others_reconstruction for r in rows)
            / max(others, 1),
            "other_attributes_misread_by_encoder": sum(r.misread_others for r in rows) / max(others, 1),
            "AA": sum(r.altered_views for r in rows) / max(sum(r.requested_views for r in rows), 1),
            "exact_success_classifier": sum(r.exact_success_classifier for r in rows) / len(rows),
            "exact_AA": sum(r.exact_altered_views for r in rows)
            / max(sum(r.requested_views for r in rows), 1),
            "AD_percent": 100 * sum(r.dependency for r in rows) / len(rows),
            "identity_cosine": sum(r.identity_cosine for r in rows) / len(rows),
            "identity_cosine_min": min(r.identity_cosine for r in rows),
            "input_identity_cosine": sum(r.input_identity_cosine for r in rows) / len(rows),
            "exact_edit_identity_cosine": sum(r.exact_edit_identity_cosine for r in rows) / len(rows),
            "identity_drift_truth": sum(r.identity_drift for r in rows) / len(rows),
            "identity_error_truth": sum(r.identity_error for r in rows) / len(rows),
            "reconstruction_identity_error_truth": sum(r.reconstruction_identity_error for r in rows)
            / len(rows),
            "reconstruction_relative_error": sum(r.reconstruction_error for r in rows) / len(rows),
            "reconstruction_attributes": sum(r.reconstruction_attributes for r in rows) / len(rows),
        }

    by_count = defaultdict(list)
    for row in results:
        by_count[row.count].append(row)
    return {"all": figures(results), "by_count": {str(k): figures(v) for k, v in sorted(by_count.items())}}


# Per-case figures compared variant against variant in the report (field of CaseResult → its name there).
PAIRED_FIGURES = {
    "success_truth": "success (truth)",
    "changed_others_truth": "other attributes changed (per case)",
    "changed_others_reconstruction": "other attributes changed from the reconstruction (per case)",
    "identity_cosine": "identity cosine",
    "input_identity_cosine": "ID as the paper",
    "identity_error": "identity error against the true head",
}


def sign_test(higher: int, lower: int) -> float:
    """Two-sided exact sign-test p-value of `higher` against `lower` paired cases (ties left out)."""
    pairs = higher + lower
    if pairs == 0:
        return 1.0
    tail = sum(math.comb(pairs, k) for k in range(min(higher, lower) + 1)) / 2**pairs
    return min(1.0, 2 * tail)


def paired_difference(rows: list[dict], baseline: list[dict], key: str) -> dict:
    """`key` of `rows` minus `baseline`'s, case by case (the "cases" rows of two variants evaluated on the
    same cases): the mean difference, how many cases are higher / lower, and the sign test's p-value.
    Paired, because the cases' own difficulty varies far more than what tells two variants apart."""
    if [(r["instruction"], r["edits"]) for r in rows] != [(r["instruction"], r["edits"]) for r in baseline]:
        raise ValueError(
            "paired figures need two evaluations of the same cases (same instructions and edits)"
        )
    differences = [float(row[key]) - float(base[key]) for row, base in zip(rows, baseline)]
    higher, lower = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    return {
        "mean_difference": sum(differences) / max(len(differences), 1),
        "higher": higher,
        "lower": lower,
        "cases": len(differences),
        "sign_test_p": sign_test(higher, lower),
    }


def evaluate(
    pipeline,
    cases: list[EvalCase],
    settings: EvalSettings,
    classifier: AttributeClassifier,
    variant: str = "full",
    progress: bool = True,
    identity_judge: torch.nn.Module | None = None,
) -> dict:
    """`summarize`'s figures for `cases`, plus every case's own row (instruction, edits, figures)
    under "cases"."""
    renderer = SyntheticHeadGenerator(bank_generator_config()).eval()
    results = [
        evaluate_case(pipeline, case, settings, classifier, renderer, index, variant, identity_judge)
        for index, case in enumerate(
            tqdm(cases, desc=f"evaluating {variant}", unit="edit", disable=not progress)
        )
    ]
    # Every case's own figures too: variants edit the same cases, so they can be compared pair by pair.
    rows = [
        {"instruction": case.instruction, "edits": dict(case.edits), **asdict(result)}
        for case, result in zip(cases, results)
    ]
    return {**summarize(results), "cases": rows}


@torch.no_grad()
def instruction_losses(
    pipeline,
    samples: int = 128,
    seed: int = 0,
    identity_conditioning: bool = True,
    source_conditioning: bool = True,
) -> dict[str, float]:
    """How much the DiT relies on the instruction: its denoising error with the right one, with
    another sample's ("shuffled") and with the empty prompt.

    Fresh triplets: the exact latents of new heads (no inversion), a random edit of 1–4 visible
    attributes with a held-out phrasing, uniform timesteps, fixed noise. With
    `identity_conditioning` (as the pipeline edits) the identity features come from a render of the
    source at a random pose (yaw ±30°, pitch ±20°); without, they are off, which for a model
    trained with them is the rare dropped-identity condition: the built-in DiT's error there is
    ten times its error with them. `source_conditioning` False gives the DiT zeros for the source,
    as the img2img baseline was trained. The error is the MSE of what the DiT predicts (ε or v). A
    model that follows instructions has a far lower "right" error; one that ignores them has three
    equal errors (the defect of the first built-in model).
    """
    from ip2n.diffusion import make_schedule, pack_latent, training_losses
    from ip2n.text import tokenize

    generator = torch.Generator().manual_seed(seed)
    renderer, dit = pipeline.generator, pipeline.dit
    sources, targets, instructions = [], [], []
    for _ in range(samples):
        identity, attributes = sample_identity(1, generator), sample_attributes(generator)
        target, edits = sample_edit(attributes, generator, count_probabilities=(0.25, 0.25, 0.25, 0.25))
        sources.append(renderer.encode_heads(identity, [attributes]))
        targets.append(renderer.encode_heads(identity, [target]))
        instructions.append(compose_instruction(edits, generator, split="heldout"))
    scale, device = dit.config.latent_scale, pipeline.device
    identity_features = None
    if identity_conditioning:
        poses = random_poses(samples, generator)
        cameras = camera_labels(poses[:, 0], poses[:, 1]).to(device)
        # One head at a time: batched, the procedural renderer is many times slower per head.
        identity_features = torch.cat(
            [
                extract_identity(
                    pipeline.identity_encoder, renderer.synthesis(source.to(device), camera[None])["image"]
                )
                for source, camera in zip(sources, cameras)
            ]
        )
    source = pack_latent(torch.cat(sources).to(device) - pipeline.latent_avg) * scale  # (S, C, 4, 4)
    condition = source if source_conditioning else torch.zeros_like(source)
    target = pack_latent(torch.cat(targets).to(device) - pipeline.latent_avg) * scale
    schedule = make_schedule()
    timesteps = torch.randint(0, schedule.num_steps, (samples,), generator=generator)
    noise = torch.randn(target.shape, generator=generator).to(device)
    labels = torch.full(
        (samples,), dit.config.num_classes, dtype=torch.int64, device=device
    )  # inference's label
    shuffled = torch.roll(torch.arange(samples), 1)
    prompts = {
        "right": instructions,
        "shuffled": [instructions[i] for i in shuffled],
        "empty": [""] * samples,
    }
    losses = {}
    for name, texts in prompts.items():
        context = pipeline.text_encoder(tokenize(texts).to(device))

        # `context` is bound when model_fn is defined: training_losses below calls it in this iteration.
        def model_fn(
            x_t: torch.Tensor, model_timesteps: torch.Tensor, context: torch.Tensor = context
        ) -> torch.Tensor:
            return dit(
                torch.cat([x_t, condition], dim=1),
                model_timesteps,
                labels,
                context,
                identity=identity_features,
            )

        terms = training_losses(
            model_fn, target, timesteps, noise, schedule, prediction_type=dit.config.prediction_type
        )
        losses[name] = float(terms["mse"].mean())
    return losses
