"""What a model of the synthetic heads world can edit, and the refusals when it is asked for more.

The built-in model (`EditPipeline.from_preset("synthetic")`, `ip2n edit` without `--weights`) is the
whole method trained on the synthetic 3-D heads world. It knows nothing else:

- **pictures**: it edits heads of its world only — images ip2n rendered from the world, which carry
  the world's mark (`ip2n.synthetic.world.marks`). Anything else (a photo) it encodes as the nearest
  synthetic head, an unrelated person: `NotAWorldHeadError`;
- **instructions**: its text tower knows only the world's phrasings and maps any sentence onto some
  attribute change. An instruction that names none of the world's attributes
  (`ip2n.synthetic.world.vocabulary`) would make an unrelated edit: `UnknownInstructionError`.

Both are `OutsideWorldError`s (ValueErrors with a message for people: why, and what to do). The
opt-ins `allow_any_image` / `allow_any_instruction` (CLI `--any-image` / `--any-instruction`, the web
app's "Try anyway") run the model anyway; the result then carries a note saying it is not an edit of
the input. Each front end words the advice for its own controls (`Wording`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

OFFICIAL_FILES_SOURCE = (
    'the files listed under "Pretrained Models" in the authors\' InstructPix2NeRF repository '
    "(github.com/mybabyyh/InstructPix2NeRF: the DiT, the EG3D generator, the PREIM3D encoder and "
    "IR-SE50), which `ip2n weights download` fetches (two of them through a browser); docs/models.md "
    "says where each comes from and docs/checkpoints.md which file goes where"
)


@dataclass(frozen=True)
class Wording:
    """How a front end names the ways out of a refusal."""

    weights: str  # how to edit with the official weights instead
    heads: str  # where heads of the world come from
    any_image: str  # the opt-in for pictures
    any_instruction: str  # the opt-in for instructions
    listing: str  # where the full list of what the model understands is


API_WORDING = Wording(
    weights="put them in a folder and load it with EditPipeline.from_weights(DIR)",
    heads="`ip2n.builtin.sample_head(seed)` renders one, and `ip2n demo` and `ip2n synth sample -o FILE` "
    "write them",
    any_image="pass allow_any_image=True",
    any_instruction="pass allow_any_instruction=True",
    listing="`ip2n models` lists them",
)
CLI_WORDING = Wording(
    weights="put them in a folder and pass it with --weights DIR",
    heads="`ip2n demo` writes one (ip2n-demo/input.png), and so does `ip2n synth sample -o head.png`",
    any_image="pass --any-image",
    any_instruction="pass --any-instruction",
    listing="`ip2n models` lists them",
)
WEB_WORDING = Wording(
    weights="start the server with them: `ip2n serve --weights DIR`",
    heads="pick one of the Examples under the Edit button",
    any_image="tick “Try anyway”",
    any_instruction="tick “Try anyway”",
    listing="`ip2n models` lists them",
)


class OutsideWorldError(ValueError):
    """The built-in model was asked for what it cannot do; `explain(wording)` words the advice for a
    front end (`str()` uses the Python API's)."""

    def explain(self, wording: Wording) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.explain(API_WORDING)


class NotAWorldHeadError(OutsideWorldError):
    """A picture that is not a head of the synthetic world, given to the world's model."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = reason

    def explain(self, wording: Wording) -> str:
        return (
            f"{self.name} is not a head of the built-in model's synthetic world: {self.reason}. The "
            "built-in model (used when no official weights are given) knows only the synthetic 3-D heads "
            "it was trained on and would turn this picture into an unrelated synthetic head. To edit a "
            f"photo, use the official InstructPix2NeRF weights — {OFFICIAL_FILES_SOURCE}; "
            f"{wording.weights}. To try the built-in model, edit a head of its world: {wording.heads}. "
            f"To run it on this picture anyway (the result is then not an edit of it), {wording.any_image}."
        )


class UnknownInstructionError(OutsideWorldError):
    """Instructions that name none of the changes the world's model was trained on."""

    def __init__(self, instructions: Sequence[str]) -> None:
        super().__init__(*instructions)
        self.instructions = tuple(instructions)

    def explain(self, wording: Wording) -> str:
        from ip2n.synthetic.world.vocabulary import KEYWORDS

        quoted = ", ".join(f"“{text}”" for text in self.instructions)
        asks = "asks" if len(self.instructions) == 1 else "ask"
        attributes = "; ".join(
            f"{attribute} ({', '.join(words[:3])})" for attribute, words in KEYWORDS.items()
        )
        return (
            f"the built-in model cannot tell what {quoted} {asks} for: no word of it names a change the "
            "model was trained on, and it would make an unrelated edit instead. It changes only these "
            f"attributes of its heads: {attributes} — e.g. “put glasses on him”, “make her smile”, “give "
            f"her blond hair”, “turn him into a bronze statue”; {wording.listing} with their wordings. "
            f"To run the instruction anyway (the result is then not that edit), {wording.any_instruction}; "
            "for instructions in free English use the official InstructPix2NeRF weights."
        )


def check_world_image(image: Image.Image, name: str) -> None:
    """Raise `NotAWorldHeadError` unless `image` is a marked, unchanged render of the world."""
    from ip2n.synthetic.world.marks import why_unmarked

    reason = why_unmarked(image)
    if reason:
        raise NotAWorldHeadError(name, reason)


def check_known_instructions(instructions: Sequence[str]) -> None:
    """Raise `UnknownInstructionError` for the instructions that name no attribute of the world."""
    from ip2n.synthetic.world.vocabulary import unknown_instructions

    unknown = unknown_instructions(instructions)
    if unknown:
        raise UnknownInstructionError(unknown)


def world_scope_notes(
    image: Image.Image,
    name: str,
    instructions: Sequence[str],
    *,
    allow_any_image: bool,
    allow_any_instruction: bool,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Check an edit for a world model → (what is outside the world: "image" / "instruction", notes).

    Raises `NotAWorldHeadError` / `UnknownInstructionError` unless the matching opt-in is given; with
    it, the note says that the result is not an edit of the input.
    """
    outside, notes = [], []
    try:
        check_world_image(image, name)
    except NotAWorldHeadError as exc:
        if not allow_any_image:
            raise
        outside.append("image")
        notes.append(
            f"not an edit of the input: {name} is not a head of the built-in model's synthetic world "
            f"({exc.reason}); the model knows only its world's heads, so the result is a synthetic head "
            "of that world, not an edit of this picture"
        )
    try:
        check_known_instructions(instructions)
    except UnknownInstructionError as exc:
        if not allow_any_instruction:
            raise
        outside.append("instruction")
        quoted = ", ".join(f"“{text}”" for text in exc.instructions)
        notes.append(
            f"not the edit asked for: no word of {quoted} names a change the built-in model was trained "
            "on, so what it changed is whatever its text tower read into the words"
        )
    return tuple(outside), tuple(notes)
