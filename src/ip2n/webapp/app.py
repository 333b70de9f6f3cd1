"""The `ip2n serve` page: Gradio components wired to `EditSession.edit`, and the server around them.

Everything an edit does happens in `EditSession`; this module only turns page values into a
request and a result into page values. What a public page needs is set here: a queue with a
concurrency limit and a maximum length, an upload size limit, messages instead of stack traces, and
file serving confined to the files the app wrote into the session's output root, and uploads
bounded to images (`ip2n.webapp.files`; Gradio's upload and example caches are moved into the root).
"""

from __future__ import annotations

import functools
import hashlib
import html
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Gradio reads this when it is imported: no usage reports leave the machine.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from ip2n.limits import MAX_CONCURRENCY, MAX_QUEUE_SIZE, MAX_UPLOAD_MB  # noqa: E402
from ip2n.webapp.files import (  # noqa: E402
    FileGuard,
    check_output_root_owner,
    claim_output_root,
    prune_uploads,
)
from ip2n.webapp.session import (  # noqa: E402
    EXAMPLES_DIR,
    MAX_VIEWS,
    EditOutcome,
    EditSession,
    WebEditSettings,
    error_concerns,
)

logger = logging.getLogger(__name__)

TITLE = "ip2n — edit a portrait in 3-D with an instruction"
TRY_ANYWAY = "Try anyway"
EXAMPLES_PER_PAGE = 6
# The page's own styles: refusals stand out under their input; the examples' instructions wrap
# within the table instead of widening it; the three result images and the views share one size.
CSS = """
.ip2n-message { border-left: 4px solid #c2410c; background: #fff7ed; color: #431407;
                padding: 6px 10px; border-radius: 4px; }
#examples table { table-layout: fixed; width: 100%; }
#examples td, #examples th { white-space: normal; overflow-wrap: anywhere; }
#crop img, #edited img, #depth img { width: 100%; height: 100%; object-fit: contain !important; }
#views img, #history img { object-fit: contain !important; }
#history .grid-container { grid-template-columns: repeat(6, minmax(0, 1fr)) !important; }
"""
RESULT_OUTPUTS = 11  # what `_edit` returns: crop … history (the page's edit adds its message slots)


@dataclass(frozen=True)
class ServeSettings:
    """How the server runs (the request time limit and retention belong to `EditSession`)."""

    host: str = "127.0.0.1"
    port: int = 7860
    concurrency: int = 1  # edits running at once; more only helps with spare cores or a GPU
    queue_size: int = 64  # waiting edits beyond this are refused with "queue full"
    max_upload_mb: float = 20.0

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be from 0 to 65535, got {self.port}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(
                f"concurrency must be at least 1 and at most {MAX_CONCURRENCY}, got {self.concurrency}"
            )
        if not 1 <= self.queue_size <= MAX_QUEUE_SIZE:
            raise ValueError(
                f"queue size must be at least 1 and at most {MAX_QUEUE_SIZE}, got {self.queue_size}"
            )
        # `not 0 < x <= limit` also refuses NaN, which compares false with everything.
        if not 0 < self.max_upload_mb <= MAX_UPLOAD_MB:
            raise ValueError(
                f"the upload limit must be a number above 0 and at most {MAX_UPLOAD_MB:g} MB, "
                f"got {self.max_upload_mb} MB"
            )


def example_inputs(output_root: str | os.PathLike) -> list[list[Any]]:
    """Example rows [portrait path, instruction, align] for the page: the built-in model's examples.

    The portraits are frontal renders of the built-in synthetic world (`ip2n.builtin`), marked as
    heads of the world, made on first use and kept in `output_root/examples` (the package ships no
    image files; a file without a valid mark is rendered again). Alignment is off: the renders are
    ready crops, and not faces a photo face detector knows.
    """
    from ip2n.builtin import EXAMPLES, example_heads, render_portrait
    from ip2n.export.images import save_image

    folder = Path(output_root) / EXAMPLES_DIR
    rows = []
    for number, (identity, attributes, instruction) in enumerate(example_heads()):
        path = folder / f"example_{number}.png"
        if not _is_world_head(path):
            save_image(render_portrait(identity, attributes, seed=EXAMPLES[number][0]), path)
            logger.info("rendered example portrait %s", path)
        rows.append([str(path), instruction, False])
    return rows


