"""Edits for the web app: one request → one fresh folder of result files, through `EditPipeline`.

Pure Python (no Gradio), so every rule of the app is testable without a browser: the limits a
public page must enforce (instruction count and length, steps, views), the request time limit,
readable messages for every bad input, and where files go. `ip2n.webapp.app` only translates
between page components and `EditSession.edit`. A session on the built-in model (`world_model`)
refuses pictures that are not heads of its synthetic world and instructions that name none of its
attributes, with the page's advice (its examples, its "Try anyway" box; `ip2n.pipeline.scope`).

Layout of the output root (the only folder the app serves files from):
    requests/<time>-<random>/    one folder per edit (see `EditOutcome`); names sort by creation time,
                                 and the oldest are removed beyond `keep`
    examples/                    the example portraits (`ip2n.webapp.app.example_inputs`)
    (Gradio keeps uploaded files here too, in folders named by their hash)
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ip2n.align import AlignmentError
from ip2n.diffusion.editing import edit_schedule
from ip2n.export.mesh import DEFAULT_DENSITY_LEVEL
from ip2n.limits import MAX_KEEP, MAX_TIMEOUT_SECONDS
from ip2n.pipeline import (
    DEFAULT_IMAGE_SCALE,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    DEFAULT_TEXT_SCALE,
    EditPipeline,
    EditSettings,
    ImageInputError,
    InstructionError,
    OutsideWorldError,
)
from ip2n.pipeline.edit import check_guidance_scales
from ip2n.pipeline.result import CROP_NAME, view_yaws_deg
from ip2n.pipeline.scope import WEB_WORDING, NotAWorldHeadError, UnknownInstructionError

logger = logging.getLogger(__name__)

# Bounds for what one page request may ask of a shared server (the sliders stay inside them; API
# clients are checked here). The token limit of the text encoder is checked by the pipeline; the
# character limit only stops absurdly long text before it reaches the tokenizer.
MAX_INSTRUCTIONS = 8
MAX_INSTRUCTION_CHARACTERS = 500
MAX_STEPS = 100
MAX_VIEWS = 8
MAX_VIDEO_FRAMES = 120
MAX_MESH_RESOLUTION = 256
MAX_SEED = 2**63 - 1
DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_KEEP_REQUESTS = 200

REQUESTS_DIR = "requests"
EXAMPLES_DIR = "examples"


class RequestError(ValueError):
    """A request the app refuses; the message is shown in the page as it is, next to what it concerns:
    "image" (the picture), "instructions", or "request" (the settings or the request as a whole)."""

    def __init__(self, message: str, concerns: str = "request") -> None:
        super().__init__(message)
        self.concerns = concerns


def error_concerns(error: BaseException) -> str:
    """Which input a refusal is about ("image", "instructions" or "request"): where the page shows it."""
    if isinstance(error, RequestError):
        return error.concerns
    if isinstance(error, ImageInputError | NotAWorldHeadError | AlignmentError):
        return "image"
    if isinstance(error, InstructionError | UnknownInstructionError):
        return "instructions"
    return "request"


class RequestTimeoutError(RequestError):
    """A request that ran past the server's time limit."""


