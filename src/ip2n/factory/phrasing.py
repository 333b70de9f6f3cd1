"""Edits and their instructions: the instruction file, the phrasing grammar, an optional LM paraphraser.

The paper gives each pair 20–30 instructions paraphrased by a language model. Here each edit gets a
*pool* of distinct phrasings, and each pair draws 20–30 of them (its own seed):

- an edit of the synthetic world's attributes (`eyeglasses=true`) uses the world's grammar
  (`ip2n.synthetic.world.instructions`: core phrases with synonyms × casual/formal frames × he/she/they,
  training split only, so `ip2n synth eval`'s held-out wordings stay unseen): hundreds per edit;
- a free instruction ("put a cowboy hat on him") is varied by the same frames (plus a few more),
  by he/she/they where its pronouns are unambiguous (he, him, his, they, them, their; "her" can be
  "him" or "his", so a sentence with "her" keeps its pronouns), and by synonyms of portrait words
  (glasses / eyeglasses / spectacles, ...);
- with a paraphraser (a local instruction-tuned model through transformers' text-generation
  pipeline) the model's paraphrases come first and the grammar fills up to the maximum.

Pools are deduplicated case- and space-insensitively; a pair's instruction file never repeats a line.

The instruction file (`--instructions FILE`, UTF-8): one edit per line, either `attribute=value` for
an attribute of the synthetic world (`eyeglasses=true`, `smile=false`, `hair_color=blond`, ...) or
a free instruction in plain English. Lines starting with `#` are comments. An empty line, a line
that repeats another (ignoring case and spaces), an unknown attribute or value, or a file without
edits is an error naming the line.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ip2n.factory.spec import Edit, MissingWeightsError, derive_seed

logger = logging.getLogger(__name__)

MAX_INSTRUCTION_CHARACTERS = 300
# More frames than the world's own, so that a free instruction without pronouns or synonyms still
# gets 20 phrasings.
EXTRA_FRAMES = (
    "please {} for me",
    "could you please {}?",
    "{} for me",
    "I would like you to {}",
    "would you {}?",
    "try to {}",
    "help me {}",
    "{}, thanks",
    "we need to {}",
)
# Interchangeable words of portrait instructions (whole words, lower case).
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("glasses", "eyeglasses", "spectacles"),
    ("sunglasses", "shades"),
    ("bangs", "fringe"),
    ("mustache", "moustache"),
    ("chubby", "plump"),
    ("slim", "slender"),
    ("big", "large"),
    ("colour", "color"),
    ("gray", "grey"),
    ("blond", "blonde"),
    ("elderly", "old"),
    ("picture", "photo"),
    ("smile", "grin"),
    ("person", "individual"),
)
MAX_SYNONYM_VARIANTS = 6
# Unambiguous pronoun sets: masculine and plural forms map onto each other and onto "she" / "her".
_PRONOUN_FORMS = {
    "he": ("he", "she", "they"),
    "him": ("him", "her", "them"),
    "his": ("his", "her", "their"),
    "they": ("he", "she", "they"),
    "them": ("him", "her", "them"),
    "their": ("his", "her", "their"),
}
# Verb agreement after a swapped subject pronoun (he is → they are).
_AGREEMENT = {("is", 2): "are", ("has", 2): "have", ("was", 2): "were", ("are", 0): "is", ("are", 1): "is"}


class InstructionFileError(ValueError):
    """An instruction file that cannot be used; the message names the file and line."""


def world_edit(attributes: dict[str, Any]) -> Edit:
    """An edit of the world's attributes → Edit with the canonical id and an imperative prompt."""
    from ip2n.synthetic.world.attributes import complete_attributes
    from ip2n.synthetic.world.instructions import PRONOUNS, compose_instruction, core_phrases

    complete_attributes(attributes)  # validates names and values
    parts = [f"{name}={_value_text(value)}" for name, value in sorted(attributes.items())]
    if len(attributes) == 1:
        ((name, value),) = attributes.items()
        imperative = [t for t in core_phrases(name, value, "train") if not t.startswith("{subj}")]
        prompt = imperative[0].format(**PRONOUNS[2])
    else:
        import torch

        prompt = compose_instruction(attributes, torch.Generator().manual_seed(0), split="train")
    return Edit(id=",".join(parts), prompt=prompt, attributes=dict(attributes))