def _is_world_head(path: Path) -> bool:
    """Whether `path` is a marked, unchanged head of the synthetic world (`ip2n.synthetic.world.marks`)."""
    from PIL import Image, UnidentifiedImageError

    from ip2n.synthetic.world.marks import world_mark

    try:
        with Image.open(path) as image:
            image.load()
            return world_mark(image) is not None
    except (OSError, UnidentifiedImageError):
        return False


def check_output_root(output_root: str | os.PathLike) -> None:
    """Refuse an output folder that holds the current folder, or files the app did not write (a
    non-empty folder without the app's marker, `ip2n.webapp.files.OWNER_MARKER`)."""
    output_root = Path(output_root).resolve()
    if Path.cwd().resolve().is_relative_to(output_root):
        raise ValueError(
            f"the output folder {output_root} holds the current folder, and every file in it could be "
            "downloaded from the page; choose a folder of its own for the web app (-o/--out)"
        )
    check_output_root_owner(output_root)


def confine_files_to(output_root: Path) -> None:
    """Make Gradio keep uploads and cached examples inside `output_root`, the only folder it then serves.

    Gradio reads these variables when a page is built and launched (they are process-wide, as
    Gradio's own configuration is); results already inside the folder are served without copies.
    """
    os.environ["GRADIO_TEMP_DIR"] = str(output_root)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(output_root / "gradio-examples")


