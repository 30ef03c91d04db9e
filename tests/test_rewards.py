"""Verifiers: math-verify based math_reward and the task pool's task_reward."""

from __future__ import annotations

import threading

import pytest

from saerl_zoo.rewards import math_reward, math_row_reward, normalize_answer, task_reward
from saerl_zoo.tasks import score

pytest.importorskip("math_verify")


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        ("The answer is \\boxed{\\frac{1}{2}}.", "1/2"),
        ("0.5", "1/2"),
        ("so x = 7", "7"),
        ("7.0", "7"),
        ("$\\frac{3}{4}$", "0.75"),
        ("1,000", "1000"),
        ("\\boxed{-3}", "-3"),
        ("We get $x^2 + 1$.", "x^2+1"),  # a symbolic reference, read as if boxed
        ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"),
        ("12 apples", "$12$"),
    ],
)
def test_math_reward_accepts_equivalent_answers(completion, reference):
    assert math_reward(completion, reference) == 1.0


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        ("-3", "3"),
        ("The answer is 3, not 4", "4"),  # the answer given first counts, not any number
        ("\\boxed{5} or 6", "6"),  # a boxed answer wins over later text
        ("no idea", "3"),
        ("", "3"),
        ("\\boxed{x^2 - 1}", "x^2+1"),
    ],
)
def test_math_reward_rejects_wrong_or_missing_answers(completion, reference):
    assert math_reward(completion, reference) == 0.0


# Reference answers as MATH (\boxed{} solutions, \$ money, ,\! separators, ^\circ, \text{} units,
# \dfrac), DeepMath (final_answer) and GSM8K (#### n) write them, against realistic completions.
# Each row: (reference, completion, score).
DATASET_FORMS = [
    # escaped currency (the three references)
    (r"\$36", r"Each ticket costs $9, so the total is \boxed{36}.", 1.0),
    (r"\$36", r"So she pays \boxed{\$36}.", 1.0),
    (r"\$18.90", r"The bill comes to \boxed{18.9}.", 1.0),
    (r"\$18.90", r"The bill comes to \boxed{\$19.80}.", 0.0),
    (r"\$32,\!348", r"\boxed{32348}", 1.0),
    (r"\$32,\!348", r"\boxed{\$32,\!348}", 1.0),
    (r"\$32,\!348", r"\boxed{32,349}", 0.0),
    (r"\$5", "The answer is 5.", 1.0),
    ("5", r"The answer is \$5.", 1.0),
    (r"\$5", "He has $5 left.", 1.0),
    (r"-\$5", r"\boxed{-5}", 1.0),
    (r"\$5", r"\boxed{-5}", 0.0),
    (r"\$1,\!000.50", r"\boxed{\$1000.5}", 1.0),
    (r"The total is $\boxed{\$18.90}$.", r"\boxed{18.90}", 1.0),  # a MATH solution as the reference
    # thousands separators: joined only when they separate groups of three digits
    ("1,000", r"\boxed{1000}", 1.0),
    ("1000", r"\boxed{1,000}", 1.0),
    (r"3\,000", r"\boxed{3000}", 1.0),
    (r"1\,234\,567", r"\boxed{1,234,567}", 1.0),
    ("1,234", "She saves 1234 in all.\n#### 1,234", 1.0),
    ("1234", "#### 1,235", 0.0),
    ("1,234", r"#### \$1,234", 1.0),
    ("(1,2)", r"\boxed{12}", 0.0),  # a pair is not a number
    ("1, 2", r"\boxed{12}", 0.0),  # nor is a list
    ("12", r"\boxed{1, 2}", 0.0),
    ("1, 2", r"\boxed{1,2}", 1.0),
    ("(1,234)", r"\boxed{1234}", 0.0),
    ("2,5", r"\boxed{2.5}", 0.0),  # no decimal comma: 2,5 is a list
    # degrees
    (r"30^\circ", r"\boxed{30}", 1.0),
    ("30", r"\boxed{30^{\circ}}", 1.0),
    (r"30^\circ", r"The angle is \boxed{30°}.", 1.0),
    (r"30^\circ", r"\boxed{60^\circ}", 0.0),
    (r"90^\circ", r"\boxed{\frac{\pi}{2}}", 0.0),  # degrees are a label, never converted to radians
    # percent: a unit label, so 50\% is 50 and not 0.5 (see rewards._without_percent)
    (r"50\%", r"\boxed{50}", 1.0),
    (r"50\%", "The answer is 50%.", 1.0),
    (r"12.5\%", r"\boxed{12.5}", 1.0),
    (r"50\%", r"\boxed{0.5}", 0.0),
    (r"12.5\%", r"\boxed{0.125}", 0.0),
    ("0.5", r"\boxed{50\%}", 0.0),
    (r"50\%", r"\boxed{40\%}", 0.0),
    # units in \text{}
    (r"5\text{ cm}", r"\boxed{5}", 1.0),
    (r"6\text{ cm}^2", r"\boxed{6\text{ cm}^2}", 1.0),
    (r"12\text{ inches}", r"\boxed{13}", 0.0),
    # \dfrac vs \frac
    (r"\dfrac{3}{4}", r"\boxed{\frac{3}{4}}", 1.0),
    (r"\frac{\sqrt{3}}{2}", r"\boxed{\dfrac{\sqrt3}{2}}", 1.0),
    (r"\dfrac{3}{4}", r"\boxed{\frac{4}{3}}", 0.0),
    # a closing full stop
    ("17.", r"\boxed{17}", 1.0),
    ("17", r"\boxed{17.}", 1.0),
    (r"\frac{1}{2}.", r"\boxed{0.5}", 1.0),
    ("17.", r"\boxed{71}", 0.0),
    # answers that are not numbers
    (r"\text{(C)}", r"\boxed{C}", 1.0),
    (r"\text{(C)}", r"\boxed{D}", 0.0),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \frac{\pi}{2})}", 1.0),
]


