"""Instruction phrasings for edits of the synthetic heads, in the spirit of the paper's LLM paraphrases.

An edit is (attribute, target value); a binary attribute set to False is a removal ("take off his
glasses"). A phrasing = a *core* phrase of the edit (imperative, e.g. "give {obj} glasses", or
descriptive, e.g. "{subj} {be} wearing glasses") × a *frame* (casual or formal: "please …",
"could you …?", "I'd like …") × a pronoun set (he / she / they). Several edits are joined with
commas and "and" into one sentence; only the first takes the frame.

Held-out split (for evaluation on wording the model never saw): a core phrase is held out when
crc32 of its template text is divisible by 4 (about a quarter), with at least one phrase of every
edit on each side; frames and pronouns are shared. `phrasings(..., split="heldout")` lists them.
"""

from __future__ import annotations

import zlib
from typing import Mapping

import torch

from ip2n.synthetic.attributes import ATTRIBUTE_NAMES, AttributeValue

PRONOUNS = (
    {"subj": "he", "obj": "him", "pos": "his", "be": "is", "has": "has", "wears": "wears"},
    {"subj": "she", "obj": "her", "pos": "her", "be": "is", "has": "has", "wears": "wears"},
    {"subj": "they", "obj": "them", "pos": "their", "be": "are", "has": "have", "wears": "wear"},
)
FRAMES = (
    "{}", "please {}", "{}, please", "could you {}?", "can you {}", "I'd like you to {}", "now {}",
    "kindly {}", "I want you to {}", "would you mind if we {}", "go ahead and {}", "let's {}",
)
# Frames that read badly before a descriptive (subject-first) phrase.
DESCRIPTIVE_FRAMES = ("{}", "{}, please", "I'd like it if {}", "make it so that {}", "ideally {}", "{} now")

# (attribute, value) → core phrases. "{subj} …" phrases are descriptive.
CORE: dict[tuple[str, AttributeValue], tuple[str, ...]] = {
    ("eyeglasses", True): ("give {obj} glasses", "add eyeglasses", "put glasses on {obj}", "make {obj} wear spectacles",
                           "add a pair of glasses to {pos} face", "{subj} {be} wearing glasses", "let {obj} wear eyeglasses"),
    ("eyeglasses", False): ("take off {pos} glasses", "remove the eyeglasses", "get rid of {pos} spectacles",
                            "{subj} {be} not wearing glasses", "make {obj} glasses-free", "remove {pos} glasses"),
    ("smile", True): ("make {obj} smile", "add a smile", "give {obj} a smile", "{subj} {be} smiling",
                      "make {obj} look happy", "put a smile on {pos} face"),
    ("smile", False): ("remove the smile", "make {obj} stop smiling", "give {obj} a neutral expression",
                       "{subj} {be} not smiling", "make {pos} expression serious", "wipe the smile off {pos} face"),
    ("mouth_open", True): ("open {pos} mouth", "make {obj} open {pos} mouth", "{subj} {has} {pos} mouth open",
                           "part {pos} lips", "show {obj} with an open mouth", "let {pos} mouth hang open"),
    ("mouth_open", False): ("close {pos} mouth", "make {obj} shut {pos} mouth", "{subj} {has} {pos} mouth closed",
                            "press {pos} lips together", "show {obj} with a closed mouth"),
    ("bangs", True): ("give {obj} bangs", "add bangs", "add a fringe", "cut bangs into {pos} hair",
                      "{subj} {has} bangs", "let {pos} hair fall over {pos} forehead"),
    ("bangs", False): ("remove the bangs", "take away {pos} fringe", "brush {pos} bangs back", "{subj} {has} no bangs",
                       "clear the hair off {pos} forehead", "get rid of {pos} bangs"),
    ("bald", True): ("make {obj} bald", "shave {pos} head", "remove all {pos} hair", "{subj} {be} bald",
                     "give {obj} a bald head", "take away {pos} hair completely"),
    ("bald", False): ("give {obj} hair", "add hair to {pos} head", "let {pos} hair grow back", "{subj} {has} a full head of hair",
                      "cover {pos} bald head with hair", "make {obj} no longer bald"),
    ("beard", True): ("give {obj} a beard", "add a beard", "let {obj} grow a beard", "{subj} {has} a full beard",
                      "put a thick beard on {pos} face", "make {obj} bearded"),
    ("beard", False): ("shave off {pos} beard", "remove the beard", "get rid of {pos} beard", "{subj} {has} no beard",
                       "make {obj} clean-shaven", "take away {pos} beard"),
    ("mustache", True): ("give {obj} a mustache", "add a moustache", "put a mustache above {pos} lip",
                         "{subj} {has} a mustache", "let {obj} grow a moustache"),
    ("mustache", False): ("shave off {pos} mustache", "remove the moustache", "get rid of {pos} mustache",
                          "{subj} {has} no mustache", "take the mustache off {pos} face"),
    ("goatee", True): ("give {obj} a goatee", "add a goatee", "put a small beard on {pos} chin", "{subj} {has} a goatee",
                       "let {obj} grow a goatee"),
    ("goatee", False): ("shave off {pos} goatee", "remove the goatee", "get rid of the hair on {pos} chin",
                        "{subj} {has} no goatee", "take away {pos} goatee"),
    ("bushy_eyebrows", True): ("give {obj} bushy eyebrows", "make {pos} eyebrows thicker", "thicken {pos} brows",
                               "{subj} {has} bushy eyebrows", "make {pos} eyebrows big and bushy"),
    ("bushy_eyebrows", False): ("thin out {pos} eyebrows", "make {pos} eyebrows thinner", "trim {pos} bushy brows",
                                "{subj} {has} thin eyebrows", "give {obj} neat, thin eyebrows"),
    ("big_nose", True): ("give {obj} a big nose", "make {pos} nose bigger", "enlarge {pos} nose", "{subj} {has} a large nose",
                         "make {pos} nose huge"),
    ("big_nose", False): ("make {pos} nose smaller", "give {obj} a small nose", "shrink {pos} nose",
                          "{subj} {has} a small nose", "reduce the size of {pos} nose"),
    ("chubby", True): ("make {obj} chubby", "make {pos} face rounder", "give {obj} chubby cheeks", "{subj} {be} chubby",
                       "add some weight to {pos} face", "make {obj} look plump"),
    ("chubby", False): ("make {obj} slimmer", "make {pos} face thinner", "slim down {pos} face", "{subj} {be} slim",
                        "remove the chubbiness", "make {obj} look lean"),
    ("pale_skin", True): ("make {pos} skin pale", "give {obj} pale skin", "lighten {pos} skin a lot", "{subj} {has} pale skin",
                          "make {obj} look pale", "drain the colour from {pos} skin"),
    ("pale_skin", False): ("give {pos} skin its natural colour", "make {obj} less pale", "remove the paleness",
                           "{subj} {has} a healthy skin tone", "bring colour back to {pos} skin"),
    ("age", "old"): ("make {obj} old", "make {obj} look older", "age {obj}", "{subj} {be} an old person",
                     "add years to {pos} face", "turn {obj} into a senior"),
    ("age", "young"): ("make {obj} young", "make {obj} look younger", "rejuvenate {obj}", "{subj} {be} young",
                       "take years off {pos} face", "turn back the clock on {pos} face"),
    ("style", "bronze_statue"): ("turn {obj} into a bronze statue", "make {obj} a bronze sculpture", "cast {obj} in bronze",
                                 "{subj} {be} a bronze statue", "make {obj} look like bronze"),
    ("style", "cartoon"): ("turn {obj} into a cartoon", "make {obj} a cartoon character", "draw {obj} in cartoon style",
                           "{subj} {be} a cartoon", "make {obj} look animated"),
    ("style", "marble"): ("turn {obj} into a marble statue", "make {obj} look carved from marble", "sculpt {obj} in marble",
                          "{subj} {be} a marble bust", "make {obj} out of white marble"),
    ("style", "none"): ("make {obj} a real person again", "turn {obj} back into a real person", "make {obj} photorealistic",
                        "{subj} {be} a real human", "remove the artistic style"),
}
HAIR_CORE = ("make {pos} hair {color}", "dye {pos} hair {color}", "give {obj} {color} hair", "turn {pos} hair {color}",
             "change {pos} hair colour to {color}", "{subj} {has} {color} hair", "color {pos} hair {color}")