def build_app(session: EditSession, settings: ServeSettings = ServeSettings()) -> gr.Blocks:
    """The page, its events and its queue, for `session` (not launched: see `launch`)."""
    settings.check()
    defaults = session.default_settings()
    check_output_root(session.output_root)
    claim_output_root(session.output_root)
    prune_uploads(session.output_root, session.keep)
    confine_files_to(session.output_root)
    # The built-in model edits heads of its synthetic world only: no face alignment by default (its
    # heads are ready crops), its examples to start from, and "Try anyway" for other pictures.
    world = session.world_model
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(
            f"# {TITLE}\nModel: **{html.escape(session.model_name or 'unnamed')}**. "
            + (
                "This is the built-in model: it edits only heads of its synthetic 3-D world — pick one of "
                "the **Examples** below (photos need the official weights: `ip2n serve --weights DIR`), "
                if world
                else "Upload a portrait, "
            )
            + "type what to change, press **Edit**. Results: the edited view, views from −30° to 30°, "
            "depth, and optionally an orbit video and a 3-D mesh."
        )
        history = gr.State({"steps": [], "last_digest": None})
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    label="Portrait",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    height=320,
                    elem_id="portrait",
                )
                image_message = _message_slot("image-message")
                instructions = gr.Textbox(
                    label="Instructions (one per line)",
                    lines=3,
                    max_lines=8,
                    placeholder="add eyeglasses",
                    elem_id="instructions",
                )
                instructions_message = _message_slot("instructions-message")
                with gr.Row():
                    align = gr.Checkbox(
                        label="Align face (photos)",
                        value=not world,
                        info="detect and crop the face first; off for ready crops",
                        elem_id="align",
                    )
                    chain = gr.Checkbox(
                        label="One after another",
                        value=False,
                        info="apply several instructions in turn, not as one sentence",
                    )
                try_anyway = gr.Checkbox(
                    label=TRY_ANYWAY,
                    value=False,
                    visible=world,
                    info="run the built-in model on a picture that is not a head of its world, or an "
                    "instruction it does not know: the result is then not an edit of your input",
                    elem_id="try-anyway",
                )
                with gr.Accordion("Settings", open=True):
                    strength = gr.Slider(
                        0.05,
                        0.95,
                        value=defaults.strength,
                        step=0.05,
                        label="Strength",
                        info="how much may change",
                    )
                    text_scale = gr.Slider(
                        0.0,
                        10.0,
                        value=defaults.guidance_scale,
                        step=0.1,
                        label="Text guidance",
                        info="how closely to follow the instruction",
                    )
                    image_scale = gr.Slider(
                        0.0,
                        5.0,
                        value=defaults.image_guidance_scale,
                        step=0.1,
                        label="Image guidance",
                        info="how closely to keep the input",
                    )
                    steps = gr.Slider(
                        10,
                        50,
                        value=defaults.num_inference_steps,
                        step=10,
                        label="Steps",
                        info="diffusion schedule length (the edit runs strength × steps)",
                    )
                    seed = gr.Slider(0, 10_000, value=defaults.seed, step=1, label="Seed")
                with gr.Accordion("Outputs", open=False):
                    views = gr.Slider(1, MAX_VIEWS, value=defaults.views, step=1, label="Views")
                    video = gr.Checkbox(
                        label=f"Orbit video ({defaults.video_frames} frames)",
                        value=defaults.video,
                        elem_id="video-option",
                    )
                    mesh = gr.Checkbox(
                        label=f"3-D mesh ({defaults.mesh_resolution}³ grid, GLB)",
                        value=defaults.mesh,
                        elem_id="mesh-option",
                    )
                edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                request_message = _message_slot("request-message")
                # The API's edit: refusals are errors for the client (the page shows them in place).
                api_button = gr.Button(visible=False)
            with gr.Column(scale=2):
                with gr.Row():
                    crop = gr.Image(
                        label="What the model sees",
                        type="filepath",
                        interactive=False,
                        height=256,
                        elem_id="crop",
                    )
                    edited = gr.Image(
                        label="Edited", type="filepath", interactive=False, height=256, elem_id="edited"
                    )
                    depth = gr.Image(
                        label="Depth (near = bright)",
                        type="filepath",
                        interactive=False,
                        height=256,
                        elem_id="depth",
                    )
                summary = gr.Markdown(elem_id="summary")
                gallery = gr.Gallery(
                    label="Views", columns=MAX_VIEWS // 2, height=220, object_fit="contain", elem_id="views"
                )
                with gr.Row():
                    orbit = gr.Video(label="Orbit", interactive=False, loop=True, height=300, elem_id="orbit")
                    viewer = gr.Model3D(label="Mesh", interactive=False, height=300, elem_id="mesh")
                mesh_download = gr.DownloadButton(
                    "Download mesh (GLB)", visible=False, elem_id="mesh-download"
                )
                again = gr.Button("Edit this result again", visible=False, elem_id="again")
                history_gallery = gr.Gallery(
                    label="History (chained edits)",
                    columns=6,
                    height=180,
                    object_fit="contain",
                    elem_id="history",
                )
        # Below both columns: beside the results on a wide screen, after them on a phone's.
        gr.Examples(
            example_inputs(session.output_root),
            inputs=[image, instructions, align],
            label="Examples: heads of the built-in synthetic world"
            + (" (the pictures this model edits)" if world else ""),
            examples_per_page=EXAMPLES_PER_PAGE,
            elem_id="examples",
        )

        inputs = [
            image,
            instructions,
            align,
            chain,
            strength,
            text_scale,
            image_scale,
            steps,
            seed,
            views,
            video,
            mesh,
            try_anyway,
            history,
        ]
        outputs = [
            crop,
            edited,
            depth,
            summary,
            gallery,
            orbit,
            viewer,
            mesh_download,
            again,
            history_gallery,
            history,
        ]
        messages = {"image": image_message, "instructions": instructions_message, "request": request_message}
        edit_button.click(
            functools.partial(_page_edit, session),
            inputs=inputs,
            outputs=outputs + list(messages.values()),
            preprocess=False,  # the session reads the upload itself (see the API's edit below)
            api_visibility="private",
        )
        api_button.click(
            _api_messages(functools.partial(_edit, session)),
            inputs=inputs,
            outputs=outputs,
            # Raw payloads: the session reads the upload itself, so a bad file gets its readable message.
            preprocess=False,
            api_name="edit",
        )
        again.click(
            _continue,
            inputs=[history],
            outputs=[image, align, instructions],
            concurrency_limit=None,
            api_visibility="private",
        )
        # An upload is a photo to align, except for the built-in model, whose heads are ready crops.
        image.upload(lambda: not world, outputs=[align], concurrency_limit=None, api_visibility="private")
    app.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    return app


