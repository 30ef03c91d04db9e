"""Tests for saerl_zoo.tasks: the verifiable task pool with known structure."""

import json
from collections import Counter
from pathlib import Path

import pytest

reasoning_gym = pytest.importorskip("reasoning_gym")

from saerl_zoo import tasks  # noqa: E402
from saerl_zoo.tasks import (  # noqa: E402
    DEFECTS,
    FAMILIES,
    LEVELS,
    build_eval_set,
    build_pool,
    build_worked_pool,
    build_train_set,
    score,
)


@pytest.fixture(scope="module")
def pool():
    return build_pool(630, seed=0)


def test_pool_is_deterministic_by_seed(pool):
    assert build_pool(630, seed=0) == pool
    other, _ = build_pool(630, seed=1)
    assert [i["prompt"] for i in other] != [i["prompt"] for i in pool[0]]


def test_items_hide_ground_truth(pool):
    items, truth = pool
    assert all(set(i) == {"id", "prompt", "answer"} for i in items)
    assert all(set(t) == {"id", "family", "level", "quality", "defect"} for t in truth)
    assert [i["id"] for i in items] == [t["id"] for t in truth]
    assert len({i["id"] for i in items}) == len(items)
    assert all(i["prompt"].startswith("Q: ") and i["prompt"].endswith("\nA:") for i in items)
    # short prompts for a tiny LM (near-duplicate edits may add two characters)
    assert all(len(i["prompt"]) <= tasks.MAX_QUESTION_CHARS + len("Q: \nA:") + 2 for i in items)


def test_family_level_quality_coverage(pool):
    _, truth = pool
    assert len(FAMILIES) >= 6 and LEVELS == (1, 2, 3)
    clean_cells = Counter((t["family"], t["level"]) for t in truth if t["quality"] == 1)
    assert set(clean_cells) == {(f, lvl) for f in FAMILIES for lvl in LEVELS}
    assert max(clean_cells.values()) - min(clean_cells.values()) <= 1
    assert {t["defect"] for t in truth if t["quality"] == 0} == set(DEFECTS)
    assert all((t["defect"] is None) == (t["quality"] == 1) for t in truth)
    assert all(t["level"] is None for t in truth if t["defect"] == "off_topic")


@pytest.mark.parametrize("n,bad_fraction", [(200, 0.0), (200, 0.15), (333, 0.3)])
def test_bad_fraction_honoured(n, bad_fraction):
    items, truth = build_pool(n, seed=2, bad_fraction=bad_fraction)
    assert len(items) == n
    assert sum(t["quality"] == 0 for t in truth) == round(n * bad_fraction)


def test_clean_pool_prompts_are_unique_and_answers_self_consistent(pool):
    items, truth = pool
    clean = [i for i, t in zip(items, truth) if t["quality"] == 1]
    assert len({i["prompt"] for i in clean}) == len(clean)
    assert all(score(" " + i["answer"], i["answer"]) == 1.0 for i in items)


def test_defects_look_like_their_kind(pool):
    items, truth = pool
    by_prompt = {i["prompt"]: i for i, t in zip(items, truth) if t["quality"] == 1}
    for item, t in zip(items, truth):
        if t["defect"] == "near_duplicate":
            assert item["prompt"] not in by_prompt  # edited, not an exact copy
            assert any(" ".join(item["prompt"].lower().split()).rstrip("\nA:.?= ")[:8] in p.lower()
                       for p in by_prompt)
        if t["defect"] == "off_topic":
            assert t["family"] == tasks.OFF_TOPIC_FAMILY