@dataclass(frozen=True)
class WebEditSettings:
    """The page's controls. Orbit video and mesh are off by default: they take most of the time."""

    num_inference_steps: int = DEFAULT_STEPS
    strength: float = DEFAULT_STRENGTH
    guidance_scale: float = DEFAULT_TEXT_SCALE  # text guidance
    image_guidance_scale: float = DEFAULT_IMAGE_SCALE
    seed: int = 0
    align: bool = False  # detect and crop the face first (photos); off for ready crops
    chain: bool = False  # several instructions one after another instead of one combined prompt
    # The built-in model only: run it on a picture that is not a head of its world / an instruction
    # that names none of its attributes (the page's "Try anyway" sets both; `ip2n.pipeline.scope`).
    allow_any_image: bool = False
    allow_any_instruction: bool = False
    views: int = 4  # edited views over yaw −30° … 30°
    video: bool = False
    video_frames: int = 24
    mesh: bool = False  # GLB, for the page's 3-D viewer
    mesh_resolution: int = 128

    def check(self) -> None:
        """Refuse values outside the app's bounds (the pipeline checks the ranges of the others)."""
        for name, value in (
            ("strength", self.strength),
            ("text guidance", self.guidance_scale),
            ("image guidance", self.image_guidance_scale),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"{name} must be a number, got {value!r}")
        _check_int("steps", self.num_inference_steps, 1, MAX_STEPS)
        # API clients are not held by the sliders: the pipeline's own checks, before any work (finite
        # guidance from 0 to MAX_GUIDANCE_SCALE, 0 < strength < 1, steps that space evenly).
        try:
            check_guidance_scales(self.guidance_scale, self.image_guidance_scale)
            edit_schedule(self.num_inference_steps, self.strength)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        _check_int("seed", self.seed, 0, MAX_SEED)
        _check_int("views", self.views, 1, MAX_VIEWS)
        if self.video:
            _check_int("orbit video frames", self.video_frames, 2, MAX_VIDEO_FRAMES)
        if self.mesh:
            _check_int("mesh resolution", self.mesh_resolution, 16, MAX_MESH_RESOLUTION)


@dataclass(frozen=True)
class EditOutcome:
    """The files of one edit, all inside `folder`; `record` (result.json) is written last."""

    folder: Path
    crop: Path  # the image the encoder saw (the aligned crop when aligning)
    source: Path  # frontal reconstruction of the input
    edited: Path  # frontal view of the edit
    views: tuple[Path, ...]  # edited views, yaw −30° … 30°
    view_yaws: tuple[float, ...]  # their yaw in degrees
    depth: Path
    latent: Path  # edited W+ latent (1, 14, w_dim) float32
    orbit: Path | None
    mesh: Path | None
    record: Path
    settings: EditSettings  # what the pipeline ran (prompts, seed, ...)
    notes: tuple[str, ...]
    seconds: float
    # What the built-in model ran on outside its world with "Try anyway" ("image", "instruction"):
    # then the result is not an edit of the input.
    outside_world: tuple[str, ...] = ()