def launch(app: gr.Blocks, session: EditSession, settings: ServeSettings = ServeSettings()) -> str:
    """Start the server in a background thread → its local URL (`app.block_thread()` waits on it)."""
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        max_file_size=round(settings.max_upload_mb * 2**20),
        allowed_paths=[str(session.output_root)],
        # In front of Gradio's routes: only the app's own files are served, uploads are images only.
        app_kwargs={
            "middleware": [
                Middleware(
                    FileGuard,
                    output_root=session.output_root,
                    max_upload_bytes=round(settings.max_upload_mb * 2**20),
                    keep=session.keep,
                )
            ]
        },
        show_error=False,
        css=CSS,
        ssr_mode=False,
        share=False,
        quiet=True,
        prevent_thread_lock=True,
        footer_links=["api"],
    )
    # gradio declares local_url as None in Blocks.__init__; launch() has set it to the URL string.
    return app.local_url  # type: ignore[return-value]


INTERNAL_ERROR = (
    "the server could not finish this edit because of an internal error (its log has the details); "
    "please try again"
)


def _api_messages(function: Callable) -> Callable:
    """For API clients: expected failures as errors carrying the library's message, any other as a
    short note (its traceback goes to the log)."""

    @functools.wraps(function)
    def wrapper(*args):
        try:
            return function(*args)
        # Every failure ip2n expects from users' input is a ValueError with a message for people.
        except ValueError as exc:
            raise gr.Error(
                html.escape(str(exc), quote=False), title="Cannot edit", print_exception=False
            ) from None
        except Exception:
            logger.exception("an edit failed")
            raise gr.Error(INTERNAL_ERROR, title="Server error", print_exception=False) from None

    return wrapper


def _message_slot(elem_id: str) -> gr.Markdown:
    """Where the page says why an edit was refused, under the input it concerns (hidden until then)."""
    return gr.Markdown(visible=False, elem_id=elem_id, elem_classes=["ip2n-message"])


def _page_edit(
    session: EditSession,
    image: dict | None,
    instructions: str,
    align: bool,
    chain: bool,
    strength: float,
    text_scale: float,
    image_scale: float,
    steps: float,
    seed: float,
    views: float,
    video: bool,
    mesh: bool,
    try_anyway: bool,
    history: dict,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio fills in a parameter with this default)
) -> tuple:
    """The page's edit: progress while it runs; a refusal stays in the page under the input it
    concerns (the results shown so far are kept) instead of a notice that fades."""
    slots = {name: gr.Markdown(visible=False) for name in ("image", "instructions", "request")}
    try:
        results = _edit(
            session,
            image,
            instructions,
            align,
            chain,
            strength,
            text_scale,
            image_scale,
            steps,
            seed,
            views,
            video,
            mesh,
            try_anyway,
            history,
            on_progress=lambda fraction, what: progress(fraction, desc=what),
        )
    except ValueError as exc:
        slots[error_concerns(exc)] = gr.Markdown(
            "**Cannot edit:** " + html.escape(str(exc), quote=False), visible=True
        )
        return (*(gr.skip() for _ in range(RESULT_OUTPUTS)), *slots.values())
    except Exception:
        logger.exception("an edit failed")
        slots["request"] = gr.Markdown("**Server error:** " + INTERNAL_ERROR, visible=True)
        return (*(gr.skip() for _ in range(RESULT_OUTPUTS)), *slots.values())
    return (*results, *slots.values())