@pytest.mark.parametrize(("reference", "completion", "expected"), DATASET_FORMS)
def test_math_reward_reads_dataset_answer_forms(reference, completion, expected):
    assert math_reward(completion, reference) == expected


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        (r"\$32,\!348", "32,348"),
        (r"3\,000 and 1,\ 2", r"3000 and 1,\ 2"),  # a LaTeX space before three digits only
        (r"\boxed{17.}", r"\boxed{17}"),
        ("2.5", "2.5"),
        ("1, 2, \\ldots", "1, 2, \\ldots"),
        ("30°", "30^{\\circ}"),
        (r"\\$x$", r"\\$x$"),  # a line break before a delimiter is not an escaped dollar
    ],
)
def test_normalize_answer_rewrites_only_what_math_verify_misreads(text, normalized):
    assert normalize_answer(text) == normalized


def test_math_reward_unreadable_reference_is_zero_not_a_crash():
    assert math_reward("7", "") == 0.0


def test_math_reward_works_outside_the_main_thread():
    """math-verify's signal-based timeout only works in the main thread (e.g. not in a DataLoader thread)."""
    out = []
    thread = threading.Thread(target=lambda: out.append(math_reward("\\boxed{1/2}", "0.5")))
    thread.start()
    thread.join()
    assert out == [1.0]


def test_math_row_reward_reads_the_answer_column():
    assert math_row_reward("\\boxed{4}", {"prompt": "2+2?", "answer": "4"}) == 1.0
    assert math_row_reward("\\boxed{36}", {"prompt": "Cost?", "answer": "\\$36"}) == 1.0


def test_task_reward_is_the_task_scorer():
    rows = [
        {"prompt": "Q: 3 + 4 =\nA:", "answer": "7"},
        {"prompt": "Q: Simplify 4/10.\nA:", "answer": "2/5"},
        {"prompt": "Q: Calculate 7 - 9.\nA:", "answer": "-2"},
    ]
    completions = [" 7", " 7.0 because", " 8", " 2/5", " 4/10", " -2", "2", "nothing"]
    for row in rows:
        for completion in completions:
            assert task_reward(completion, row) == score(completion, row["answer"])
    assert task_reward(" 7", rows[0]) == 1.0
    assert task_reward(" 4/10", rows[1]) == 0.0  # unsimplified fraction: the task asks to simplify
    assert task_reward(" -2", rows[2]) == 1.0


def test_task_reward_normalizes_like_math_reward():
    """The task scorer reads the first number, so ``32,\\!348`` would be 32 without the shared normalisation."""
    row = {"prompt": "Q: 32000 + 348 =\nA:", "answer": "32348"}
    assert task_reward(" 32,\\!348", row) == 1.0
    assert task_reward(" \\$32,\\!348", row) == 1.0
    assert task_reward(" 32,\\!349", row) == 0.0