class EditSession:
    """Runs web-app edits on one `EditPipeline`, writing each into its own folder of `output_root`.

    `timeout`: seconds a request may run; it is checked between stages (editing, views, files), since
    a running PyTorch computation cannot be interrupted safely. `keep`: how many request folders stay
    on disk (the oldest are removed first). `mesh_level`: the density iso-level of meshes, a property
    of the model (EG3D's 10 suits the trained generators; "auto" = the middle of the density range).
    Safe to call from several threads: the pipeline runs one edit at a time (its prompt cache is not
    thread-safe); rendering and writing files run in parallel.
    """

    def __init__(
        self,
        pipeline: EditPipeline,
        output_root: str | os.PathLike,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        keep: int = DEFAULT_KEEP_REQUESTS,
        mesh_level: float | str = DEFAULT_DENSITY_LEVEL,
    ) -> None:
        check_session_options(timeout, keep)
        self.pipeline = pipeline
        self.output_root = Path(output_root).resolve()
        self.requests_dir = self.output_root / REQUESTS_DIR
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.keep = keep
        self.mesh_level = mesh_level
        self._pipeline_lock = threading.Lock()
        self._prune_lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.pipeline.model_name

    @property
    def world_model(self) -> bool:
        """The model edits heads of the synthetic world only (the built-in model): no face alignment,
        examples to start from, and a "Try anyway" opt-in for other pictures."""
        return self.pipeline.world_model

    def default_settings(self) -> WebEditSettings:
        """The page's initial controls: the model's own sampling defaults (`EditPipeline.defaults`)."""
        model = self.pipeline.defaults
        return WebEditSettings(
            num_inference_steps=model.num_inference_steps,
            strength=model.strength,
            guidance_scale=model.guidance_scale,
            image_guidance_scale=model.image_guidance_scale,
        )

    def edit(
        self,
        image: str | os.PathLike | Image.Image | None,
        instructions: list[str],
        settings: WebEditSettings = WebEditSettings(),
        *,
        image_name: str | None = None,
        on_progress: ProgressReport | None = None,
    ) -> EditOutcome:
        """Edit `image` (a file path or PIL image) with `instructions` into a fresh request folder.

        `image_name` is how messages refer to the image (the uploaded file's own name rather than
        the server's copy). `on_progress(fraction, what)` is told what runs: waiting for the model,
        each diffusion step, then each output. Raises a `ValueError` subclass with a message for the
        page for every bad input; a failed request leaves no folder behind.
        """
        deadline = time.monotonic() + self.timeout
        instructions = _check_instructions(instructions)
        settings.check()
        if image is None:
            raise ImageInputError("no image given: upload a portrait (or pick an example) first")
        picture = image if isinstance(image, Image.Image) else os.fspath(image)
        folder = Path(
            tempfile.mkdtemp(
                prefix=datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f-"), dir=self.requests_dir
            )
        )
        try:
            outcome = self._run(
                picture, image_name, instructions, settings, folder, deadline, on_progress or _no_report
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._prune()
        return outcome

    def _run(
        self,
        picture: str | Image.Image,
        image_name: str | None,
        instructions: list[str],
        settings: WebEditSettings,
        folder: Path,
        deadline: float,
        report: ProgressReport,
    ) -> EditOutcome:
        start = time.perf_counter()
        report(0.0, "waiting for the model (one edit at a time)")
        with self._pipeline_lock:
            self._check_deadline(deadline)
            step_counter = _StepCounter(report, instructions, settings)
            report(0.0, "encoding the portrait and the instructions")
            try:
                result = self.pipeline(
                    picture,
                    instructions,
                    num_inference_steps=settings.num_inference_steps,
                    strength=settings.strength,
                    guidance_scale=settings.guidance_scale,
                    image_guidance_scale=settings.image_guidance_scale,
                    chain=settings.chain,
                    align=settings.align,
                    generator=torch.Generator().manual_seed(settings.seed),
                    allow_any_image=settings.allow_any_image,
                    allow_any_instruction=settings.allow_any_instruction,
                    callback_on_step_end=step_counter,
                    callback_on_step_end_tensor_inputs=(),
                )
            # Messages name the user's file, not the server's copy of it.
            except ImageInputError as exc:
                raise ImageInputError(_name_upload(str(exc), picture, image_name)) from None
            except OutsideWorldError as exc:
                # Worded for the page: its examples and its "Try anyway" box.
                message = exc.explain(WEB_WORDING)
                raise RequestError(
                    _name_upload(message, picture, image_name or "this picture"), error_concerns(exc)
                ) from None
            except AlignmentError as exc:
                raise RequestError(
                    f"{_name_upload(str(exc), picture, image_name)}. If the image already is a face "
                    'crop (like the examples), untick "Align face".',
                    "image",
                ) from None
        yaws = tuple(view_yaws_deg(settings.views))
        written = result.save(
            folder,
            crop=True,
            views=settings.views,
            views_as="files",
            video=settings.video,
            video_frames=settings.video_frames,
            mesh="glb" if settings.mesh else None,
            mesh_resolution=settings.mesh_resolution,
            mesh_level=self.mesh_level,
            metadata={
                "webapp": {
                    "crop": CROP_NAME,
                    "views": [f"view_{index}.png" for index in range(settings.views)],
                    "view_yaws_degrees": list(yaws),
                }
            },
            # A running computation cannot be interrupted: the time limit is checked between stages.
            on_stage=lambda stage: self._next_output(stage, deadline, report),
        )
        names = {path.name: path for path in written}
        return EditOutcome(
            folder=folder,
            crop=names[CROP_NAME],
            source=names["source.png"],
            edited=names["edited.png"],
            views=tuple(names[f"view_{index}.png"] for index in range(settings.views)),
            view_yaws=yaws,
            depth=names["depth.png"],
            latent=names["edited_latent.npy"],
            orbit=names.get("orbit.mp4"),
            mesh=names.get("mesh.glb"),
            record=names["result.json"],
            settings=result.settings,
            notes=result.notes,
            seconds=round(time.perf_counter() - start, 3),
            outside_world=result.outside_world,
        )

    def _next_output(self, stage: str, deadline: float, report: ProgressReport) -> None:
        self._check_deadline(deadline)
        fraction, what = OUTPUT_STAGES.get(stage, (DIFFUSION_SHARE, stage))
        report(fraction, what)

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise RequestTimeoutError(
                f"this edit took longer than the server's limit of {self.timeout:g} s and was stopped; "
                "try fewer steps, fewer views, or leave the orbit video and the mesh off"
            )

    def _prune(self) -> None:
        """Remove the oldest request folders beyond `keep` (names start with their creation time)."""
        with self._prune_lock:
            folders = sorted(path for path in self.requests_dir.iterdir() if path.is_dir())
            for folder in folders[: max(0, len(folders) - self.keep)]:
                logger.info("removing old request folder %s (keeping the newest %d)", folder, self.keep)
                shutil.rmtree(folder, ignore_errors=True)


# How far along an edit is when each output stage of `EditResult.save` starts, and what it says.
DIFFUSION_SHARE = 0.5  # the encoding and the diffusion steps: the first half of the bar
OUTPUT_STAGES = {
    "frontal": (0.5, "rendering the edited portrait and its depth"),
    "views": (0.6, "rendering the views"),
    "orbit": (0.7, "rendering the orbit video"),
    "mesh": (0.85, "extracting the 3-D mesh"),
    "files": (0.98, "writing the files"),
}
ProgressReport = Callable[[float, str], None]


def _no_report(fraction: float, what: str) -> None:
    pass


class _StepCounter:
    """A `callback_on_step_end` that reports each diffusion step of the request as a fraction."""

    def __init__(self, report: ProgressReport, instructions: list[str], settings: WebEditSettings) -> None:
        per_edit = max(1, int(settings.strength * settings.num_inference_steps))
        self.total = per_edit * (len(instructions) if settings.chain else 1)
        self.done = 0
        self.report = report

    def __call__(self, pipeline: object, step_index: int, timestep: int, tensors: dict) -> None:
        self.done += 1
        fraction = DIFFUSION_SHARE * min(1.0, self.done / self.total)
        self.report(fraction, f"diffusion step {min(self.done, self.total)} of {self.total}")


def check_session_options(timeout: float, keep: int) -> None:
    """Refuse a session's options (callers that load a model first check them before loading)."""
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"the request time limit must be positive and at most {MAX_TIMEOUT_SECONDS:g} s, got {timeout} s"
        )
    if not 1 <= keep <= MAX_KEEP:
        raise ValueError(f"at least one request folder must be kept, and at most {MAX_KEEP}; got {keep}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{name} must be a whole number from {low} to {high}, got {value!r}")


def _check_instructions(instructions: list[str]) -> list[str]:
    """Non-empty, not too many, not absurdly long; the pipeline checks the 77-token window."""
    instructions = [text.strip() for text in instructions if isinstance(text, str) and text.strip()]
    if not instructions:
        raise InstructionError('type an instruction first, e.g. "add eyeglasses" (one per line for several)')
    if len(instructions) > MAX_INSTRUCTIONS:
        raise RequestError(
            f"{len(instructions)} instructions given; at most {MAX_INSTRUCTIONS} are accepted at once",
            "instructions",
        )
    for number, text in enumerate(instructions, start=1):
        if len(text) > MAX_INSTRUCTION_CHARACTERS:
            which = "the instruction" if len(instructions) == 1 else f"instruction {number}"
            raise InstructionError(
                f"{which} is {len(text)} characters long, far more than the text encoder's window of "
                f"77 tokens (this page accepts at most {MAX_INSTRUCTION_CHARACTERS} characters): "
                "say it in a short sentence"
            )
    return instructions


def _name_upload(message: str, picture: str | Image.Image, name: str | None) -> str:
    return message.replace(picture, name) if name and isinstance(picture, str) else message
