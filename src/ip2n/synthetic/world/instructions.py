"""Instruction phrasings for edits of the synthetic heads, in the spirit of the paper's LLM paraphrases.

An edit is (attribute, target value); a binary attribute set to False is a removal ("take off his
glasses"). A phrasing = a *core* phrase of the edit (imperative, e.g. "give {obj} glasses", or
descriptive, e.g. "{subj} {be} wearing glasses") × a *frame* (casual or formal: "please …",
"could you …?", "I'd like …") × a pronoun set (he / she / they). Several edits are joined with
commas and "and" into one sentence; only the first takes the frame.

Held-out split (for evaluation on wording the model never saw): a core phrase is held out when
crc32 of its template text is divisible by 4 (about a quarter), with at least one phrase of every
edit on each side; frames and pronouns are shared. `phrasings(..., split="heldout")` lists them.
The split holds out *wordings*, not words: every word of a held-out phrase also occurs in some
training phrase (tested). The world's text tower is trained from scratch and cannot know a word it
never saw, where the real model's pretrained CLIP tower would; so the training phrases teach a
broad vocabulary (synonyms, descriptive and imperative forms) and the held-out ones recombine it.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import torch

from ip2n.synthetic.world.attributes import ATTRIBUTE_NAMES, AttributeValue

PRONOUNS = (
    {"subj": "he", "obj": "him", "pos": "his", "be": "is", "has": "has", "wears": "wears"},
    {"subj": "she", "obj": "her", "pos": "her", "be": "is", "has": "has", "wears": "wears"},
    {"subj": "they", "obj": "them", "pos": "their", "be": "are", "has": "have", "wears": "wear"},
)
FRAMES = (
    "{}",
    "please {}",
    "{}, please",
    "could you {}?",
    "can you {}",
    "I'd like you to {}",
    "now {}",
    "kindly {}",
    "I want you to {}",
    "would you mind if we {}",
    "go ahead and {}",
    "let's {}",
)
# Frames that read badly before a descriptive (subject-first) phrase.
DESCRIPTIVE_FRAMES = ("{}", "{}, please", "I'd like it if {}", "make it so that {}", "ideally {}", "{} now")

# (attribute, value) → core phrases. "{subj} …" phrases are descriptive.
CORE: dict[tuple[str, AttributeValue], tuple[str, ...]] = {
    ("eyeglasses", True): (
        "give {obj} glasses",
        "add eyeglasses",
        "put glasses on {obj}",
        "make {obj} wear spectacles",
        "add a pair of glasses to {pos} face",
        "{subj} {be} wearing glasses",
        "let {obj} wear eyeglasses",
        "give {obj} a pair of spectacles",
        "{subj} {wears} glasses",
        "put spectacles on {pos} face",
        "add glasses to {pos} face",
        "let {obj} have eyeglasses",
    ),
    ("eyeglasses", False): (
        "take off {pos} glasses",
        "remove the eyeglasses",
        "get rid of {pos} spectacles",
        "{subj} {be} not wearing glasses",
        "make {obj} glasses-free",
        "remove {pos} glasses",
        "take the glasses off {pos} face",
        "remove {pos} spectacles",
        "{subj} {wears} no glasses",
        "lose the glasses",
        "take away {pos} eyeglasses",
    ),
    ("smile", True): (
        "make {obj} smile",
        "add a smile",
        "give {obj} a smile",
        "{subj} {be} smiling",
        "make {obj} look happy",
        "put a smile on {pos} face",
        "make {obj} grin",
        "give {obj} a big grin",
        "{subj} {be} grinning",
        "{subj} {has} a big smile",
        "let {obj} smile",
        "turn {pos} expression into a smile",
        "make {pos} expression cheerful",
    ),
    ("smile", False): (
        "remove the smile",
        "make {obj} stop smiling",
        "give {obj} a neutral expression",
        "{subj} {be} not smiling",
        "make {pos} expression serious",
        "wipe the smile off {pos} face",
        "wipe away {pos} smile",
        "{subj} {has} a neutral face",
        "stop {obj} from smiling",
        "make {obj} look serious",
        "remove {pos} grin",
        "wipe the grin off {pos} face",
    ),
    ("mouth_open", True): (
        "open {pos} mouth",
        "make {obj} open {pos} mouth",
        "{subj} {has} {pos} mouth open",
        "part {pos} lips",
        "show {obj} with an open mouth",
        "let {pos} mouth hang open",
        "{subj} {has} {pos} lips parted",
        "let {obj} open {pos} mouth",
        "make {pos} mouth open",
        "open {pos} lips",
    ),
    ("mouth_open", False): (
        "close {pos} mouth",
        "make {obj} shut {pos} mouth",
        "{subj} {has} {pos} mouth closed",
        "press {pos} lips together",
        "show {obj} with a closed mouth",
        "shut {pos} mouth",
        "keep {pos} lips shut",
        "make {pos} mouth closed",
        "{subj} {has} {pos} lips closed",
        "close {pos} lips",
    ),
    ("bangs", True): (
        "give {obj} bangs",
        "add bangs",
        "add a fringe",
        "cut bangs into {pos} hair",
        "cut {pos} hair into bangs",
        "{subj} {has} bangs",
        "let {pos} hair fall over {pos} forehead",
        "cut a fringe into {pos} hair",
        "give {obj} a fringe",
        "{subj} {has} a fringe",
        "add bangs to {pos} hairstyle",
        "cover {pos} forehead with bangs",
    ),
    ("bangs", False): (
        "remove the bangs",
        "take away {pos} fringe",
        "brush {pos} bangs back",
        "{subj} {has} no bangs",
        "clear the hair off {pos} forehead",
        "get rid of {pos} bangs",
        "cut off {pos} bangs",
        "{subj} {has} no fringe",
        "remove {pos} fringe",
        "leave {pos} forehead bare",
        "comb {pos} bangs away",
        "cut off {pos} fringe",
    ),
    ("bald", True): (
        "make {obj} bald",
        "shave {pos} head",
        "remove all {pos} hair",
        "{subj} {be} bald",
        "give {obj} a bald head",
        "take away {pos} hair completely",
        "{subj} {has} no hair",
        "make {pos} head bald",
        "shave off all {pos} hair",
        "give {obj} a shaved head",
        "take off all {pos} hair",
    ),
    ("bald", False): (
        "give {obj} hair",
        "add hair to {pos} head",
        "let {pos} hair grow back",
        "{subj} {has} a full head of hair",
        "cover {pos} bald head with hair",
        "make {obj} no longer bald",
        "give {obj} a full head of hair",
        "add hair",
        "{subj} {be} not bald",
        "make {obj} have hair again",
        "grow {pos} hair back",
        "give {obj} some hair",
        "give {obj} back {pos} hair",
    ),
    ("beard", True): (
        "give {obj} a beard",
        "add a beard",
        "let {obj} grow a beard",
        "{subj} {has} a full beard",
        "put a thick beard on {pos} face",
        "make {obj} bearded",
        "add a beard to {pos} face",
        "{subj} {be} bearded",
        "grow a beard on {obj}",
        "give {obj} a full beard",
    ),
    ("beard", False): (
        "shave off {pos} beard",
        "remove the beard",
        "get rid of {pos} beard",
        "{subj} {has} no beard",
        "make {obj} clean-shaven",
        "take away {pos} beard",
        "remove {pos} beard",
        "{subj} {be} clean-shaven",
        "shave {pos} face",
        "make {obj} beardless",
        "shave {pos} cheeks",
    ),
    ("mustache", True): (
        "give {obj} a mustache",
        "add a moustache",
        "put a mustache above {pos} lip",
        "{subj} {has} a mustache",
        "let {obj} grow a moustache",
        "add a mustache to {pos} face",
        "give {obj} a moustache",
        "{subj} {has} a moustache",
        "put a moustache on {obj}",
    ),
    ("mustache", False): (
        "shave off {pos} mustache",
        "remove the moustache",
        "get rid of {pos} mustache",
        "{subj} {has} no mustache",
        "take the mustache off {pos} face",
        "remove {pos} moustache",
        "{subj} {has} no moustache",
        "shave {pos} upper lip",
        "take off {pos} mustache",
    ),
    ("goatee", True): (
        "give {obj} a goatee",
        "add a goatee",
        "put a small beard on {pos} chin",
        "{subj} {has} a goatee",
        "let {obj} grow a goatee",
        "add a goatee to {pos} chin",
        "give {obj} a chin beard",
        "put a goatee on {pos} chin",
        "{subj} {has} a small beard on {pos} chin",
    ),
    ("goatee", False): (
        "shave off {pos} goatee",
        "remove the goatee",
        "get rid of the hair on {pos} chin",
        "{subj} {has} no goatee",
        "take away {pos} goatee",
        "remove {pos} goatee",
        "shave {pos} chin",
        "take the goatee off {pos} chin",
        "{subj} {has} a clean chin",
    ),
    ("bushy_eyebrows", True): (
        "give {obj} bushy eyebrows",
        "make {pos} eyebrows thicker",
        "thicken {pos} brows",
        "{subj} {has} bushy eyebrows",
        "make {pos} eyebrows big and bushy",
        "give {obj} thick eyebrows",
        "make {pos} brows bushy",
        "{subj} {has} big bushy eyebrows",
        "thicken {pos} eyebrows",
        "make {pos} brows big",
        "make {pos} eyebrows big",
        "give {obj} big brows",
    ),
    ("bushy_eyebrows", False): (
        "thin out {pos} eyebrows",
        "make {pos} eyebrows thinner",
        "trim {pos} bushy brows",
        "{subj} {has} thin eyebrows",
        "give {obj} neat, thin eyebrows",
        "trim {pos} eyebrows",
        "make {pos} brows thin",
        "{subj} {has} neat eyebrows",
        "remove the bushiness from {pos} brows",
        "make {pos} eyebrows neat and thin",
        "trim {pos} bushy eyebrows",
        "tame {pos} bushy brows",
    ),
    ("big_nose", True): (
        "give {obj} a big nose",
        "make {pos} nose bigger",
        "enlarge {pos} nose",
        "{subj} {has} a large nose",
        "make {pos} nose huge",
        "make {pos} nose large",
        "{subj} {has} a big nose",
        "increase the size of {pos} nose",
        "{subj} {has} an enlarged nose",
        "make {pos} nose larger",
        "enlarge {pos} nose a lot",
    ),
    ("big_nose", False): (
        "make {pos} nose smaller",
        "give {obj} a small nose",
        "shrink {pos} nose",
        "{subj} {has} a small nose",
        "reduce the size of {pos} nose",
        "reduce {pos} big nose",
        "make {pos} nose small",
        "decrease the size of {pos} nose",
        "{subj} {has} a tiny nose",
        "give {obj} a smaller nose",
    ),
    ("chubby", True): (
        "make {obj} chubby",
        "make {pos} face rounder",
        "give {obj} chubby cheeks",
        "{subj} {be} chubby",
        "add some weight to {pos} face",
        "make {obj} look plump",
        "give {obj} a plump face",
        "make {obj} fatter",
        "{subj} {has} a round face",
        "make {pos} cheeks fuller",
        "give {obj} a fuller face",
    ),
    ("chubby", False): (
        "make {obj} slimmer",
        "make {pos} face thinner",
        "slim down {pos} face",
        "{subj} {be} slim",
        "remove the chubbiness",
        "make {obj} look lean",
        "give {obj} a thinner face",
        "{subj} {has} a thin face",
        "make {obj} lose weight",
        "make {pos} cheeks thinner",
        "make {obj} less chubby",
        "make {obj} thin",
        "make {pos} face look thin",
        "give {obj} a slim face",
    ),
    ("pale_skin", True): (
        "make {pos} skin pale",
        "give {obj} pale skin",
        "lighten {pos} skin a lot",
        "{subj} {has} pale skin",
        "make {obj} look pale",
        "drain the colour from {pos} skin",
        "{subj} {be} pale",
        "give {obj} a pale complexion",
        "turn {pos} skin pale",
        "give {obj} very pale skin",
        "make {pos} face pale",
    ),
    ("pale_skin", False): (
        "give {pos} skin its natural colour",
        "make {obj} less pale",
        "remove the paleness",
        "{subj} {has} a healthy skin tone",
        "bring colour back to {pos} skin",
        "make {pos} skin less pale",
        "give {obj} a healthy complexion",
        "{subj} {be} not pale",
        "add colour to {pos} skin",
        "make {pos} skin tone natural",
    ),
    ("age", "old"): (
        "make {obj} old",
        "make {obj} look older",
        "age {obj}",
        "{subj} {be} an old person",
        "add years to {pos} face",
        "turn {obj} into a senior",
        "{subj} {be} older",
        "make {obj} an older person",
        "make {obj} look years older",
        "turn {obj} into an old person",
        "{subj} {be} elderly",
        "add a few years to {pos} face",
        "add years to {obj}",
    ),
    ("age", "young"): (
        "make {obj} young",
        "make {obj} look younger",
        "rejuvenate {obj}",
        "{subj} {be} young",
        "take years off {pos} face",
        "turn back the clock on {pos} face",
        "make {obj} a young person",
        "{subj} {be} younger",
        "make {pos} face youthful",
        "remove years from {pos} face",
        "make {obj} a young adult again",
    ),
    ("style", "bronze_statue"): (
        "turn {obj} into a bronze statue",
        "make {obj} a bronze sculpture",
        "cast {obj} in bronze",
        "{subj} {be} a bronze statue",
        "make {obj} look like bronze",
        "cast a bronze statue of {obj}",
        "make {obj} out of bronze",
        "turn {obj} into bronze",
        "{subj} {be} made of bronze",
    ),
    ("style", "cartoon"): (
        "turn {obj} into a cartoon",
        "make {obj} a cartoon character",
        "draw {obj} in cartoon style",
        "{subj} {be} a cartoon",
        "make {obj} look animated",
        "make {obj} a cartoon",
        "turn {obj} into an animated character",
        "draw {obj} as a cartoon",
        "show {obj} as a cartoon",
    ),
    ("style", "marble"): (
        "turn {obj} into a marble statue",
        "make {obj} look carved from marble",
        "sculpt {obj} in marble",
        "{subj} {be} a marble bust",
        "make {obj} out of white marble",
        "turn {obj} into a marble bust",
        "{subj} {be} made of marble",
        "carve {obj} from marble",
        "make {obj} a marble sculpture",
    ),
    ("style", "none"): (
        "make {obj} a real person again",
        "turn {obj} back into a real person",
        "make {obj} photorealistic",
        "{subj} {be} a real human",
        "remove the artistic style",
        "make {obj} human again",
        "{subj} {be} a real person",
        "turn {obj} into a human being",
        "render {obj} as a photo",
        "remove the statue look",
        "make {obj} look real",
    ),
}
HAIR_CORE = (
    "make {pos} hair {color}",
    "dye {pos} hair {color}",
    "give {obj} {color} hair",
    "turn {pos} hair {color}",
    "change {pos} hair colour to {color}",
    "{subj} {has} {color} hair",
    "color {pos} hair {color}",
    "{subj} {has} hair that is {color}",
    "paint {pos} hair {color}",
    "give {pos} hair a {color} colour",
)
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
