"""The pure helpers of scripts/smollm2_study.py (no model, no download)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from saerl_zoo.tasks import build_pool, format_prompt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("smollm2_study", ROOT / "scripts" / "smollm2_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_question_of_inverts_format_prompt(study):
    items, _ = build_pool(40, seed=0)  # includes truncated, near-duplicate and off-topic prompts
    for item in items:
        assert format_prompt(study.question_of(item["prompt"])) == item["prompt"]
    with pytest.raises(ValueError):
        study.question_of("no template here")


def test_pack_rows_keeps_texts_whole_and_pads(study):
    rows = study.pack_rows([[1, 5, 6], [1, 7], [1, 8, 9, 10], [1, 2, 3, 4, 5, 6]], context=5, pad_id=0)
    assert rows == [[1, 5, 6, 1, 7], [1, 8, 9, 10, 0], [1, 2, 3, 4, 5]]  # the last text is cut to the context
    assert all(len(r) == 5 for r in rows)


def test_by_key_averages_rows_and_rollouts(study):
    scores = np.array([[1, 0], [1, 1], [0, 0]])
    assert study.by_key(scores, [1, 1, 3]) == {"1": 0.75, "3": 0.0}
    assert study.by_key(np.array([0.5, 1.0]), ["a", "b"]) == {"a": 0.5, "b": 1.0}


def test_full_run_hours(study):
    run = {"arms": 2, "seeds": 1, "steps": 10, "prompts_per_step": 8, "group_size": 8, "n_eval": 100, "eval_every": 5}
    hours = study.full_run_hours(step_seconds=36.0, eval_seconds_per_problem=0.36, run=run)
    # 2 runs x 10 steps x 36 s = 0.2 h; 2 runs x 3 evals x 100 problems x 0.36 s = 0.06 h
    assert hours == {"train_hours": 0.2, "eval_hours": 0.06, "total_hours": 0.26}


def test_cached_reuses_and_refuses_stale_results(study, tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"value": 3}

    path = tmp_path / "stage.json"
    first = study.cached(path, {"k": 1}, compute)
    again = study.cached(path, {"k": 1}, compute)
    assert first["value"] == again["value"] == 3 and len(calls) == 1
    assert json.loads(path.read_text())["params"] == {"k": 1}
    with pytest.raises(ValueError, match="other settings"):
        study.cached(path, {"k": 2}, compute)


def test_choose_format_needs_both_verifiers(study):
    def fmt(first: float, agreed: float) -> dict:
        return {"overall": first, "reward_check": {"agreed_accuracy": agreed}}

    # "echo" is right by the first number as often, but math-verify rejects most of it
    assert study.choose_format({"echo": fmt(0.14, 0.10), "prefix": fmt(0.14, 0.14)}) == "prefix"
    assert study.choose_format({"a": fmt(0.10, 0.05), "b": fmt(0.12, 0.05)}) == "b"
