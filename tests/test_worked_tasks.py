"""Tests for the worked-solution families of saerl_zoo.tasks (issue 14's test bed)."""

import random
import re
from collections import Counter

import pytest

from saerl_zoo.rewards import task_reward
from saerl_zoo.tasks import (
    DEFECTS,
    WORKED_FAMILIES,
    WORKED_LEVELS,
    build_worked_eval_set,
    build_worked_pool,
    build_worked_train_set,
    final_answer,
    score,
    split_of,
)


def _samples(family, level, n=60, seed=0):
    rng = random.Random(seed)
    return [WORKED_FAMILIES[family](rng, level) for _ in range(n)]


def _true_value(question: str) -> int:
    op, expr = question.split(" ", 1)
    if op == "Mul":
        a, m = expr.split("*")
        return int(a) * int(m)
    return sum(int(x) for x in expr.split("+"))


@pytest.mark.parametrize("family", list(WORKED_FAMILIES))
@pytest.mark.parametrize("level", WORKED_LEVELS)
def test_answer_is_the_arithmetic_and_the_solution_ends_in_it(family, level):
    for p in _samples(family, level):
        assert p.answer == str(_true_value(p.question))
        assert p.solution.endswith(f" #{p.answer}")
        assert score(" " + p.solution, p.answer) == 1.0
        # the level is the number of steps: one more step per level
        assert p.solution.count("=") == level + 1


def test_long_add_writes_each_column_with_its_carry():
    for level in WORKED_LEVELS:
        for p in _samples("long_add", level):
            a, b = p.question.split(" ")[1].split("+")
            assert len(a) == len(b) == level + 1
            carry = 0
            for (x, y), step in zip(zip(reversed(a), reversed(b)), p.solution.split(" ")[:-1]):
                s = int(x) + int(y) + carry
                assert step == f"{x}+{y}{'+1' if carry else ''}={s}"
                carry = s // 10


def test_long_mul_writes_each_digit_with_its_carry():
    for level in WORKED_LEVELS:
        for p in _samples("long_mul", level):
            a, m = p.question.split(" ")[1].split("*")
            assert len(a) == level + 1 and 2 <= int(m) <= 9
            carry = 0
            for x, step in zip(reversed(a), p.solution.split(" ")[:-1]):
                s = int(x) * int(m) + carry
                assert step == f"{x}*{m}{f'+{carry}' if carry else ''}={s}"
                carry = s // 10


def test_running_sum_writes_every_partial_sum():
    p = _samples("running_sum", 3, n=1)[0]
    terms = [int(t) for t in p.question.split(" ")[1].split("+")]
    partials = [int(s) for s in re.findall(r"=(\d+)", p.solution)]
    assert len(terms) == 5
    assert partials == [sum(terms[: i + 2]) for i in range(len(terms) - 1)]


def test_final_answer_is_after_the_last_marker_and_unfinished_work_scores_zero():
    assert final_answer(" 7+8=15 8+2+1=11 #115") == "115"
    assert final_answer(" 1 #2 #3") == "3"
    assert final_answer(" 42") == " 42"  # a direct answer (the reasoning_gym default)
    assert final_answer(" 7+8=15 8+2+1=11") is None
    # a worked solution cut off before its answer must not be scored on a step's number
    assert score(" 15+1=16", "15") == 0.0
    assert score(" 7+8=15 8+2+1=11 #115", "115") == 1.0
    assert score(" 7+8=15 8+2+1=11 #105", "115") == 0.0
    assert score(" 115", "115") == 1.0
    assert task_reward(" 7+8=15 8+2+1=11 #115", {"prompt": "Q: Add 87+28\nA:", "answer": "115"}) == 1.0
    assert task_reward(" 7+8=15 #115 junk 9", {"prompt": "Q: Add 87+28\nA:", "answer": "115"}) == 1.0


@pytest.fixture(scope="module")
def pool():
    return build_worked_pool(1400, seed=0, bad_fraction=0.25)


