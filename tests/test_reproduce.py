"""The reproduction: arms are what they claim, numbers come from the runs, the quick path runs end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from saerl_zoo.errors import UserError
from saerl_zoo.reproduce import (
    ARMS,
    QUICK,
    Arm,
    ReproConfig,
    accuracy_auc,
    arm_sampler,
    data_folder,
    data_max_new_tokens,
    learning_signal,
    load_eval_set,
    min_detectable_difference,
    paired_interval,
    steps_to_target,
    summarize,
)

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
        recs += [{"type": "train", "step": i + 1, "indices": [0, 1], "group_rewards": r, "groups_kept": 2, "rollouts": 4,
                  "seconds": 0.5} for i, r in enumerate(rewards)]
        return recs

    records = {
        "vanilla": {0: run([0.2, 0.3, 0.4], [[[1, 0], [0, 0]]]), 1: run([0.2, 0.2, 0.5], [[[1, 1], [0, 0]]])},
        "saerl": {0: run([0.2, 0.5, 0.5], [[[1, 0], [1, 0]]]), 1: run([0.2, 0.45, 0.6], [[[1, 0], [0, 0]]])},
    }
    truth = [{"quality": 0, "level": None, "defect": "off_topic"}, {"quality": 1, "level": 2, "defect": None}]
    assert steps_to_target(records["saerl"][1], 0.45) == 5
    assert steps_to_target(records["saerl"][0], 0.45) == pytest.approx(5 * 0.25 / 0.3)  # between steps 0 and 5
    assert steps_to_target(records["vanilla"][0], 0.9) is None
    assert steps_to_target(records["vanilla"][0], 0.1) == 0  # already there at the first evaluation
    s = summarize(records, truth)
    assert s["vanilla"]["final_mean"] == pytest.approx(0.45) and s["saerl"]["final_mean"] == pytest.approx(0.55)
    assert s["saerl"]["gain_points"] == pytest.approx(10.0)
    assert s["saerl"]["steps_to_target"] == pytest.approx([5 * 0.25 / 0.3, 5])
    assert s["vanilla"]["steps_to_target"] == [None, pytest.approx(5 + 5 * 0.25 / 0.3)]
    assert s["saerl"]["steps_ratio"] == pytest.approx((5 * 0.25 / 0.3 + 5) / 2 / (5 + 5 * 0.25 / 0.3))
    assert s["saerl"]["informative_group_share"] == pytest.approx(0.75)
    assert s["vanilla"]["informative_group_share"] == pytest.approx(0.25)
    assert s["vanilla"]["broken_share_served"] == pytest.approx(0.5)
    assert s["saerl"]["learning_signal_mean"] == pytest.approx((0.5 + 0.25) / 2)
    assert s["saerl"]["auc"] == pytest.approx([(0.35 + 0.5) / 2, (0.325 + 0.525) / 2])
    paired = s["saerl"]["paired"]
    assert paired["seeds"] == [0, 1] and s["vanilla"]["paired"] is None
    assert paired["final_points"]["mean"] == pytest.approx(10.0) and paired["final_points"]["sd"] == pytest.approx(0.0)
    quarters = s["vanilla"]["served"]["level_by_quarter"]  # one step: one quarter holds it, the others none
    assert len(quarters) == 4 and [q for q in quarters if q is not None] == [2.0]  # off-topic has no level
    assert s["vanilla"]["served"]["defect_share"] == {"off_topic": 0.5}


def test_statistics_match_the_textbook():
    # t(0.975, 2) = 4.302653, t(0.8, 2) = 1.060660 (any t table)
    p = paired_interval([1.0, 2.0, 3.0])
    assert p["mean"] == 2.0 and p["sd"] == pytest.approx(1.0)
    assert p["ci"] == pytest.approx([2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)], abs=1e-5)
    assert paired_interval([1.5])["ci"] is None
    assert min_detectable_difference(1.0, 3) == pytest.approx((4.302653 + 1.060660) * math.sqrt(2 / 3), abs=1e-5)
    assert min_detectable_difference(1.0, 1) is None
    evals = [{"type": "eval", "step": s, "accuracy": a} for s, a in ((0, 0.2), (5, 0.3), (10, 0.4))]
    assert accuracy_auc(evals) == pytest.approx(0.3)
    assert accuracy_auc(evals[:1]) == pytest.approx(0.2)


def test_one_vanilla_seed_claims_no_detectable_difference():
    from saerl_zoo.reproduce import power_analysis

    one = {"seeds": [0], "final_std": 0.0, "paired": None}
    power = power_analysis({"vanilla": one, "saerl": {"seeds": [0], "paired": {"seeds": [0]}}})
    assert power["vanilla_sd_points"] is None and power["mde_points"] == {"1": None}
    two = {"seeds": [0, 1], "final_std": 0.01, "paired": None}
    power = power_analysis({"vanilla": two, "saerl": {"seeds": [0, 1], "paired": {"seeds": [0, 1]}}})
    assert power["mde_points"]["2"] == pytest.approx(min_detectable_difference(1.0, 2))


def test_learning_signal_counts_only_the_groups_a_step_trained_on():
    rewards = [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 0, 0]]
    assert learning_signal({"group_rewards": rewards, "groups_kept": 4}) == pytest.approx(0.1875 + 0.25 + 0.1875)
    # dynamic sampling trained on the first 2 informative groups only
    assert learning_signal({"group_rewards": rewards, "groups_kept": 2}) == pytest.approx(0.1875 + 0.25)


def test_eval_record_reports_accuracy_per_level():
    from saerl_zoo.grpo import eval_record

    rows = [{"level": 1}, {"level": 1}, {"level": 2}, {"level": 2}]
    assert eval_record([1.0, 0.0, 1.0, 1.0], rows) == {"accuracy": 0.75, "n": 4, "by_level": {"1": 0.5, "2": 1.0}}
    assert "by_level" not in eval_record([1.0], [{"prompt": "x"}])


def test_config_validation():
    with pytest.raises(ValueError, match="unknown arms"):
        ReproConfig(arms=("vanilla", "nope"))
    with pytest.raises(ValueError, match="vanilla"):
        ReproConfig(arms=("saerl",))
    with pytest.raises(ValueError, match="num_steps"):
        ReproConfig(num_steps=0)
    with pytest.raises(ValueError, match="baseline 'vanilla' only 3"):
        ReproConfig(arms=("vanilla", "saerl"), arm_seeds={"saerl": 5})
    with pytest.raises(ValueError, match="arm_seeds"):
        ReproConfig(arm_seeds={"nope": 2})
    with pytest.raises(ValueError, match="pacing"):
        Arm(difficulty=None)
    config = ReproConfig()
    assert config.seeds_of("vanilla") == config.seeds_of("saerl") == [0, 1, 2, 3, 4]
    assert config.seeds_of("saerl_reverse") == [0, 1, 2]


def test_pacing_reverse_and_feedback_arms(fake):
    from saerl_zoo.curriculum import DEFAULT_STAGES
    from saerl_zoo.feedback import OnlineFeedback

    artifacts, truth = fake
    config = ReproConfig(prompts_per_step=4, num_steps=7)
    difficulty = artifacts["sae"]["difficulty"]

    def sampler(arm):
        return arm_sampler(ARMS[arm], 0, N, artifacts, truth, config)

    assert sampler("saerl").pacing.stages == DEFAULT_STAGES and sampler("saerl_unpaced").pacing.stages == 1
    assert sampler("saerl_competence").pacing.num_steps == 7
    assert isinstance(sampler("saerl_feedback").feedback, OnlineFeedback) and sampler("saerl").feedback is None
    forward, reverse = _epoch(sampler("curriculum_only")), [i for i in _epoch(sampler("saerl_reverse"))]
    half = len(reverse) // 2
    assert difficulty[reverse[:half]].mean() > difficulty[reverse[half:]].mean()  # hard first
    assert difficulty[forward[:half]].mean() < difficulty[forward[half:]].mean()


# ---------------------------------------------------------------- the data folder


def _folder(tmp_path, **files):
    """A data folder with build_default's layout; ``files`` adds (name -> rows or dict) entries."""
    folder = tmp_path / "data"
    for name in ("prompts.jsonl", "ground_truth.jsonl", "pass_rates.jsonl", "quality_labels.jsonl"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text('{"id": "p0", "prompt": "Q: x\\nA:"}\n')
    for name in ("model", "sae"):
        (folder / name).mkdir()
    for name, content in files.items():
        name = name.replace("__", ".")
        text = json.dumps(content) if isinstance(content, dict) else "".join(json.dumps(r) + "\n" for r in content)
        (folder / name).write_text(text)
    return folder


def _eval_files(cells=(("a", 1), ("a", 2), ("b", 1), ("b", 2)), per_cell=3, broken=False):
    items, truth = [], []
    for f, lv in cells:
        for k in range(per_cell):
            i = f"e{len(items)}"
            items.append({"id": i, "prompt": f"Q: {f}{lv}-{k}\nA:", "answer": "1"})
            truth.append({"id": i, "family": f, "level": lv, "quality": 0 if broken and k == 0 else 1, "defect": None})
    return {"eval_prompts__jsonl": items, "eval_truth__jsonl": truth}


def test_eval_set_is_read_from_the_folder_stratified(tmp_path):
    folder = _folder(tmp_path, **_eval_files())
    rows = load_eval_set(folder, 4, seed=0)
    assert [(r["family"], r["level"]) for r in rows] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert [r["prompt"] for r in rows] == ["Q: a1-0\nA:", "Q: a2-0\nA:", "Q: b1-0\nA:", "Q: b2-0\nA:"]  # first per cell
    assert len(load_eval_set(folder, None, seed=0)) == 12
    for n in (5, 16):
        with pytest.raises(UserError, match="multiple of the 4 family x level cells"):
            load_eval_set(folder, n, seed=0)


def test_eval_set_refuses_broken_problems_and_half_sets(tmp_path):
    folder = _folder(tmp_path, **_eval_files(broken=True))
    with pytest.raises(UserError, match="4 evaluation problems are not clean"):
        load_eval_set(folder, None, seed=0)
    (folder / "eval_truth.jsonl").unlink()
    with pytest.raises(UserError, match="has eval_prompts.jsonl but not its partner"):
        data_folder(ReproConfig(data=str(folder)))
    (folder / "sae").rmdir()
    with pytest.raises(UserError, match="has no sae"):
        data_folder(ReproConfig(data=str(folder)))


def test_completion_length_comes_from_the_folder(tmp_path):
    folder = _folder(tmp_path, competence__json={"max_new_tokens": 110})
    assert data_max_new_tokens(folder, None) == (110, "the data folder's competence.json")
    assert data_max_new_tokens(folder, 110)[0] == 110
    with pytest.raises(UserError, match="max_new_tokens 10 differs from the 110"):
        data_max_new_tokens(folder, 10)
    (folder / "competence.json").unlink()
    (folder / "build_info.json").write_text(json.dumps({"args": {"max_new_tokens": 12}}))
    assert data_max_new_tokens(folder, None) == (12, "the data folder's build_info.json")
    (folder / "build_info.json").unlink()
    with pytest.raises(UserError, match="give --max-new-tokens"):
        data_max_new_tokens(folder, None)
    assert data_max_new_tokens(folder, 7) == (7, "given")


def test_cli_refuses_a_truncating_completion_length_before_any_work(tmp_path):
    from saerl_zoo.cli import main

    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["reproduce", "--quick", "--max-new-tokens", "3", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: max_new_tokens 3 differs from the") and result.output.count("\n") == 1
    assert not out.exists()


def test_a_job_folder_refuses_runs_on_other_data_or_settings(tmp_path):
    from saerl_zoo.reproduce import _claim_job_folder, job_settings

    folder = _folder(tmp_path, **_eval_files())
    out = tmp_path / "job"
    rows = [{"id": "e0"}, {"id": "e1"}]
    settings = job_settings(ReproConfig(), rows)
    _claim_job_folder(out, folder, settings)
    _claim_job_folder(out, folder, job_settings(ReproConfig(arms=("vanilla",), jobs=2), rows))  # more/fewer runs: resumable
    for other, what in ((job_settings(ReproConfig(policy="other/model"), rows), "policy"),
                        (job_settings(ReproConfig(), rows[:1]), "eval_ids"),
                        (job_settings(ReproConfig(artifact_seed=1), rows), "artifact_seed")):
        with pytest.raises(UserError, match=f"other settings \\({what}"):
            _claim_job_folder(out, folder, other)
    (folder / "sae" / "cfg.json").write_text("{}")  # not only weights: a changed hook or preprocessing is other data
    with pytest.raises(UserError, match="holds runs on other data"):
        _claim_job_folder(out, folder, settings)


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


def _quick_config() -> ReproConfig:
    return ReproConfig(**QUICK)


def test_quick_report_has_every_arm_and_only_finite_numbers(quick_run):
    out, result = quick_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == set(QUICK["arms"])
    assert set(report["artifacts"]) == {"sae", "raw"}
    numbers = list(_finite_numbers({"arms": report["arms"], "artifacts": report["artifacts"], "power": report["power"]}))
    assert numbers and all(math.isfinite(v) for _, v in numbers), [p for p, v in numbers if not math.isfinite(v)]
    markdown = (out / "report.md").read_text()
    for arm, s in report["arms"].items():
        assert f"| {arm} | {len(s['seeds'])} | {s['final_mean']:.3f} ± {s['final_std']:.3f} |" in markdown
    for name in ("accuracy_vs_steps.png", "accuracy_by_level.png", "ablation_bars.png", "served_over_time.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report.md" in result.output


def _log(out, arm, seed):
    return [json.loads(line) for line in open(out / "runs" / arm / f"seed{seed}" / "log.jsonl")]


def _interpolated(evals, target):
    """Steps to target, written out again: the first evaluation at or above, interpolated from the one before."""
    for k, e in enumerate(evals):
        if e["accuracy"] >= target - 1e-12:
            if k == 0:
                return float(e["step"])
            a, b = evals[k - 1], e
            return a["step"] + (target - a["accuracy"]) / (b["accuracy"] - a["accuracy"]) * (b["step"] - a["step"])
    return None


def _t_interval(d):
    from scipy import stats

    d = np.asarray(d, dtype=float)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return [d.mean() - half, d.mean() + half]


def test_quick_report_numbers_are_derived_from_the_run_logs(quick_run):
    from scipy import stats

    from saerl_zoo.embedded import default_path

    out, _ = quick_run
    config = _quick_config()
    report = json.loads((out / "report.json").read_text())
    truth = [json.loads(line) for line in default_path("ground_truth.jsonl").read_text().splitlines()]
    finals, aucs, evals_of = {}, {}, {}
    for arm, s in report["arms"].items():
        assert s["seeds"] == config.seeds_of(arm)
        rollouts, signals, served = [], [], []
        for seed in s["seeds"]:
            log = _log(out, arm, seed)
            evals = [r for r in log if r["type"] == "eval"]
            train = [r for r in log if r["type"] == "train"]
            assert [r["step"] for r in evals] == list(range(0, QUICK["num_steps"] + 1, QUICK["eval_every"]))
            for e in evals:  # equal rows per level: the accuracy is the mean of the per-level accuracies
                assert e["accuracy"] == pytest.approx(np.mean(list(e["by_level"].values())))
            evals_of[arm, seed] = evals
            finals[arm, seed] = evals[-1]["accuracy"]
            acc, steps = [e["accuracy"] for e in evals], [e["step"] for e in evals]
            aucs[arm, seed] = sum((acc[k] + acc[k + 1]) / 2 * (steps[k + 1] - steps[k]) for k in range(len(acc) - 1)) / steps[-1]
            rollouts.append(sum(r["rollouts"] for r in train))
            for r in train:
                g = np.asarray(r["group_rewards"], dtype=float)
                p = g.mean(1)
                kept = [k for k in range(len(g)) if g[k].max() > g[k].min()][: r["groups_kept"]]
                signals.append(sum(p[k] * (1 - p[k]) for k in kept))
            served.append([r["indices"] for r in train])
        assert s["final_accuracy"] == [finals[arm, seed] for seed in s["seeds"]]
        assert s["auc"] == pytest.approx([aucs[arm, seed] for seed in s["seeds"]])
        assert s["rollouts_mean"] == pytest.approx(np.mean(rollouts))
        assert s["learning_signal_mean"] == pytest.approx(np.mean(signals))
        levels = sorted(evals_of[arm, 0][0]["by_level"], key=int)
        assert s["final_by_level"] == pytest.approx(
            {lv: np.mean([evals_of[arm, seed][-1]["by_level"][lv] for seed in s["seeds"]]) for lv in levels})
        # quarters of a 4-step run: step k (1-based) is quarter k
        for q in range(QUICK["num_steps"]):
            idx = [i for run in served for i in run[q]]
            known = [truth[i]["level"] for i in idx if truth[i]["level"] is not None]
            assert s["served"]["level_by_quarter"][q] == (pytest.approx(np.mean(known)) if known else None)
            assert s["served"]["broken_by_quarter"][q] == pytest.approx(np.mean([truth[i]["quality"] == 0 for i in idx]))
    for arm, s in report["arms"].items():
        base = s["baseline"]
        target = np.mean([finals[base, seed] for seed in report["arms"][base]["seeds"]])
        assert s["target_accuracy"] == pytest.approx(target)
        expected = [_interpolated(evals_of[arm, seed], target) for seed in s["seeds"]]
        assert s["steps_to_target"] == [pytest.approx(x) if x is not None else None for x in expected]
        if arm == base:
            assert s["paired"] is None
            continue
        d = [100 * (finals[arm, seed] - finals[base, seed]) for seed in s["seeds"]]
        assert s["paired"]["seeds"] == s["seeds"] and s["paired"]["final_points"]["mean"] == pytest.approx(np.mean(d))
        assert s["paired"]["final_points"]["ci"] == pytest.approx(_t_interval(d))
        d_auc = [100 * (aucs[arm, seed] - aucs[base, seed]) for seed in s["seeds"]]
        assert s["paired"]["auc_points"]["ci"] == pytest.approx(_t_interval(d_auc))
    vanilla = [finals["vanilla", seed] for seed in config.seeds_of("vanilla")]
    sd = 100 * np.std(vanilla, ddof=1)
    assert report["power"]["vanilla_sd_points"] == pytest.approx(sd)
    n = QUICK["seeds"]
    mde = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * math.sqrt(2) * sd / math.sqrt(n)
    assert report["power"]["mde_points"] == {str(n): pytest.approx(mde)}
    per_step = QUICK["prompts_per_step"] * QUICK["group_size"]
    assert report["arms"]["vanilla"]["rollouts_mean"] == QUICK["num_steps"] * per_step
    assert report["arms"]["online_filter"]["rollouts_mean"] == 2 * QUICK["num_steps"] * per_step  # it pays for its filter
    assert report["eval"] == {"source": "eval_prompts.jsonl", "n": 42, "cells": 21, "per_cell": "2"}


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


def test_artifact_table_has_surface_baseline_rows_and_says_what_the_sae_adds(quick_run):
    import json

    from saerl_zoo.reproduce import render_markdown

    report = json.loads((quick_run[0] / "report.json").read_text())
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


def test_load_pool_matches_labels_by_id_and_names_the_bad_line(tmp_path):
    """The labelled subsets are joined through align_labels: an unknown or repeated id is refused with its line."""
    import shutil

    from saerl_zoo.embedded import default_path
    from saerl_zoo.reproduce import load_pool

    for name in ("prompts.jsonl", "ground_truth.jsonl", "pass_rates.jsonl", "quality_labels.jsonl"):
        shutil.copy(default_path(name), tmp_path / name)
    pool = load_pool(tmp_path)
    ids = [item["id"] for item in pool["items"]]
    rates = [json.loads(line) for line in (tmp_path / "pass_rates.jsonl").read_text().splitlines()]
    assert [ids[n] for n in pool["difficulty_rows"]] == [r["id"] for r in rates]
    assert pool["difficulty_targets"] == pytest.approx([1 - r["pass_rate"] for r in rates])
    lines = (tmp_path / "pass_rates.jsonl").read_text().splitlines()
    (tmp_path / "pass_rates.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(ValueError, match=f"appears 2 times.*pass_rates.jsonl:{len(lines) + 1}"):
        load_pool(tmp_path)
    (tmp_path / "pass_rates.jsonl").write_text("\n".join([*lines, json.dumps({"id": "nope", "pass_rate": 0.5})]) + "\n")
    with pytest.raises(ValueError, match=f"pass_rates.jsonl:{len(lines) + 1} names unknown prompt id 'nope'"):
        load_pool(tmp_path)
