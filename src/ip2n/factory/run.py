"""Running the factory: plan the pairs, run the stages (here or on Ray), write pairs and manifest, report.

Stages of a pair: **prepare** (decode and align the photo, or draw and render the world head) →
**edit** (the editor's candidates, one per seed) → **judge** (the filters; the best passing
candidate is kept) → **write** (pair files, then its manifest line). In one process the stages run
pair by pair; with Ray they run as a Ray Data pipeline (`ray_runner.py`) and the results come back
to this process, the only writer. Either way a pair's outcome depends only on its own seeds, so the
accepted set is the same.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ip2n.factory.editors.base import Editor
from ip2n.factory.filters import Judges
from ip2n.factory.spec import (
    REASONS,
    Edit,
    FactorySettings,
    Job,
    PairState,
    SourceRef,
    derive_seed,
    digest,
)
from ip2n.factory.store import Store, check_output
from ip2n.version import __version__

logger = logging.getLogger(__name__)


@dataclass
class FactoryResult:
    out: Path
    accepted: int  # in the whole data set (this run and earlier ones)
    rejected: int
    made: int  # pairs finished by this run
    skipped: int  # pairs an earlier run had finished
    reasons: Counter = field(default_factory=Counter)  # reject reason → count, whole data set
    report: Path | None = None


@dataclass
class Plan:
    jobs: list[Job]
    early_rejects: dict[str, tuple[str, str]]  # pair name → (reason, detail) found before any work
    identity: dict[str, Any]  # what defines the data set (factory.json; compared on resume)
    world_sources: bool


def plan_run(
    settings: FactorySettings,
    sources: Sequence[str | Path] | None = None,
    edits: Sequence[Edit] | None = None,
    editor: Editor | None = None,
) -> Plan:
    """Check the inputs and list the pairs (nothing is written; raises ValueError subclasses)."""
    from ip2n.factory.sources import SourceError, check_photos, list_photos, world_heads

    if settings.world_heads and sources:
        raise SourceError("give either SOURCES (photos) or --world-heads N, not both")
    world_sources = settings.world_heads > 0
    if settings.editor == "world":
        if not world_sources:
            raise SourceError("the world editor edits heads of the synthetic world only: use --world-heads N")
        if edits:
            raise SourceError(
                "the world editor draws one visible attribute edit per head; "
                "--instructions is for --editor ip2p"
            )
    elif not edits:
        raise SourceError(f"the {settings.editor} editor needs edits: pass --instructions FILE")
    refs: list[SourceRef]
    problems: dict[str, tuple[str, str]] = {}
    if world_sources:
        refs = world_heads(settings.world_heads)
        source_identity: Any = {"world_heads": settings.world_heads}
    else:
        refs = list_photos(list(sources or []))
        checks = check_photos(refs, settings.min_source_side)
        problems = {c.ref.name: (c.problem, c.detail) for c in checks if c.problem}
        if len(problems) == len(refs):
            shown = "; ".join(detail for _, detail in list(problems.values())[:3])
            raise SourceError(f"none of the {len(refs)} source images can be used: {shown}")
        if len(refs) == 1 and not problems and Path(str(refs[0].path)) == Path(str((sources or [""])[0])):
            _check_single_photo(refs[0], settings)  # one photo named: say now if it is unusable
        source_identity = {
            "count": len(refs),
            "digest": digest([(ref.name, Path(ref.path or "").stat().st_size) for ref in refs]),
        }
    per_source = 1 if settings.editor == "world" else min(settings.edits_per_source, len(edits or []))
    total = len(refs) * per_source
    width = max(5, len(str(max(total - 1, 0))))
    jobs: list[Job] = []
    early: dict[str, tuple[str, str]] = {}
    for ref in refs:
        if settings.editor == "world":
            chosen: list[Edit | None] = [None]
        else:
            assert edits is not None
            rng = random.Random(derive_seed(settings.seed, "edits", ref.name))
            chosen = [edits[i] for i in sorted(rng.sample(range(len(edits)), per_source))]
        for edit in chosen:
            index = len(jobs)
            name = f"{index:0{width}d}"
            count = 1 if settings.editor == "world" else settings.seeds_per_pair
            seeds = tuple(derive_seed(settings.seed, "editor", name, k) for k in range(count))
            jobs.append(Job(index, name, ref, edit, seeds))
            if ref.name in problems:
                early[name] = problems[ref.name]
    description = editor.describe() if editor is not None else {"name": settings.editor}
    identity = {
        "settings": settings.fingerprint_fields(),
        "sources": source_identity,
        "edits": [edit.to_dict() for edit in edits or []],
        "editor": description,
    }
    return Plan(
        jobs=jobs,
        early_rejects=early,
        identity={"fingerprint": digest(identity), "identity": identity, "ip2n_version": __version__},
        world_sources=world_sources,
    )


def _check_single_photo(ref: SourceRef, settings: FactorySettings) -> None:
    from ip2n.align import AlignmentError, align_face
    from ip2n.factory.sources import SourceError
    from ip2n.pipeline.inputs import ImageInputError, load_image

    try:
        align_face(load_image(str(ref.path)), output_size=settings.resolution, name=ref.name)
    except (AlignmentError, ImageInputError) as exc:
        raise SourceError(str(exc)) from None


class Stages:
    """The per-pair stages, with their networks built on first use in whatever process runs them
    (picklable before that: Ray ships it to its workers)."""

    def __init__(self, settings: FactorySettings, editor: Editor | None = None, judges: Judges | None = None):
        self.settings = settings
        self.editor = editor
        self.judges = judges

    def _editor(self) -> Editor:
        if self.editor is None:
            from ip2n.factory.editors import build_editor

            self.editor = build_editor(self.settings)
        return self.editor

    def _judges(self) -> Judges:
        if self.judges is None:
            from ip2n.factory.filters import build_judges

            self.judges = build_judges(self.settings, world_sources=self.settings.world_heads > 0)
        return self.judges

    def prepare(self, job: Job) -> PairState:
        from ip2n.factory.sources import prepare_photo, prepare_world_head

        start = time.perf_counter()
        state = PairState(job=job, edit=job.edit)
        if job.source.kind == "world":
            prepare_world_head(state, self.settings)
        else:
            detector = self._judges().detector if self.settings.filter_enabled("face") else None
            prepare_photo(state, self.settings, detector)
        state.seconds["prepare"] = round(time.perf_counter() - start, 4)
        return state

    def edit(self, state: PairState) -> PairState:
        if state.reason is not None:
            return state
        start = time.perf_counter()
        try:
            state.candidates = self._editor().edit(state)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 — one pair's failure is recorded, the run goes on
            logger.warning("the editor failed on pair %s: %s", state.job.name, exc)
            state.reject("editor_error", f"{type(exc).__name__}: {exc}")
        state.seconds["edit"] = round(time.perf_counter() - start, 4)
        return state

    def judge(self, state: PairState) -> PairState:
        from ip2n.factory.filters import judge_pair

        if state.reason is not None:
            return state
        start = time.perf_counter()
        judge_pair(state, self.settings, self._judges())
        state.seconds["judge"] = round(time.perf_counter() - start, 4)
        return state

    def warm_up(self) -> None:
        """Build the networks now (so that a missing file fails before the first pair)."""
        self._judges()
        self._editor()


def run_local(jobs: Sequence[Job], stages: Stages, progress: bool) -> Iterator[PairState]:
    """The stages pair by pair in this process, one progress bar per stage."""
    bars = [
        tqdm(total=len(jobs), desc=f"{name:<8}", unit="pair", disable=not progress, leave=True, position=i)
        for i, name in enumerate(("prepare", "edit", "judge"))
    ]
    try:
        for job in jobs:
            state = stages.prepare(job)
            bars[0].update()
            state = stages.edit(state)
            bars[1].update()
            state = stages.judge(state)
            bars[2].update()
            yield state
    finally:
        for bar in bars:
            bar.close()


def manifest_record(state: PairState, settings: FactorySettings, editor_name: str, instructions: int) -> dict:
    chosen = state.candidates[state.chosen] if state.chosen is not None else None
    shown = chosen
    if shown is None and state.candidates:
        shown = next((c for c in state.candidates if c.failed == state.reason), state.candidates[0])
    return {
        "pair": state.job.name,
        "index": state.job.index,
        "source": state.job.source.name,
        "source_kind": state.job.source.kind,
        "editor": editor_name,
        "edit": state.edit.id if state.edit else None,
        "prompt": state.edit.prompt if state.edit else None,
        "status": "accepted" if state.accepted else "rejected",
        "reason": None if state.accepted else state.reason,
        "why": state.detail or (REASONS.get(state.reason or "", "") if not state.accepted else ""),
        "seed": chosen.seed if chosen else None,
        "seeds": list(state.job.seeds),
        "scores": shown.scores if shown else {},
        "thresholds": {
            "min_identity": settings.min_identity,
            "min_change": settings.min_change,
            "min_clip_direction": settings.min_clip_direction,
        },
        "candidates": [
            {"seed": c.seed, "scores": c.scores, "failed": c.failed, "why": c.detail}
            for c in state.candidates
        ],
        "instructions": instructions,
        "camera": state.camera if state.accepted else None,
        "source_meta": state.source_meta,
        "seconds": state.seconds,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def make_dataset(
    out: str | Path,
    settings: FactorySettings,
    *,
    sources: Sequence[str | Path] | None = None,
    edits: Sequence[Edit] | None = None,
    editor: Editor | None = None,
    judges: Judges | None = None,
    paraphraser: Callable[[str], list[str]] | None = None,
    ray_address: str | None = None,
    ray_edit_actors: int | None = None,
    progress: bool = True,
    report: bool = True,
) -> FactoryResult:
    """Make (or resume) the data set in `out` → counts and the report's path.

    `sources`: photo folders/files (or `settings.world_heads` heads of the world); `edits`: the edits
    for 2-D editors (`phrasing.read_instruction_file`). `editor`, `judges`, `paraphraser`: objects to
    use instead of those the settings name (tests inject tiny ones). `ray_address`: run the stages
    on Ray ("local" starts a local Ray; anything else is an existing cluster's address).
    Raises ValueError subclasses (bad sources, another data set in `out`, ...) before writing anything.
    """
    from ip2n.factory.phrasing import phrasing_pools, pick_phrasings

    out = Path(out)
    plan = plan_run(settings, sources, edits, editor)
    resuming = check_output(out, plan.identity)
    store = Store(out)
    done = store.finished() if resuming else set()
    pending = [job for job in plan.jobs if job.name not in done]
    stages = Stages(settings, editor, judges)
    preflight(settings, editor, judges, paraphraser)
    if paraphraser is None and settings.paraphraser:
        from ip2n.factory.phrasing import LMParaphraser

        paraphraser = LMParaphraser.from_model(settings.paraphraser, settings.device)
    if pending and ray_address is None:
        stages.warm_up()  # missing weights fail here, before OUT is created
    pools = phrasing_pools(edits or [], paraphraser, settings.min_phrasings, settings.max_phrasings)
    if not resuming:
        store.create(plan.identity)
    editor_name = editor.name if editor is not None else settings.editor
    made = 0

    def write(state: PairState) -> None:
        nonlocal made
        name = state.job.name
        instructions: list[str] = []
        if state.accepted:
            assert state.edit is not None
            if state.edit.id not in pools:
                pools.update(
                    phrasing_pools([state.edit], paraphraser, settings.min_phrasings, settings.max_phrasings)
                )
            instructions = pick_phrasings(
                pools[state.edit.id], settings.seed, name, settings.min_phrasings, settings.max_phrasings
            )
            marks = _world_marks(state, settings) if editor_name == "world" else None
            store.write_pair(state, instructions, marks)
        else:
            store.write_rejected(state)
        store.append(manifest_record(state, settings, editor_name, len(instructions)))
        made += 1

    early = [job for job in pending if job.name in plan.early_rejects]
    work = [job for job in pending if job.name not in plan.early_rejects]
    try:
        for job in early:
            reason, detail = plan.early_rejects[job.name]
            write(PairState(job=job, edit=job.edit).reject(reason, detail))
        if work:
            if ray_address is not None:
                from ip2n.factory.ray_runner import run_on_ray

                results: Iterable[PairState] = run_on_ray(
                    work, stages, ray_address, ray_edit_actors, progress
                )
            else:
                results = run_local(work, stages, progress)
            with tqdm(
                total=len(work), desc="write   ", unit="pair", disable=not progress or ray_address is None
            ) as bar:
                for state in results:
                    write(state)
                    bar.update()
    finally:
        if (out / "factory.json").is_file():
            store.write_dataset_json()
    records = list(store.latest().values())
    reasons = Counter(r["reason"] for r in records if r.get("status") == "rejected")
    report_path = None
    if report:
        from ip2n.factory.report import write_report

        report_path = write_report(out, records, settings, seed=settings.seed)
    accepted = sum(1 for r in records if r.get("status") == "accepted")
    logger.info("%s: %d accepted, %d rejected (%d made now)", out, accepted, len(records) - accepted, made)
    return FactoryResult(
        out=out,
        accepted=accepted,
        rejected=len(records) - accepted,
        made=made,
        skipped=len(plan.jobs) - len(pending),
        reasons=reasons,
        report=report_path,
    )


def preflight(
    settings: FactorySettings, editor: Editor | None, judges: Judges | None, paraphraser: Any = None
) -> None:
    """Check that every weights file the settings name is there (cheap; loads nothing)."""
    from ip2n.factory.editors.ip2p import check_ip2p_weights
    from ip2n.factory.spec import MissingWeightsError

    if editor is None and settings.editor == "ip2p":
        check_ip2p_weights(settings.ip2p_weights)
    if judges is None:
        if settings.identity_weights and not Path(settings.identity_weights).exists():
            raise MissingWeightsError(f"identity weights {settings.identity_weights} do not exist")
        if (
            settings.filter_enabled("identity")
            and settings.world_heads == 0
            and not settings.identity_weights
        ):
            raise MissingWeightsError(
                "the identity filter needs --identity-weights (the folder of model_ir_se50.pth or a "
                "converted identity.safetensors); or switch it off with --skip-filter identity"
            )
        pretrained = settings.clip_pretrained
        if settings.clip_model and pretrained and Path(pretrained).suffix and not Path(pretrained).is_file():
            raise MissingWeightsError(f"CLIP weights {pretrained} do not exist")
    if paraphraser is None and settings.paraphraser and not Path(settings.paraphraser).is_dir():
        raise MissingWeightsError(
            f"paraphraser model folder {settings.paraphraser} does not exist; pass a local folder of an "
            "instruction-tuned model (transformers format)"
        )


def _world_marks(state: PairState, settings: FactorySettings) -> tuple[dict, dict]:
    meta = state.source_meta
    chosen = state.candidates[state.chosen] if state.chosen is not None else None
    target = (chosen.meta.get("target_attributes") if chosen else None) or meta.get("target_attributes")
    common = {
        "rendered_by": "ip2n data make",
        "seed": settings.seed,
        "pair": state.job.name,
        "yaw_deg": meta.get("yaw_deg"),
        "pitch_deg": meta.get("pitch_deg"),
    }
    return (
        {**common, "side": 0, "attributes": meta.get("source_attributes")},
        {**common, "side": 1, "attributes": target},
    )