def _edit(
    session: EditSession,
    image: dict | None,
    instructions: str,
    align: bool,
    chain: bool,
    strength: float,
    text_scale: float,
    image_scale: float,
    steps: float,
    seed: float,
    views: float,
    video: bool,
    mesh: bool,
    try_anyway: bool,
    history: dict,
    on_progress: Callable[[float, str], None] | None = None,
) -> tuple:
    settings = WebEditSettings(
        num_inference_steps=_whole(steps),
        strength=strength,
        guidance_scale=text_scale,
        image_guidance_scale=image_scale,
        seed=_whole(seed),
        align=bool(align),
        chain=bool(chain),
        views=_whole(views),
        video=bool(video),
        mesh=bool(mesh),
        allow_any_image=bool(try_anyway),
        allow_any_instruction=bool(try_anyway),
    )
    path = image.get("path") if isinstance(image, dict) else None
    name = (image.get("orig_name") if isinstance(image, dict) else None) or (
        Path(path).name if path else None
    )
    lines = instructions.splitlines() if isinstance(instructions, str) else []
    outcome = session.edit(path, lines, settings, image_name=name, on_progress=on_progress)
    assert path is not None  # session.edit refuses a missing image
    history = _extend_history(history, path, outcome)
    return (
        str(outcome.crop),
        str(outcome.edited),
        str(outcome.depth),
        _summary(outcome),
        [(str(view), f"yaw {yaw:+g}°") for view, yaw in zip(outcome.views, outcome.view_yaws)],
        _optional(outcome.orbit),
        _optional(outcome.mesh),
        gr.DownloadButton(value=_optional(outcome.mesh), visible=outcome.mesh is not None),
        gr.Button(visible=True),
        list(history["steps"]),
        history,
    )


def _extend_history(history: dict, input_path: str, outcome: EditOutcome) -> dict:
    """Add this edit to the chain when its input is the previous result, else start a new chain."""
    caption = " · ".join(outcome.settings.instructions)
    continues = history.get("steps") and history.get("last_digest") == _digest(input_path)
    steps = list(history["steps"]) if continues else [(str(outcome.crop), "input")]
    steps.append((str(outcome.edited), f"{len(steps)}. {caption}"))
    return {"steps": steps, "last_digest": _digest(outcome.edited)}


def _continue(history: dict) -> tuple:
    """Put the latest result in the input: the next edit continues the chain (no alignment: it is a crop)."""
    if not history.get("steps"):
        raise gr.Error("there is no result to edit yet", print_exception=False)
    return history["steps"][-1][0], False, ""


def _summary(outcome: EditOutcome) -> str:
    settings = outcome.settings
    prompts = " → ".join(f"“{html.escape(prompt)}”" for prompt in settings.prompts)
    # With "Try anyway" on something outside the built-in model's world, the result is no edit of the
    # input: the summary says so first, not "Edited".
    done = (
        f"**Not an edit of your input** ({' and '.join(outcome.outside_world)} outside the built-in "
        f"model's world; see the notes). Ran in {outcome.seconds:.1f} s"
        if outcome.outside_world
        else f"Edited in {outcome.seconds:.1f} s"
    )
    lines = [
        f"{done}: {prompts}, strength {settings.strength:g}, "
        f"text guidance {settings.guidance_scale:g}, image guidance {settings.image_guidance_scale:g}, "
        f"{settings.num_inference_steps} steps, seed {settings.seed}. Files: `{outcome.folder.name}`."
    ]
    lines += [f"Note: {html.escape(note)}" for note in outcome.notes]
    return "\n\n".join(lines)


def _digest(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _whole(value: Any) -> Any:
    """Slider values arrive as JSON numbers: 50.0 means 50; anything else is left for the checks to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _optional(path: Path | None) -> str | None:
    return None if path is None else str(path)