def _value_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_edit_line(line: str) -> Edit:
    """One line of an instruction file → Edit (raises ValueError with the problem)."""
    text = " ".join(line.split())
    match = re.fullmatch(r"([a-z_]+)\s*=\s*([A-Za-z_]+)", text)
    if match:
        from ip2n.synthetic.world.attributes import BINARY_ATTRIBUTES, CATEGORICAL_ATTRIBUTES

        name, raw = match.groups()
        if name in BINARY_ATTRIBUTES:
            if raw.lower() not in ("true", "false"):
                raise ValueError(f"{name} takes true or false, got {raw!r}")
            return world_edit({name: raw.lower() == "true"})
        if name in CATEGORICAL_ATTRIBUTES:
            if raw not in CATEGORICAL_ATTRIBUTES[name]:
                raise ValueError(
                    f"{name} takes one of {', '.join(CATEGORICAL_ATTRIBUTES[name])}, got {raw!r}"
                )
            return world_edit({name: raw})
        known = ", ".join((*BINARY_ATTRIBUTES, *CATEGORICAL_ATTRIBUTES))
        raise ValueError(
            f"unknown attribute {name!r} (attributes: {known}); write other edits in plain English"
        )
    if len(text) > MAX_INSTRUCTION_CHARACTERS:
        raise ValueError(
            f"the instruction is {len(text)} characters long; at most {MAX_INSTRUCTION_CHARACTERS}"
        )
    if not re.search(r"[A-Za-z]", text):
        raise ValueError("the instruction holds no words")
    return Edit(id=text, prompt=text)