for _color in ("black", "brown", "blond", "gray", "red", "pink", "blue"):
    CORE[("hair_color", _color)] = tuple(t.replace("{color}", _color) for t in HAIR_CORE)


def _is_descriptive(template: str) -> bool:
    return template.startswith("{subj}")


def _held_out(template: str) -> bool:
    return zlib.crc32(template.encode("utf-8")) % 4 == 0


def core_phrases(attribute: str, value: AttributeValue, split: str = "all") -> tuple[str, ...]:
    """The core templates of an edit in `split` ("train", "heldout" or "all")."""
    if (attribute, value) not in CORE:
        raise ValueError(f"no phrasings for {attribute}={value!r}; attributes: {', '.join(ATTRIBUTE_NAMES)}")
    templates = CORE[(attribute, value)]
    held = [t for t in templates if _held_out(t)] or [templates[-1]]
    if len(held) == len(templates):
        held = held[1:]
    if split == "all":
        return templates
    if split == "heldout":
        return tuple(held)
    if split == "train":
        return tuple(t for t in templates if t not in held)
    raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")


def _fill(template: str, pronoun: Mapping[str, str]) -> str:
    return template.format(**pronoun)


def phrasings(attribute: str, value: AttributeValue, split: str = "all") -> list[str]:
    """Every distinct single-edit sentence (all frames × pronouns) of an edit in `split`, sorted."""
    sentences = set()
    for template in core_phrases(attribute, value, split):
        frames = DESCRIPTIVE_FRAMES if _is_descriptive(template) else FRAMES
        for pronoun in PRONOUNS:
            for frame in frames:
                sentences.add(frame.format(_fill(template, pronoun)))
    return sorted(sentences)


def compose_instruction(
    edits: Mapping[str, AttributeValue], generator: torch.Generator | None = None, split: str = "train"
) -> str:
    """One sentence asking for all `edits` (attribute → target value), random wording from `split`.

    The pronoun is shared by the whole sentence; edits are joined as "a, b and c".
    """
    if not edits:
        raise ValueError("an instruction needs at least one edit")

    def pick(options) -> int:
        return int(torch.randint(len(options), (1,), generator=generator))

    pronoun = PRONOUNS[pick(PRONOUNS)]
    order = torch.randperm(len(edits), generator=generator).tolist()
    items = list(edits.items())
    chosen = []
    for index in order:
        attribute, value = items[index]
        templates = core_phrases(attribute, value, split)
        chosen.append(templates[pick(templates)])
    clauses = [_fill(template, pronoun) for template in chosen]
    frames = DESCRIPTIVE_FRAMES if _is_descriptive(chosen[0]) else FRAMES
    joined = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return frames[pick(frames)].format(joined)
