"""Verifiers: math-verify based math_reward and the task pool's task_reward."""

from __future__ import annotations

import threading

import pytest

from saerl_zoo.rewards import math_reward, math_row_reward, task_reward
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