def read_instruction_file(path: str | os.PathLike) -> list[Edit]:
    """The edits of an instruction file (format in the module docstring), in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InstructionFileError(f"instruction file {path} does not exist") from None
    except IsADirectoryError:
        raise InstructionFileError(f"{path} is a folder; --instructions takes a text file") from None
    except UnicodeDecodeError:
        raise InstructionFileError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise InstructionFileError(f"cannot read instruction file {path} ({exc.strerror})") from None
    edits: list[Edit] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith("#"):
            continue
        if not line.strip():
            raise InstructionFileError(
                f"{path}, line {number} is empty: write one edit per line, without blank lines "
                "(start a line with # for a comment)"
            )
        key = _key(line)
        if key in seen:
            raise InstructionFileError(
                f"{path}, line {number} repeats line {seen[key]} ({line.strip()!r}): give each edit once"
            )
        seen[key] = number
        try:
            edit = parse_edit_line(line)
        except ValueError as exc:
            raise InstructionFileError(f"{path}, line {number}: {exc}") from None
        if edit.id.lower() in seen and seen[edit.id.lower()] != number:
            raise InstructionFileError(
                f"{path}, line {number} asks for the same edit as line {seen[edit.id.lower()]} ({edit.id})"
            )
        seen.setdefault(edit.id.lower(), number)
        edits.append(edit)
    if not edits:
        raise InstructionFileError(f"{path} holds no edits: write one instruction per line")
    return edits


# --- phrasing pools -------------------------------------------------------------------------------


def _key(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!")


def dedupe(texts: Iterable[str]) -> list[str]:
    """Texts without repeats (ignoring case and spaces), in first-seen order, stripped, non-empty."""
    seen, kept = set(), []
    for text in texts:
        text = " ".join(str(text).split())
        if text and _key(text) not in seen:
            seen.add(_key(text))
            kept.append(text)
    return kept


def grammar_phrasings(edit: Edit) -> list[str]:
    """Every grammar phrasing of an edit (deduplicated, deterministic order)."""
    if edit.attributes:
        return _world_phrasings(edit.attributes)
    return paraphrase_text(edit.prompt)


def _world_phrasings(attributes: dict[str, Any]) -> list[str]:
    from ip2n.synthetic.world.instructions import compose_instruction, phrasings

    if len(attributes) == 1:
        ((name, value),) = attributes.items()
        return phrasings(name, value, "train")
    import torch

    generator = torch.Generator().manual_seed(0)
    return dedupe(compose_instruction(attributes, generator, split="train") for _ in range(400))


def paraphrase_text(text: str) -> list[str]:
    """Variants of a free instruction: frames × unambiguous pronoun sets × synonyms (module docstring).
    The instruction itself comes first."""
    from ip2n.synthetic.world.instructions import DESCRIPTIVE_FRAMES, FRAMES

    base = _normalise(text)
    descriptive = bool(re.match(r"(he|she|they)\b", base))
    frames = DESCRIPTIVE_FRAMES if descriptive else FRAMES + EXTRA_FRAMES
    cores = dedupe(synonym for pronoun in _pronoun_variants(base) for synonym in _synonym_variants(pronoun))
    return dedupe([" ".join(text.split()), *(frame.format(core) for core in cores for frame in frames)])


def _normalise(text: str) -> str:
    text = " ".join(text.split()).rstrip(".!")
    if len(text) > 1 and text[0].isupper() and not text[1].isupper() and not text.startswith("I "):
        text = text[0].lower() + text[1:]
    return text


def _pronoun_variants(text: str) -> list[str]:
    words = re.findall(r"[A-Za-z']+|[^A-Za-z']+", text)
    lower = [w.lower() for w in words]
    if "her" in lower or "she" in lower or not any(w in _PRONOUN_FORMS for w in lower):
        return [text]
    variants = []
    for choice in range(3):  # he / she / they
        out = []
        subject_swapped = False
        for word in words:
            forms = _PRONOUN_FORMS.get(word.lower())
            if forms is None:
                replacement = word
                if subject_swapped and re.fullmatch(r"[A-Za-z']+", word):
                    replacement = _AGREEMENT.get((word.lower(), choice), word)
                    subject_swapped = False
                out.append(replacement)
                continue
            replacement = forms[choice]
            subject_swapped = word.lower() in ("he", "they")
            out.append(replacement.capitalize() if word[0].isupper() else replacement)
        variants.append("".join(out))
    return variants


def _synonym_variants(text: str) -> list[str]:
    words = re.findall(r"[A-Za-z']+|[^A-Za-z']+", text)
    options = []
    for word in words:
        group = next((g for g in SYNONYMS if word.lower() in g), None)
        options.append(group if group else (word,))
    variants = []
    for combination in itertools.islice(itertools.product(*options), MAX_SYNONYM_VARIANTS):
        variants.append("".join(combination))
    return variants


def pick_phrasings(pool: Sequence[str], seed: int, pair: str, minimum: int, maximum: int) -> list[str]:
    """A pair's instructions: min..max distinct phrasings of the pool, drawn with the pair's seed
    (the whole pool when it is smaller)."""
    rng = random.Random(derive_seed(seed, "phrasings", pair))
    count = rng.randint(minimum, maximum)
    pool = list(pool)
    return pool if len(pool) <= count else rng.sample(pool, count)


# --- a language model as paraphraser ----------------------------------------------------------------

PARAPHRASE_PROMPT = (
    "Rewrite the following instruction for editing a portrait photo in {count} different ways. "
    "Keep the meaning, vary the wording. Write one rewrite per line, without numbering or quotes.\n"
    "Instruction: {instruction}\nRewrites:\n"
)


class LMParaphraser:
    """Paraphrases from an instruction-tuned language model.

    `generate` is a transformers text-generation pipeline (or anything called the same way:
    `generate(prompt, max_new_tokens=..., do_sample=False, return_full_text=False)` returning
    `[{"generated_text": str}]`). Decoding is greedy, so the same model gives the same pool.
    """

    def __init__(self, generate: Callable[..., Any], count: int = 30, max_new_tokens: int = 512) -> None:
        self.generate = generate
        self.count = count
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_model(cls, model: str | os.PathLike, device: str = "cpu", count: int = 30) -> LMParaphraser:
        """Load a local model folder with transformers (never downloads)."""
        path = Path(model)
        if not path.is_dir():
            raise MissingWeightsError(
                f"paraphraser model folder {path} does not exist; pass a local folder of an "
                "instruction-tuned model (transformers format)"
            )
        try:
            from transformers import pipeline
        except ImportError:
            raise ImportError(
                "the paraphraser needs transformers: pip install 'instructpix2nerf[factory]'"
            ) from None
        generate = pipeline(
            "text-generation", model=str(path), device=device, model_kwargs={"local_files_only": True}
        )
        return cls(generate, count=count)

    def __call__(self, instruction: str) -> list[str]:
        output = self.generate(
            PARAPHRASE_PROMPT.format(count=self.count, instruction=instruction),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            return_full_text=False,
        )
        text = output[0]["generated_text"] if output else ""
        if isinstance(text, list):  # chat pipelines return the conversation
            text = text[-1].get("content", "") if text else ""
        lines = []
        for line in str(text).splitlines():
            line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip("\"'“”")
            if 3 <= len(line) <= MAX_INSTRUCTION_CHARACTERS and re.search(r"[A-Za-z]", line):
                lines.append(line)
        return dedupe(lines)[: self.count]


def phrasing_pools(
    edits: Iterable[Edit],
    paraphraser: Callable[[str], list[str]] | None = None,
    minimum: int = 20,
    maximum: int = 30,
) -> dict[str, list[str]]:
    """Edit id → its pool of phrasings: the grammar's, or with a paraphraser the instruction and the
    model's paraphrases topped up by the grammar's to `maximum`."""
    pools: dict[str, list[str]] = {}
    for edit in edits:
        if edit.id in pools:
            continue
        pool = grammar_phrasings(edit)
        if paraphraser is not None:
            pool = dedupe([edit.prompt, *paraphraser(edit.prompt), *pool])[:maximum]
        if len(pool) < minimum:
            logger.warning(
                "only %d distinct phrasings of %r (at least %d wanted); every pair of it gets all of them",
                len(pool),
                edit.id,
                minimum,
            )
        pools[edit.id] = pool
    return pools