@pytest.mark.parametrize("completion,answer,expected", [
    ("7", "7", 1.0),
    (" 7\nQ: 1 + 1 =", "7", 1.0),
    (" +07", "7", 1.0),
    ("7.0", "7", 1.0),
    ("-3", "-3", 1.0),
    ("3", "-3", 0.0),
    ("The answer is 42.", "42", 1.0),
    ("12 and then 7", "7", 0.0),
    ("1,000", "1000", 1.0),
    (" 2/5", "2/5", 1.0),
    (" 2 / 5", "2/5", 1.0),
    ("4/10", "2/5", 0.0),
    ("0.5", "1/2", 0.0),
    ("2", "2/5", 0.0),
    ("", "1", 0.0),
    ("no number", "1", 0.0),
])
def test_score_examples(completion, answer, expected):
    assert score(completion, answer) == expected


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_score_agrees_with_reasoning_gym_scorer(family):
    spec = FAMILIES[family]
    for level in LEVELS:
        ds = reasoning_gym.create_dataset(spec.rg_name, size=15, seed=level, **spec.levels[level])
        for entry in ds:
            ref = entry["answer"]
            assert score(ref, ref) == ds.score_answer(ref, entry) == 1.0
            wrong = tasks._wrong_answer(ref, tasks.random.Random(0))
            assert score(wrong, ref) == 0.0
            assert ds.score_answer(wrong, entry) < 1.0


def test_eval_set_clean_stratified_and_held_out(pool):
    items, truth = build_eval_set(210, seed=0)
    assert build_eval_set(210, seed=0) == (items, truth)
    assert all(t["quality"] == 1 and t["defect"] is None for t in truth)
    cells = Counter((t["family"], t["level"]) for t in truth)
    assert len(cells) == len(FAMILIES) * len(LEVELS) and set(cells.values()) == {10}
    assert all(i["id"].startswith("e") for i in items)
    # different generator seeds than the pool: harder levels essentially never collide
    pool_prompts = {i["prompt"] for i in pool[0]}
    hard = [i["prompt"] for i, t in zip(items, truth) if t["level"] == 3]
    assert sum(p in pool_prompts for p in hard) <= 2


def test_train_set_is_clean_and_differs_from_pool(pool):
    items, truth = build_train_set(420, seed=0)
    assert all(t["quality"] == 1 for t in truth)
    assert Counter(t["level"] for t in truth) == {1: 140, 2: 140, 3: 140}
    assert [i["prompt"] for i in items] != [i["prompt"] for i in pool[0]][:420]


DEFAULT = Path(tasks.__file__).parent / "default"


def _jsonl(name):
    return [json.loads(line) for line in (DEFAULT / name).read_text().splitlines()]


def test_shipped_eval_set_shares_no_prompt_with_the_pool():
    """The reproduction's held-out problems (issue 14): at least 1000, none also a pool prompt, whitespace aside."""
    norm = lambda text: " ".join(text.split())  # noqa: E731
    held = [norm(r["prompt"]) for r in _jsonl("eval_prompts.jsonl")]
    assert len(held) >= 1000 and not set(held) & {norm(r["prompt"]) for r in _jsonl("prompts.jsonl")}


@pytest.mark.skipif(not (DEFAULT / "build_info.json").exists(), reason="embedded default not built")
def test_shipped_default_is_this_pool():
    """The shipped prompts are exactly build_pool(...) of the recorded build:
    if tasks.py changes, scripts/build_default.py must be rerun."""
    args = json.loads((DEFAULT / "build_info.json").read_text())["args"]
    build = build_worked_pool if args["tasks"] == "worked" else build_pool
    items, truth = build(args["n_pool"], seed=args["seed"], bad_fraction=args["bad_fraction"])
    assert _jsonl("prompts.jsonl") == items
    assert _jsonl("ground_truth.jsonl") == truth
    ids = {i["id"] for i in items}
    for name, key in (("pass_rates.jsonl", "pass_rate"), ("quality_labels.jsonl", "label")):
        rows = _jsonl(name)
        assert 0 < len(rows) <= 0.1 * len(items) and {r["id"] for r in rows} <= ids
        assert all(0.0 <= r[key] <= 1.0 for r in rows)
