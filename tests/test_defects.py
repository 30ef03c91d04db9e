"""saerl_zoo.defects: each defect breaks the text as it says, is seeded, and skips (None) text it cannot break."""

from __future__ import annotations

import random
import re

import pytest

from saerl_zoo.defects import (
    OFF_TOPIC_LINES,
    PLACEHOLDERS,
    TEXT_DEFECTS,
    Template,
    corrupt_numbers,
    near_duplicate,
    off_topic,
    shared_template,
    truncate,
)

MATH = [
    "Multiply 146 by 281.",
    "Tom has 12 apples and gives 5 to Ann. How many apples does he have left?",
    "Let $f(x) = 3x^2 + 2x - 7$. Find the sum of the roots of f.",
    "Simplify 38/42.",
    "6 + 3 =",
]


def _draws(fn, text, seeds=range(40)):
    return [fn(text, random.Random(s)) for s in seeds]


@pytest.mark.parametrize("kind", sorted(TEXT_DEFECTS))
def test_every_defect_is_seeded_and_changes_the_text(kind):
    fn = TEXT_DEFECTS[kind]
    for text in MATH:
        first, again = _draws(fn, text), _draws(fn, text)
        assert first == again  # the same seed gives the same broken text
        assert all(broken is not None and broken != text for broken in first)
        assert len(set(first)) > 1  # and other seeds other ones


def test_truncate_cuts_inside_the_numbers():
    for text in MATH:
        digits = [m.start() for m in re.finditer(r"\d", text)]
        for cut in _draws(truncate, text):
            assert text.startswith(cut) and digits[0] < len(cut) <= digits[-1]  # the last number is never whole


def test_truncate_without_numbers_cuts_the_middle_and_skips_short_text():
    text = "Prove that the sum of two odd integers is even."
    assert _draws(truncate, text, range(3)) == [text[: len(text) // 2].rstrip()] * 3
    assert truncate("Say hello there", random.Random(0)) is None  # three words, no numbers: nothing to cut
    assert truncate("", random.Random(0)) is None


def _fold(text: str) -> str:
    """What a near-duplicate edit leaves alone: the words, ignoring case, spacing and final punctuation."""
    return " ".join(text.lower().split()).rstrip(".?= ")


def test_near_duplicate_keeps_the_statement():
    for text in [*MATH, "nospace", "all lower case?"]:
        for copy in _draws(near_duplicate, text):
            assert copy != text and _fold(copy) == _fold(text)
    assert near_duplicate("   ", random.Random(0)) is None


def test_off_topic_is_bundled_noise_about_as_long_as_the_statement():
    long = MATH[2] * 3
    for text in (MATH[0], long, ""):
        for noise in _draws(off_topic, text):
            assert all(any(part == line for line in OFF_TOPIC_LINES) for part in _split_lines(noise))
            assert len(noise) >= 0.8 * len(text.strip())
    assert len(off_topic(long, random.Random(0))) > len(off_topic("Hi", random.Random(0)))


def _split_lines(noise: str) -> list[str]:
    """The OFF_TOPIC_LINES a noise text was joined from."""
    parts, rest = [], noise
    while rest:
        line = next(line for line in sorted(OFF_TOPIC_LINES, key=len, reverse=True) if rest.startswith(line))
        parts.append(line)
        rest = rest[len(line):].lstrip(" ")
    return parts


def test_corrupt_numbers_breaks_one_number_in_each_way():
    text = "Simplify 1200/45, then add 7."
    seen = set()
    for broken in _draws(corrupt_numbers, text, range(200)):
        if any(p in broken for p in PLACEHOLDERS):
            seen.add("placeholder")
        elif "/0," in broken:
            seen.add("zero_divisor")
        elif "(or " in broken:
            seen.add("conflicting")
            value, other = map(int, re.search(r"(\d+) \(or (\d+)\)", broken).groups())
            assert 1 <= other - value <= 9
        else:
            assert re.search(r"[OlZS]", broken) and re.sub(r"\d", "", broken) != re.sub(r"\d", "", text)
            seen.add("misread")
    assert seen == {"placeholder", "zero_divisor", "conflicting", "misread"}
    assert corrupt_numbers("Prove that the sum of two odd integers is even.", random.Random(0)) is None
    assert corrupt_numbers("", random.Random(0)) is None


def test_shared_template_finds_the_wrapper_between_words():
    assert shared_template(["Q: Cat 1?\nA:", "Q: Cow 2?\nA:"]) == Template("Q: ", "?\nA:")
    assert shared_template(["Q: 12 + 3 =\nA:", "Q: 15 + 3 =\nA:"]) == Template("Q: ", " + 3 =\nA:")
    chat = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    template = shared_template([chat.format("What is 2+2?"), chat.format("Name a prime.")])
    assert template.prefix.endswith("<|im_start|>user\n") and template.suffix.startswith("<|im_end|>")
    assert template.statement(chat.format("What is 2+2?")) == "What is 2+2?"
    assert template.wrap("x") == chat.format("x")
    assert shared_template(["alpha beta", "gamma delta"]) == Template("", "")
    assert shared_template(["same text", "same text"]).statement("same text") == ""  # nothing left to break