@pytest.fixture(scope="module")
def eval_set():
    return build_worked_eval_set(50, seed=0)


def _norm(prompt: str) -> str:
    """A prompt's question with case, spacing and closing punctuation folded (what a near-duplicate edits)."""
    question = prompt.removeprefix("Q: ").removesuffix("\nA:")
    return " ".join(question.lower().split()).rstrip(".?= ")


def test_eval_set_is_stratified_and_large(eval_set):
    items, truth = eval_set
    assert len(items) >= 1000
    cells = Counter((t["family"], t["level"]) for t in truth)
    assert set(cells) == {(f, lvl) for f in WORKED_FAMILIES for lvl in WORKED_LEVELS}
    assert set(cells.values()) == {50}
    assert len({i["prompt"] for i in items}) == len(items)


def test_pool_and_training_set_never_share_a_prompt_with_the_eval_set(pool, eval_set):
    eval_prompts = {_norm(i["prompt"]) for i in eval_set[0]}
    assert not eval_prompts & {_norm(i["prompt"]) for i in pool[0]}
    train = build_worked_train_set(3000, seed=0)
    assert not eval_prompts & {_norm(f"Q: {p['question']}\nA:") for p in train}
    # by construction: every eval question is in the eval split and no pool text is
    assert all(split_of(i["prompt"][3:-3]) == "eval" for i in eval_set[0])
    assert all(split_of(i["prompt"][3:-3]) != "eval" for i in pool[0])
    # other seeds too
    other, _ = build_worked_pool(700, seed=3)
    assert not eval_prompts & {_norm(i["prompt"]) for i in other}


def test_pool_structure(pool):
    items, truth = pool
    assert len(items) == 1400 and all(set(i) == {"id", "prompt", "answer"} for i in items)
    bad = Counter(t["defect"] for t in truth if t["quality"] == 0)
    assert sum(bad.values()) == 350 and set(bad) == set(DEFECTS)
    clean = Counter((t["family"], t["level"]) for t in truth if t["quality"] == 1)
    assert set(clean) == {(f, lvl) for f in WORKED_FAMILIES for lvl in WORKED_LEVELS}
    assert max(clean.values()) - min(clean.values()) <= 1
    assert len({i["prompt"] for i in items}) == len(items)
    assert build_worked_pool(1400, seed=0, bad_fraction=0.25) == pool


def test_defects_look_like_their_kind(pool):
    clean_prompts = {i["prompt"] for i, t in zip(*pool) if t["quality"] == 1}
    for item, t in zip(*pool):
        question = item["prompt"][3:-3]
        if t["defect"] is None:
            assert item["answer"] == str(_true_value(question))
        elif t["defect"] == "wrong_answer":  # a carry slip: off by a power of ten, still positive
            diff = abs(int(item["answer"]) - _true_value(question))
            assert int(item["answer"]) > 0 and diff >= 10 and str(diff).rstrip("0") == "1"
        elif t["defect"] == "near_duplicate":
            assert item["prompt"] not in clean_prompts
            assert _norm(item["prompt"]) in {_norm(p) for p in clean_prompts}
        elif t["defect"] == "truncated":
            whole = [q for q in (question,) if re.fullmatch(r"(Sum \d(\+\d)+|Add (\d+)\+(\d+)|Mul \d+\*\d)", q)]
            assert not whole or str(_true_value(question)) != item["answer"]
        else:
            assert t["family"] == "off_topic" and not re.search(r"(Sum|Add|Mul) \d", question)


def test_train_set_follows_level_weights():
    train = build_worked_train_set(2100, seed=0, level_weights=[4, 2, 1, 0, 0, 0, 0])
    counts = Counter(p["level"] for p in train)
    assert counts == {1: 1200, 2: 600, 3: 300}
    with pytest.raises(ValueError, match="level_weights"):
        build_worked_train_set(10, level_weights=[1, 2])
