"""The reproduction: arms are what they claim, numbers come from the runs, the quick path runs end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from saerl_zoo.reproduce import ARMS, QUICK, ReproConfig, arm_sampler, steps_to_target, summarize

N = 40


@pytest.fixture()
def fake():
    """Artifacts and truth for N prompts: every 5th prompt is broken, levels cycle 1..3."""
    rng = np.random.default_rng(0)
    truth = [{"family": f"f{i % 4}", "level": 1 + i % 3, "quality": int(i % 5 != 0)} for i in range(N)]
    keep = np.array([t["quality"] == 1 for t in truth])
    art = {"keep": keep, "difficulty": rng.random(N), "clusters": np.arange(N) % 4}
    return {"sae": art, "raw": {**art, "difficulty": rng.random(N)}}, truth


def _epoch(sampler) -> list[int]:
    return list(iter(sampler))


def test_vanilla_is_a_seeded_shuffle_of_every_prompt(fake):
    artifacts, truth = fake
    config = ReproConfig(prompts_per_step=4)
    a = _epoch(arm_sampler(ARMS["vanilla"], 0, N, artifacts, truth, config))
    assert sorted(a) == list(range(N)) and a != list(range(N))
    assert a == _epoch(arm_sampler(ARMS["vanilla"], 0, N, artifacts, truth, config))
    assert a != _epoch(arm_sampler(ARMS["vanilla"], 1, N, artifacts, truth, config))


def test_filter_arms_drop_what_they_say(fake):
    artifacts, truth = fake
    config = ReproConfig(prompts_per_step=4)
    kept = set(np.flatnonzero(artifacts["sae"]["keep"]))
    assert set(_epoch(arm_sampler(ARMS["filter_only"], 0, N, artifacts, truth, config))) == kept
    assert set(_epoch(arm_sampler(ARMS["saerl"], 0, N, artifacts, truth, config))) == kept
    assert sorted(_epoch(arm_sampler(ARMS["saerl_no_filter"], 0, N, artifacts, truth, config))) == list(range(N))
    random_kept = set(_epoch(arm_sampler(ARMS["random_filter"], 0, N, artifacts, truth, config)))
    assert len(random_kept) == len(kept) and random_kept != kept  # same budget, chosen blindly


def test_curriculum_arms_order_easy_to_hard(fake):
    artifacts, truth = fake
    config = ReproConfig(prompts_per_step=4)
    order = _epoch(arm_sampler(ARMS["curriculum_only"], 0, N, artifacts, truth, config))
    assert order == list(np.argsort(artifacts["sae"]["difficulty"], kind="stable"))
    oracle = _epoch(arm_sampler(ARMS["oracle_curriculum"], 0, N, artifacts, truth, config))
    assert [truth[i]["level"] for i in oracle] == sorted(t["level"] for t in truth)
    raw = _epoch(arm_sampler(ARMS["saerl_raw"], 0, N, artifacts, truth, config))
    sae = _epoch(arm_sampler(ARMS["saerl"], 0, N, artifacts, truth, config))
    assert raw != sae  # the raw-activation arm reads its own probe


def test_oracle_puts_levelless_off_topic_prompts_last(fake):
    artifacts, truth = fake
    truth = [dict(t) for t in truth]
    truth[0]["level"] = None
    order = _epoch(arm_sampler(ARMS["oracle_curriculum"], 0, N, artifacts, truth, ReproConfig(prompts_per_step=4)))
    assert order[-1] == 0


def test_steps_to_target_and_summary_come_from_the_logs():
    def run(accs, rewards):
        recs = [{"type": "eval", "step": 5 * i, "accuracy": a} for i, a in enumerate(accs)]
        recs += [{"type": "train", "step": i + 1, "indices": [0, 1], "group_rewards": r, "rollouts": 4, "seconds": 0.5}
                 for i, r in enumerate(rewards)]
        return recs

    records = {
        "vanilla": {0: run([0.2, 0.3, 0.4], [[[1, 0], [0, 0]]]), 1: run([0.2, 0.2, 0.5], [[[1, 1], [0, 0]]])},
        "saerl": {0: run([0.2, 0.5, 0.5], [[[1, 0], [1, 0]]]), 1: run([0.2, 0.45, 0.6], [[[1, 0], [0, 0]]])},
    }
    truth = [{"quality": 0}, {"quality": 1}]
    assert steps_to_target(records["saerl"][1], 0.45) == 5
    assert steps_to_target(records["vanilla"][0], 0.9) is None
    s = summarize(records, truth)
    assert s["vanilla"]["final_mean"] == pytest.approx(0.45) and s["saerl"]["final_mean"] == pytest.approx(0.55)
    assert s["saerl"]["gain_points"] == pytest.approx(10.0)
    assert s["saerl"]["steps_to_target"] == [5, 5] and s["vanilla"]["steps_to_target"] == [None, 10]
    assert s["saerl"]["steps_ratio"] == pytest.approx(5 / 10)
    assert s["saerl"]["informative_group_share"] == pytest.approx(0.75)
    assert s["vanilla"]["informative_group_share"] == pytest.approx(0.25)
    assert s["vanilla"]["broken_share_served"] == pytest.approx(0.5)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown arms"):
        ReproConfig(arms=("vanilla", "nope"))
    with pytest.raises(ValueError, match="vanilla"):
        ReproConfig(arms=("saerl",))
    with pytest.raises(ValueError, match="num_steps"):
        ReproConfig(num_steps=0)


# ---------------------------------------------------------------- the --quick path, end to end


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from saerl_zoo.cli import main

    out = tmp_path_factory.mktemp("reproduce")
    result = CliRunner().invoke(main, ["reproduce", "--quick", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result


def _finite_numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_quick_report_has_every_arm_and_only_finite_numbers(quick_run):
    out, result = quick_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == set(ARMS)
    assert set(report["artifacts"]) == {"sae", "raw"}
    numbers = list(_finite_numbers({"arms": report["arms"], "artifacts": report["artifacts"]}))
    assert numbers and all(math.isfinite(v) for _, v in numbers), [p for p, v in numbers if not math.isfinite(v)]
    markdown = (out / "report.md").read_text()
    for arm, s in report["arms"].items():
        assert f"| {arm} | {s['final_mean']:.3f} ± {s['final_std']:.3f} |" in markdown
    for name in ("accuracy_vs_steps.png", "final_accuracy.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report.md" in result.output


def test_quick_report_numbers_are_derived_from_the_run_logs(quick_run):
    out, _ = quick_run
    report = json.loads((out / "report.json").read_text())
    for arm, s in report["arms"].items():
        finals, rollouts = [], []
        for seed in QUICK["seeds"]:
            log = [json.loads(line) for line in open(out / "runs" / arm / f"seed{seed}" / "log.jsonl")]
            evals = [r for r in log if r["type"] == "eval"]
            assert [r["step"] for r in evals] == list(range(0, QUICK["num_steps"] + 1, QUICK["eval_every"]))
            finals.append(evals[-1]["accuracy"])
            rollouts.append(sum(r["rollouts"] for r in log if r["type"] == "train"))
        assert s["final_accuracy"] == finals
        assert s["rollouts_mean"] == pytest.approx(np.mean(rollouts))
    per_step = QUICK["prompts_per_step"] * QUICK["group_size"]
    assert report["arms"]["vanilla"]["rollouts_mean"] == QUICK["num_steps"] * per_step
    assert report["arms"]["online_filter"]["rollouts_mean"] == 2 * QUICK["num_steps"] * per_step  # it pays for its filter


def test_quick_rerun_resumes_without_training_again(quick_run):
    from saerl_zoo.cli import main

    out, _ = quick_run
    log = out / "runs" / "saerl" / "seed0" / "log.jsonl"
    before = log.read_text()
    first = json.loads((out / "report.json").read_text())
    result = CliRunner().invoke(main, ["reproduce", "--quick", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0
    assert log.read_text() == before
    assert json.loads((out / "report.json").read_text())["arms"] == first["arms"]


def test_artifact_table_has_surface_baseline_rows_and_says_what_the_sae_adds():
    import json
    from pathlib import Path

    from saerl_zoo.reproduce import render_markdown

    report = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/reproduce/report.json").read_text())
    sae = report["artifacts"]["sae"]
    report["surface_baselines"] = {"tfidf_char_1_3": {"difficulty_spearman_vs_level_clean": 0.5, "quality_auroc_vs_truth": 0.75},
                                   "length_digits": {"difficulty_spearman_vs_level_clean": 0.7, "quality_auroc_vs_truth": 0.6}}
    text = render_markdown(report)
    assert "| surface baseline: character 1–3-gram TF-IDF | — | 0.500 | — | 0.750 |" in text
    assert "| surface baseline: length + digit count | — | 0.700 | — | 0.600 |" in text
    assert (f"SAE probe minus the best of them: {sae['difficulty_spearman_vs_level_clean'] - 0.7:+.3f} Spearman (difficulty), "
            f"{sae['quality_auroc_vs_truth'] - 0.75:+.3f} AUROC (quality)") in text
    del report["surface_baselines"]
    assert "surface baseline" not in render_markdown(report)  # a report made before baselines renders as it did
