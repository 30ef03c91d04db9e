"""Synthetic prompt defects: the broken prompts of a scraped RL set, made from good ones.

Why this module exists: a quality probe needs broken examples, and a user who
brings only a prompt set has none labelled. Each defect function takes one
prompt's statement and a seeded `random.Random`, and returns a broken version
of it, or None when the defect cannot apply to that text (nothing to cut, no
number to corrupt): a caller then skips it and says so, and never labels an
unchanged prompt as broken. They edit text only, so they work on any prompt set
(math word problems, competition problems, chat-formatted prompts);
`shared_template` finds the wrapper every prompt of a set shares (a chat
template, ``"Q: ...\\nA:"``), so a defect breaks the statement and leaves the
wrapper whole, as a real broken prompt of that set would.

The task pools of `saerl_zoo.tasks` make their truncations and near-duplicates
with these same functions.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "NOT_IN_TEXT",
    "TEXT_DEFECTS",
    "Template",
    "corrupt_numbers",
    "near_duplicate",
    "off_topic",
    "shared_template",
    "truncate",
]

# Defect kinds a prompt's text cannot reveal (the reference answer is wrong, the
# statement is fine): no text probe can find them, so their figures are kept
# apart from the others instead of averaged in.
NOT_IN_TEXT = frozenset({"wrong_answer"})
# A statement with fewer words and fewer than two digits is too short to cut and
# still read as a fragment of something longer.
MIN_WORDS_TO_CUT = 4


def truncate(text: str, rng: random.Random) -> str | None:
    """The statement cut off mid-way, so it can no longer be solved.

    With two or more digits the cut falls inside the span holding the numbers
    (after the first digit, before the last one): what is left has lost at
    least part of its last number, whatever the wording. Otherwise the cut is
    at the middle character (a scraper's cut falls mid-word as often as not).
    None for a statement of fewer than `MIN_WORDS_TO_CUT` words without two digits.
    """
    digits = [m.start() for m in re.finditer(r"\d", text)]
    if len(digits) >= 2:
        return text[: rng.randint(digits[0] + 1, digits[-1])].rstrip()
    if len(text.split()) < MIN_WORDS_TO_CUT:
        return None
    return text[: len(text) // 2].rstrip()


_NEAR_DUPLICATE_EDITS: tuple[Callable[[str], str], ...] = (
    lambda q: q.replace(" ", "  ", 1) if " " in q else q + " ",
    lambda q: q[:-1].rstrip() if q[-1] in ".?=" else q + ".",
    lambda q: q + " ",
    lambda q: q.lower() if q != q.lower() else "  " + q,
)


def near_duplicate(text: str, rng: random.Random) -> str | None:
    """The same statement with one tiny surface edit (a doubled space, the final
    punctuation dropped or added, a trailing space, lower case): the copies
    that deduplication by exact text misses. Every edit changes the text.
    None for a blank statement."""
    if not text.strip():
        return None
    return rng.choice(_NEAR_DUPLICATE_EDITS)(text)


# Generic off-topic text of the kind scraped sets hold: page furniture, chatter,
# listings, logs. Written for this module (nothing is downloaded), and none of
# it is a problem statement.
OFF_TOPIC_LINES = (
    "Sign in to see more results.",
    "We use cookies to improve your experience on our site.",
    "Free shipping on orders over $50, today only!",
    "Reply to this thread.",
    "Last edited by moderator; 3 replies.",
    "Home > Blog > Travel > Summer trips",
    "Don't forget to like and subscribe.",
    "The meeting has been moved to Thursday afternoon.",
    "Preheat the oven and grease a large baking tray.",
    "Stir in the onions and cook until soft.",
    "Our team will get back to you within two business days.",
    "Tickets are available at the box office.",
    "The museum is closed on public holidays.",
    "Lovely weather for a walk along the river.",
    "Thanks so much, this worked for me!",
    "Anyone know a good place for brunch downtown?",
    "Warning: deprecated function called in module loader.",
    "INFO server started on port 8080",
    "Traceback (most recent call last):",
    "import os, sys",
    "</td></tr></table>",
    "Copyright (c) all rights reserved.",
    "Terms of service | Privacy policy | Contact us",
    "Loading comments...",
    "Size M, colour navy, 100% cotton.",
    "Delivery expected within 3 to 5 days.",
    "The home side scored late to win the match.",
    "Rain is expected over the weekend in the north.",
    "She spent the summer painting old barns.",
    "Please leave your shoes at the door.",
    "This video is unavailable in your country.",
    "Click the link below to reset your password.",
    "Unsubscribe from this mailing list at any time.",
    "Photo credit: staff photographer.",
    "Keep refrigerated after opening.",
    "The train to the coast leaves every hour.",
    "Best regards, the support team",
    "lol same here, happened to me yesterday",
    "Chapter one: the old lighthouse.",
    "Add to cart",
)


def off_topic(text: str, rng: random.Random) -> str:
    """Off-topic text in place of the statement: lines of `OFF_TOPIC_LINES`,
    drawn until about as long as the statement (so length alone does not give
    it away). Always applies."""
    lines = [rng.choice(OFF_TOPIC_LINES)]
    while len(" ".join(lines)) < 0.8 * len(text.strip()):
        lines.append(rng.choice(OFF_TOPIC_LINES))
    return " ".join(lines)


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_DIVISOR = re.compile(r"/\s*(\d+)")
# Values a generator or a scraper leaves where a number should be.
PLACEHOLDERS = ("{n}", "{x}", "[NUM]", "<number>", "___", "NaN", "None", "??")
# Digits an OCR pass reads as letters.
_LOOKALIKE = str.maketrans("0125", "OlZS")


def _replace(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def corrupt_numbers(text: str, rng: random.Random) -> str | None:
    """One number of the statement corrupted so the problem cannot be solved or
    contradicts itself: a template placeholder left unfilled (``{n}``, ``NaN``),
    digits misread as letters (``1O2``), a divisor set to zero (``8/0``), or a
    second, conflicting value (``146 (or 151)``). The kind is drawn among those
    that apply. None for a statement without numbers."""
    numbers = list(_NUMBER.finditer(text))
    if not numbers:
        return None
    misreadable = [m for m in numbers if set(m.group()) & set("0125")]
    divisors = [m for m in _DIVISOR.finditer(text) if m.group(1).strip("0")]
    integers = [m for m in numbers if m.group().isdigit()]
    ways = ["placeholder", *(["misread"] if misreadable else []), *(["zero_divisor"] if divisors else []),
            *(["conflicting"] if integers else [])]
    way = rng.choice(ways)
    if way == "placeholder":
        m = rng.choice(numbers)
        return _replace(text, m.start(), m.end(), rng.choice(PLACEHOLDERS))
    if way == "misread":
        m = rng.choice(misreadable)
        return _replace(text, m.start(), m.end(), m.group().translate(_LOOKALIKE))
    if way == "zero_divisor":
        m = rng.choice(divisors)
        return _replace(text, m.start(1), m.end(1), "0")
    m = rng.choice(integers)
    return _replace(text, m.start(), m.end(), f"{m.group()} (or {int(m.group()) + rng.randint(1, 9)})")


# Every defect that breaks a prompt's text, by the kind name written in label files.
TEXT_DEFECTS: dict[str, Callable[[str, random.Random], str | None]] = {
    "truncated": truncate,
    "off_topic": off_topic,
    "near_duplicate": near_duplicate,
    "corrupted_numbers": corrupt_numbers,
}


@dataclass(frozen=True)
class Template:
    """The text every prompt of a set starts and ends with (a chat template's
    turns, ``"Q: "`` and ``"\\nA:"``): defects edit what lies between."""

    prefix: str = ""
    suffix: str = ""

    def statement(self, text: str) -> str:
        """The part of `text` between the prefix and the suffix."""
        return text[len(self.prefix): len(text) - len(self.suffix)]

    def wrap(self, statement: str) -> str:
        return self.prefix + statement + self.suffix


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


def shared_template(texts: Sequence[str]) -> Template:
    """The longest prefix and suffix all `texts` share, each ending (or starting)
    between words: a first letter every question happens to share is content,
    not template. Empty when the prompts share no wrapper (a prompt without it
    makes the whole text the statement)."""
    if not texts:
        return Template()
    k = len(os.path.commonprefix(list(texts)))
    while k > 0 and any(k < len(t) and _word(t[k - 1]) and _word(t[k]) for t in texts):
        k -= 1
    rests = [t[k:] for t in texts]  # the suffix is sought after the prefix: they never overlap
    s = len(os.path.commonprefix([r[::-1] for r in rests]))
    while s > 0 and any(s < len(r) and _word(r[-s - 1]) and _word(r[-s]) for r in rests):
        s -= 1
    return Template(texts[0][:k], rests[0][len(rests[0]) - s:])
