"""What the built-in model's instructions can ask for: the world's attributes and the words that name them.

The world's text tower was trained from scratch on the phrasings of `instructions.py` (training
split) and reads nothing else: it has never seen a word outside them, and it maps every sentence,
whatever it says, onto some change of the world's attributes. An instruction such as "make her look
like the Mona Lisa" therefore produces an unrelated edit (a beard, say) instead of none.

The tower's own read-out of attributes (`text_training.EditReader`) is not shipped, and it would not
help: trained only on sentences that ask for edits, it answers for any sentence too. So the check is
a conservative word test: an instruction must contain at least one *keyword* of some attribute —
a word that, in the world's phrasings, names that attribute's change (`KEYWORDS`). Generic words of
the phrasings ("make", "give", "look", "like", "face", "big") are not keywords: they occur in the
phrasings of many edits and in requests the world knows nothing of.

Limits, by design:

- It is necessary, not sufficient. "make her hair long" names hair and passes, though the world has
  no hair length; "make her smile and look like the Mona Lisa" passes on "smile". What the model then
  does is what its text tower reads into the sentence.
- It knows only the world's words. Synonyms the phrasings never use ("specs", "shades", "grey",
  "beardy") are refused although a person would understand them; so is every other language. The
  text tower would not understand them either: it never saw them.
- Words are matched after lowercasing, with plain English endings removed ("smiles", "smiled" →
  "smile"; "glass" ↔ "glasses"), not by meaning.

Tests check that every keyword occurs in the training phrasings of its attribute, and that every
phrasing of every edit, training and held-out, contains a keyword of its own attribute.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ip2n.synthetic.world.attributes import ATTRIBUTE_NAMES, CATEGORICAL_ATTRIBUTES

# attribute → words that name its change in the world's phrasings (a word may serve several).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "eyeglasses": ("glasses", "eyeglasses", "spectacles"),
    "smile": ("smile", "smiling", "grin", "grinning", "happy", "cheerful", "neutral", "serious"),
    "mouth_open": ("mouth", "lips", "open", "close", "closed", "shut"),
    "bangs": ("bangs", "fringe", "forehead", "hair"),
    "bald": ("bald", "hair", "shave", "shaved"),
    "beard": ("beard", "bearded", "beardless", "shaven", "shave"),
    "mustache": ("mustache", "moustache", "shave"),
    "goatee": ("goatee", "chin", "beard"),
    "bushy_eyebrows": ("eyebrows", "brows", "bushy", "bushiness"),
    "big_nose": ("nose",),
    "chubby": (
        "chubby",
        "chubbiness",
        "plump",
        "fatter",
        "fuller",
        "round",
        "rounder",
        "cheeks",
        "weight",
        "slim",
        "slimmer",
        "lean",
        "thin",
        "thinner",
    ),
    "pale_skin": ("pale", "paleness", "skin", "complexion"),
    "hair_color": (*CATEGORICAL_ATTRIBUTES["hair_color"], "hair", "dye", "colour", "color"),
    "age": (
        "old",
        "older",
        "elderly",
        "senior",
        "age",
        "years",
        "young",
        "younger",
        "youthful",
        "rejuvenate",
        "clock",
    ),
    "style": (
        "bronze",
        "marble",
        "statue",
        "sculpture",
        "sculpt",
        "carve",
        "carved",
        "bust",
        "cartoon",
        "animated",
        "artistic",
        "real",
        "human",
        "photo",
        "photorealistic",
    ),
}
assert set(KEYWORDS) == set(ATTRIBUTE_NAMES), "every attribute needs keywords"

# Plain English endings removed before matching (longest first), and added back to match a keyword.
_ENDINGS = ("ing", "es", "ed", "s")


def words(text: str) -> list[str]:
    """The lowercase words of `text` (letters only; "clean-shaven" → "clean", "shaven")."""
    return re.findall(r"[a-z]+", text.lower().replace("’", "'").replace("'s", ""))


def _forms(word: str) -> set[str]:
    """`word` and its forms without / with a plain ending: smiles → smile, glass → glasses."""
    forms = {word}
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) > len(ending) + 2:
            stem = word[: -len(ending)]
            forms |= {stem, stem + "e"}
        forms.add(word + ending)
    return forms


_KEYWORD_ATTRIBUTES: dict[str, tuple[str, ...]] = {}
for _attribute, _keywords in KEYWORDS.items():
    for _keyword in _keywords:
        _KEYWORD_ATTRIBUTES[_keyword] = (*_KEYWORD_ATTRIBUTES.get(_keyword, ()), _attribute)


def keywords_in(text: str) -> dict[str, tuple[str, ...]]:
    """The keywords `text` contains → the attributes each names (empty: it names no change the
    world knows)."""
    found: dict[str, tuple[str, ...]] = {}
    for word in words(text):
        for form in _forms(word):
            if form in _KEYWORD_ATTRIBUTES:
                found[form] = _KEYWORD_ATTRIBUTES[form]
    return found


def named_attributes(text: str) -> tuple[str, ...]:
    """The attributes whose keywords `text` contains, in the world's order."""
    named = {attribute for attributes in keywords_in(text).values() for attribute in attributes}
    return tuple(name for name in ATTRIBUTE_NAMES if name in named)


def unknown_instructions(instructions: Iterable[str]) -> list[str]:
    """The instructions that name no attribute of the world (each is checked on its own)."""
    return [text for text in instructions if not named_attributes(text)]


def example_wordings(attribute: str, count: int = 2) -> list[str]:
    """`count` example instructions for an attribute, from its training phrasings ("give him glasses")."""
    from ip2n.synthetic.world.instructions import CORE, PRONOUNS, core_phrases

    values = [value for (name, value) in CORE if name == attribute]
    examples = []
    for number, value in enumerate(values[:count]):
        template = core_phrases(attribute, value, "train")[0]
        examples.append(template.format(**PRONOUNS[number % 2]))
    return examples


def attribute_values(attribute: str) -> Sequence[str]:
    """What an attribute can be set to, in words: "on / off" or its categorical values."""
    if attribute in CATEGORICAL_ATTRIBUTES:
        return CATEGORICAL_ATTRIBUTES[attribute]
    return ("on", "off")


def summary(limit: int | None = None) -> str:
    """One line per attribute: its values, keywords and example wordings (`ip2n models`, messages)."""
    lines = []
    for attribute in ATTRIBUTE_NAMES:
        keywords = KEYWORDS[attribute] if limit is None else KEYWORDS[attribute][:limit]
        examples = "; ".join(f'"{example}"' for example in example_wordings(attribute))
        lines.append(
            f"{attribute} ({' / '.join(attribute_values(attribute))}): words {', '.join(keywords)}"
            f"{', ...' if limit is not None and len(KEYWORDS[attribute]) > limit else ''}; e.g. {examples}"
        )
    return "\n".join(lines)
