"""Reproduce SaeRL's claim (accuracy gain, steps to target) against vanilla GRPO on a CPU.

The experiment, in the order :func:`run_reproduction` runs it:

1. **Pool and labels.** The embedded default's task pool (7 reasoning-gym
   families x 3 levels, 15% broken prompts) and the only labels the paper
   allows: pass rates from k rollouts and quality labels, each on 10% of
   the pool. The ground truth (family, level, quality) is read for
   evaluation and for the oracle arm only.
2. **Artifacts.** The pool is featurized twice through the same path: with
   the policy's SAE and with :func:`~saerl_zoo.featurizer.raw_activation_sae`
   (the raw residual stream). On each, the difficulty probe, the quality
   probe and k-means are fitted, and scored against the ground truth.
3. **Arms.** :data:`ARMS` is data: each arm says which features it reads and
   which of filter / curriculum / clusters it uses (or their oracle and
   random stand-ins), plus GRPO overrides for the online filter and the
   second algorithm. Every arm is the bundled GRPO loop with one sampler.
4. **Runs.** Each arm x seed is one :func:`saerl_zoo.grpo.train` run with the
   same model, steps and hyperparameters, checkpointed under
   ``out/runs/<arm>/seed<k>``: an interrupted experiment resumes where it
   stopped, and a finished run is read back from its log.
5. **Report.** Final held-out accuracy (mean ± std over seeds), steps to the
   target accuracy (vanilla GRPO's final accuracy, as in the paper) and the
   ratio to vanilla, rollouts spent, the artifact table, and two plots;
   every number comes from the runs (see :func:`write_report`).

``policy`` trains another model on the curriculum the embedded model scored
(scorer transfer): the scores never depend on the policy being trained.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saerl_zoo.storage import atomic_path, write_json

__all__ = ["ARMS", "QUICK", "PoolFit", "ReproConfig", "arm_sampler", "fit_artifacts", "fit_pool", "run_reproduction", "summarize",
           "write_report"]


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training condition: where each SaeRL component comes from (None = off)."""

    features: str | None = "sae"  # "sae" | "raw": which featurization the probes and clusters read
    filter: str | None = "probe"  # "probe" | "random" (drop as many prompts as the probe, at random)
    difficulty: str | None = "probe"  # "probe" | "oracle" (the true level)
    clusters: bool = True
    grpo: tuple[tuple[str, Any], ...] = ()  # GRPOConfig overrides (second algorithm, online filter)

    @property
    def shuffled(self) -> bool:
        """No difficulty and no clusters: the order is a uniform shuffle of the kept prompts."""
        return self.difficulty is None and not self.clusters


VANILLA = Arm(features=None, filter=None, difficulty=None, clusters=False)
DR_GRPO = (("dr_grpo", True),)
ARMS: dict[str, Arm] = {
    "vanilla": VANILLA,
    "saerl": Arm(),
    # each component alone
    "filter_only": Arm(difficulty=None, clusters=False),
    "curriculum_only": Arm(filter=None, clusters=False),
    "diversity_only": Arm(filter=None, difficulty=None),
    # SaeRL without each component
    "saerl_no_filter": Arm(filter=None),
    "saerl_no_curriculum": Arm(difficulty=None),
    "saerl_no_diversity": Arm(clusters=False),
    # baselines
    "oracle_curriculum": Arm(filter=None, difficulty="oracle", clusters=False),
    "random_filter": Arm(filter="random", difficulty=None, clusters=False),
    "saerl_raw": Arm(features="raw"),
    "online_filter": dataclasses.replace(VANILLA, grpo=(("dynamic_sampling", True), ("oversample", 2))),
    # a second RL algorithm
    "vanilla_drgrpo": dataclasses.replace(VANILLA, grpo=DR_GRPO),
    "saerl_drgrpo": Arm(grpo=DR_GRPO),
}


def baseline_of(arm: str, present: set[str] | dict[str, Any]) -> str:
    """The vanilla run an arm is compared with: the one with the same RL algorithm when it ran."""
    if dict(ARMS[arm].grpo).get("dr_grpo") and "vanilla_drgrpo" in present:
        return "vanilla_drgrpo"
    return "vanilla"


@dataclasses.dataclass
class ReproConfig:
    """The whole experiment; every arm shares these settings."""

    out_dir: str = "runs/reproduce"
    arms: tuple[str, ...] = tuple(ARMS)
    seeds: tuple[int, ...] = (0, 1, 2)
    num_steps: int = 150
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int = 10
    lr: float = 3e-5
    temperature: float = 1.0
    eval_every: int = 10
    n_eval: int = 420  # held-out clean problems, stratified by family x level
    eval_seed: int = 1
    mixing: float = 0.1
    n_clusters: int | None = None  # default: diversity.default_n_clusters
    artifact_seed: int = 0  # probes, clusters and the random filter
    policy: str | None = None  # model to train; default: the embedded policy (which also scores)
    device: str = "cpu"
    threads: int = 1  # torch threads per run
    jobs: int = 1  # runs in parallel (processes)

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
        if "vanilla" not in self.arms:
            raise ValueError("the arms must include 'vanilla': the target accuracy is vanilla GRPO's final accuracy")
        if not self.seeds:
            raise ValueError("give at least one seed")
        for name in ("num_steps", "prompts_per_step", "group_size", "eval_every", "n_eval", "threads", "jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# Small enough for CI (a few minutes on 2 cores), large enough that every number is real.
QUICK = {"arms": tuple(ARMS), "seeds": (0, 1), "num_steps": 4, "prompts_per_step": 4, "group_size": 4,
         "eval_every": 2, "n_eval": 42}


# ----------------------------------------------------------------------------
# 1-2. pool, labels, artifacts


def load_pool() -> dict[str, Any]:
    """The embedded pool, its labelled subsets (as row numbers) and the ground truth."""
    from saerl_zoo.data import load_rows
    from saerl_zoo.embedded import default_path

    items = load_rows(default_path("prompts.jsonl"))
    truth = load_rows(default_path("ground_truth.jsonl"), None)
    row = {item["id"]: n for n, item in enumerate(items)}
    rates = load_rows(default_path("pass_rates.jsonl"), None)
    qlabels = load_rows(default_path("quality_labels.jsonl"), None)
    return {
        "items": items,
        "truth": truth,
        "difficulty_rows": [row[r["id"]] for r in rates],
        "difficulty_targets": [1.0 - r["pass_rate"] for r in rates],
        "quality_rows": [row[q["id"]] for q in qlabels],
        "quality_labels": [q["label"] for q in qlabels],
    }


def featurize_pool(kind: str, prompts: list[str], cache_dir: Path) -> Any:
    """Pooled codes of every prompt with the embedded SAE ("sae") or the raw residual stream ("raw")."""
    from saerl_zoo.embedded import default_path, load_default_model
    from saerl_zoo.featurizer import featurize, raw_activation_sae, resolve_layer
    from saerl_zoo.zoo.api import load_sae

    model, tokenizer = load_default_model()
    sae = load_sae(default_path("sae"))
    if kind == "raw":
        sae = raw_activation_sae(model.config.hidden_size, resolve_layer(model, sae, None))
    return featurize(prompts, model, tokenizer, sae, cache_dir=cache_dir / kind, progress=False)


@dataclasses.dataclass
class PoolFit:
    """The probes, clusters and curriculum fitted on one featurization of a labelled pool (see :func:`fit_pool`)."""

    difficulty_probe: Any
    quality_probe: Any
    clustering: Any
    curriculum: Any
    unlabelled: list[int]  # prompts neither probe was fitted on: the only ones scored against the truth
    vs_truth: dict[str, Any]  # tasks.evaluate_against_truth on the unlabelled prompts
    cpu_seconds: dict[str, float]  # this process's CPU time per fit (wall time depends on the neighbours' load)


def _cpu_timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    start = time.process_time()
    return fit(), time.process_time() - start


def fit_pool(features: Any, pool: dict[str, Any], *, n_clusters: int | None, seed: int, batch_size: int = 8) -> PoolFit:
    """Difficulty probe, quality probe, clusters and curriculum on ``features``, scored on the unlabelled prompts.

    ``pool`` holds ``difficulty_rows`` / ``difficulty_targets`` (1 - pass
    rate), ``quality_rows`` / ``quality_labels`` and ``truth``. One path for
    every study that fits the SaeRL artifacts on a labelled pool, so they
    all fit and score the same way; ``batch_size`` is only the saved
    curriculum's sampler setting.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from saerl_zoo.curriculum import curriculum_from_features
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.diversity import cluster
    from saerl_zoo.quality import QualityProbe
    from saerl_zoo.tasks import evaluate_against_truth

    X = features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # ElasticNetCV's small-alpha end of the path
        difficulty, difficulty_cpu = _cpu_timed(
            lambda: DifficultyProbe.fit(X[pool["difficulty_rows"]], pool["difficulty_targets"], seed=seed))
        quality, quality_cpu = _cpu_timed(
            lambda: QualityProbe.fit(X[pool["quality_rows"]], pool["quality_labels"], kind="logistic", seed=seed))
    clustering, clusters_cpu = _cpu_timed(lambda: cluster(X, n_clusters, seed=seed))
    curriculum = curriculum_from_features(X, difficulty_probe=difficulty, quality_probe=quality, clustering=clustering,
                                          batch_size=batch_size, seed=seed)
    truth = pool["truth"]
    unlabelled = unlabelled_rows(pool)
    vs_truth = evaluate_against_truth(curriculum.difficulty[unlabelled], curriculum.quality[unlabelled],
                                      [truth[n] for n in unlabelled])
    return PoolFit(difficulty, quality, clustering, curriculum, unlabelled, vs_truth,
                   {"difficulty": difficulty_cpu, "quality": quality_cpu, "clusters": clusters_cpu})


def unlabelled_rows(pool: dict[str, Any]) -> list[int]:
    """The prompts neither probe is fitted on: the only ones scored against the truth."""
    return sorted(set(range(len(pool["truth"]))) - set(pool["difficulty_rows"]) - set(pool["quality_rows"]))


def surface_artifacts(pool: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The surface baselines (`saerl_zoo.baselines`) fitted on the probes' labels and scored as `evaluate_against_truth`
    scores the probes: difficulty on the clean unlabelled prompts against the level, quality on every unlabelled one."""
    from saerl_zoo.baselines import surface_baselines

    texts, truth = [item["prompt"] for item in pool["items"]], pool["truth"]
    unlabelled = unlabelled_rows(pool)
    clean = [n for n in unlabelled if truth[n]["quality"] == 1]
    d = surface_baselines([texts[i] for i in pool["difficulty_rows"]], pool["difficulty_targets"], [texts[n] for n in clean],
                          [truth[n]["level"] for n in clean], "difficulty")
    q = surface_baselines([texts[i] for i in pool["quality_rows"]], pool["quality_labels"], [texts[n] for n in unlabelled],
                          [truth[n]["quality"] for n in unlabelled], "quality")
    return {name: {"difficulty_spearman_vs_level_clean": d[name]["spearman"], "quality_auroc_vs_truth": q[name]["auroc"]} for name in d}


def fit_artifacts(features: Any, pool: dict[str, Any], *, n_clusters: int | None, seed: int) -> dict[str, Any]:
    """:func:`fit_pool`'s arrays and the metrics the reproduction reports."""
    from saerl_zoo.diversity import purity

    fit = fit_pool(features, pool, n_clusters=n_clusters, seed=seed)
    curriculum, truth = fit.curriculum, pool["truth"]
    clean = np.array([t["quality"] == 1 for t in truth])
    families = np.array([t["family"] for t in truth])
    bad = ~clean
    metrics = {
        "difficulty_probe_heldout": fit.difficulty_probe.metrics,
        "quality_probe_heldout": fit.quality_probe.metrics,
        "n_unlabelled": len(fit.unlabelled),
        **fit.vs_truth,
        "n_clusters": int(fit.clustering.config.n_clusters),
        "cluster_purity_vs_family_clean": float(purity(fit.clustering.labels[clean], families[clean])),
        "kept": int(curriculum.keep.sum()),
        "broken_share_pool": float(bad.mean()),
        "broken_share_kept": float(bad[curriculum.keep].mean()),
    }
    return {"difficulty": curriculum.difficulty, "keep": curriculum.keep, "clusters": fit.clustering.labels,
            "metrics": metrics}


def pool_artifacts(kind: str, pool: dict[str, Any], out: Path, *, n_clusters: int | None, seed: int) -> dict[str, Any]:
    """:func:`fit_artifacts` on the pool featurized by ``kind``, cached in ``out/artifacts/<kind>``."""
    from saerl_zoo.storage import read_json, read_tensors, write_tensors

    folder = out / "artifacts" / kind
    key = {"n_clusters": n_clusters, "seed": seed, "version": 2}  # bump when the metrics change
    if (folder / "metrics.json").exists() and read_json(folder / "metrics.json")["key"] == key:
        arrays = read_tensors(folder / "scores.safetensors")
        return {"difficulty": arrays["difficulty"], "keep": arrays["keep"].astype(bool), "clusters": arrays["clusters"],
                "metrics": read_json(folder / "metrics.json")["metrics"]}
    features = featurize_pool(kind, [item["prompt"] for item in pool["items"]], out / "features")
    art = fit_artifacts(features, pool, n_clusters=n_clusters, seed=seed)
    write_tensors(folder / "scores.safetensors", {"difficulty": art["difficulty"], "keep": art["keep"].astype(np.uint8),
                                                  "clusters": art["clusters"]})
    write_json(folder / "metrics.json", {"key": key, "metrics": art["metrics"]})  # written last: marks the cache complete
    return art


# ----------------------------------------------------------------------------
# 3. arms


def arm_sampler(arm: Arm, seed: int, n: int, artifacts: dict[str, dict[str, Any]], truth: list[dict[str, Any]],
                config: ReproConfig) -> Any:
    """The arm's prompt sampler: SaeRLSampler with the arm's components, seeded by the run seed."""
    from saerl_zoo.sampler import SaeRLSampler

    art = artifacts.get(arm.features) if arm.features is not None else None
    keep = None
    if arm.filter == "probe":
        keep = art["keep"]
    elif arm.filter == "random":  # the same number of prompts as the probe keeps, chosen at random
        keep = np.zeros(n, dtype=bool)
        rng = np.random.default_rng((config.artifact_seed, seed, 7))
        keep[rng.choice(n, size=int(art["keep"].sum()), replace=False)] = True
    difficulty = None
    if arm.difficulty == "probe":
        difficulty = art["difficulty"]
    elif arm.difficulty == "oracle":  # off-topic noise has no level: it goes last, as unsolvable
        top = max(t["level"] for t in truth if t["level"] is not None)
        difficulty = np.array([top + 1 if t["level"] is None else t["level"] for t in truth], dtype=np.float64)
    return SaeRLSampler(
        n,
        batch_size=config.prompts_per_step,
        keep=keep,
        difficulty=difficulty,
        clusters=art["clusters"] if arm.clusters else None,
        mixing=1.0 if arm.shuffled else config.mixing,
        seed=seed,
    )


# ----------------------------------------------------------------------------
# 4. runs


def _run_dir(config: ReproConfig, arm: str, seed: int) -> Path:
    return Path(config.out_dir) / "runs" / arm / f"seed{seed}"


def _eval_set(config: ReproConfig) -> list[dict[str, Any]]:
    from saerl_zoo.tasks import build_eval_set

    return build_eval_set(config.n_eval, seed=config.eval_seed)[0]


def run_arm(config: ReproConfig, arm_name: str, seed: int, artifacts: dict[str, dict[str, Any]],
            pool: dict[str, Any], eval_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train one arm with one seed (resuming from its checkpoint) and return its log records."""
    from saerl_zoo.embedded import default_path
    from saerl_zoo.models import load_model
    from saerl_zoo.grpo import GRPOConfig, train
    from saerl_zoo.rewards import task_reward
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars would drown the run's own bar
    hf_logging.set_verbosity_error()
    torch.set_num_threads(config.threads)
    arm = ARMS[arm_name]
    model, tokenizer = load_model(config.policy or default_path("model"), device=config.device)
    grpo = GRPOConfig(
        prompts_per_step=config.prompts_per_step, group_size=config.group_size, max_new_tokens=config.max_new_tokens,
        lr=config.lr, temperature=config.temperature, num_steps=config.num_steps, eval_every=config.eval_every,
        eval_batch=128, seed=seed, checkpoint_every=max(1, config.num_steps // 4), out_dir=str(_run_dir(config, arm_name, seed)),
        log=False, **dict(arm.grpo),
    )
    sampler = arm_sampler(arm, seed, len(pool["items"]), artifacts, pool["truth"], config)
    history = train(model, tokenizer, pool["items"], sampler, task_reward, grpo, eval_rows=eval_rows)
    return history["train"] + history["eval"]


def _run_arm_job(args: tuple) -> tuple[str, int, list[dict[str, Any]]]:
    config, arm, seed, artifacts, pool, eval_rows = args
    return arm, seed, run_arm(config, arm, seed, artifacts, pool, eval_rows)


# ----------------------------------------------------------------------------
# 5. summary and report


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def steps_to_target(records: list[dict[str, Any]], target: float) -> int | None:
    """First evaluated step of a run log whose accuracy reaches ``target`` (None: never within the run)."""
    for record in sorted((r for r in records if r["type"] == "eval"), key=lambda r: r["step"]):
        if record["accuracy"] >= target - 1e-12:
            return int(record["step"])
    return None


def summarize(records: dict[str, dict[int, list[dict[str, Any]]]], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-arm numbers from the run logs: final accuracy, gain over the baseline, steps to target, rollouts,
    and how the served prompts were spent (informative groups; broken prompts, judged by the hidden truth)."""
    broken = np.array([t["quality"] == 0 for t in truth])
    def evals(arm: str, seed: int) -> list[dict[str, Any]]:
        return [r for r in records[arm][seed] if r["type"] == "eval"]

    def final(arm: str, seed: int) -> float:
        return max(evals(arm, seed), key=lambda r: r["step"])["accuracy"]

    arms: dict[str, Any] = {}
    for arm, by_seed in records.items():
        seeds = sorted(by_seed)
        accs = [final(arm, s) for s in seeds]
        mean, std = _mean_std(accs)
        first = [min(evals(arm, s), key=lambda r: r["step"])["accuracy"] for s in seeds]
        train = [[r for r in by_seed[s] if r["type"] == "train"] for s in seeds]
        groups = [np.asarray(r["group_rewards"]) for t in train for r in t]
        served = np.concatenate([r["indices"] for t in train for r in t])
        arms[arm] = {"final_accuracy": accs, "final_mean": mean, "final_std": std, "initial_mean": float(np.mean(first)),
                     "rollouts_mean": float(np.mean([sum(r["rollouts"] for r in t) for t in train])),
                     "informative_group_share": float(np.mean(np.concatenate([g.max(1) > g.min(1) for g in groups]))),
                     "broken_share_served": float(broken[served].mean()),
                     "train_seconds": float(sum(r["seconds"] for t in train for r in t)), "seeds": seeds}
    for arm, info in arms.items():
        base = baseline_of(arm, arms)
        target = arms[base]["final_mean"]
        steps = [steps_to_target(records[arm][s], target) for s in info["seeds"]]
        base_steps = [steps_to_target(records[base][s], target) for s in arms[base]["seeds"]]
        reached = [s for s in steps if s is not None]
        base_reached = [s for s in base_steps if s is not None]
        info.update(
            baseline=base,
            target_accuracy=target,
            gain_points=100 * (info["final_mean"] - target),
            steps_to_target=steps,
            steps_to_target_mean=float(np.mean(reached)) if reached else None,
            reached=f"{len(reached)}/{len(steps)}",
            steps_ratio=(float(np.mean(reached)) / float(np.mean(base_reached))
                         if reached and base_reached and np.mean(base_reached) > 0 else None),
        )
    return arms


def _curves(records: dict[int, list[dict[str, Any]]]) -> tuple[np.ndarray, np.ndarray]:
    steps = sorted({r["step"] for recs in records.values() for r in recs if r["type"] == "eval"})
    acc = np.array([[next(r["accuracy"] for r in recs if r["type"] == "eval" and r["step"] == s) for s in steps]
                    for recs in records.values()])
    return np.asarray(steps), acc


def plot_report(records: dict[str, dict[int, list[dict[str, Any]]]], summary: dict[str, Any], out: Path) -> dict[str, Path]:
    """Accuracy vs steps with seed bands (mean ± std) and the per-arm final-accuracy bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {"curves": out / "accuracy_vs_steps.png", "bars": out / "final_accuracy.png"}
    panels = [("GRPO", ["vanilla", "saerl", "oracle_curriculum", "saerl_raw", "online_filter"]),
              ("Dr. GRPO", ["vanilla_drgrpo", "saerl_drgrpo"])]
    panels = [(title, [a for a in arms if a in records]) for title, arms in panels]
    panels = [(title, arms) for title, arms in panels if arms]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, arms) in zip(axes[0], panels):
        for arm in arms:
            steps, acc = _curves(records[arm])
            mean, std = acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
            ax.plot(steps, mean, label=arm)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=f"{title}: held-out accuracy (mean ± std over seeds)", xlabel="step", ylabel="accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, paths["curves"])

    names = list(summary)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    means = [summary[a]["final_mean"] for a in names]
    stds = [summary[a]["final_std"] for a in names]
    ax.bar(range(len(names)), means, yerr=stds, capsize=3, color=["tab:gray" if "vanilla" in a else "tab:blue" for a in names])
    ax.axhline(summary["vanilla"]["final_mean"], color="k", lw=0.8, ls="--", label="vanilla GRPO")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    lo = min(m - s for m, s in zip(means, stds))
    ax.set(ylabel="final held-out accuracy", title="Arms and ablations (mean ± std over seeds)", ylim=(max(0, lo - 0.05), None))
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, paths["bars"])
    return paths


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


SURFACE_LABELS = {"tfidf_char_1_3": "character 1–3-gram TF-IDF", "length_digits": "length + digit count"}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def render_markdown(report: dict[str, Any]) -> str:
    """The report's markdown: every number is read from ``report`` (itself built from the runs)."""
    cfg, summary, art = report["config"], report["arms"], report["artifacts"]
    lines = [
        "# SaeRL vs vanilla GRPO on the embedded task",
        "",
        f"Command: `{report['command']}` (report written {report['date']})  ",
        f"Machine: {report['machine']}; {report['train_seconds']:.0f} s of training steps in all.  ",
        "Scorer (features, probes, clusters): the embedded default model and its SAE.  ",
        f"Policy: {report['policy']}; {cfg['num_steps']} steps x {cfg['prompts_per_step']} prompts x "
        f"{cfg['group_size']} completions, lr {cfg['lr']}, seeds {list(cfg['seeds'])}; held-out set: "
        f"{cfg['n_eval']} clean problems (greedy accuracy), of which {report['eval_prompts_in_pool']} also "
        "appear verbatim in the training pool.",
        "",
        "## Arms",
        "",
        "Target accuracy = the baseline's final accuracy (vanilla GRPO, or vanilla Dr. GRPO for the Dr. GRPO arm). "
        "Steps to target: first evaluation at or above it, averaged over the seeds that reach it.",
        "",
        "Informative groups: share of sampled groups whose rewards differ (the rest give no gradient). "
        "Broken served: share of trained prompts that are broken (hidden truth, evaluation only).",
        "",
        "| arm | final accuracy | Δ vs baseline (points) | steps to target | reached | ratio vs baseline | rollouts "
        "| informative groups | broken served |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in sorted(summary.items(), key=lambda kv: list(ARMS).index(kv[0])):  # JSON may have re-sorted them
        lines.append(
            f"| {arm} | {s['final_mean']:.3f} ± {s['final_std']:.3f} | {s['gain_points']:+.1f} | "
            f"{_fmt(s['steps_to_target_mean'], '.1f')} | {s['reached']} | {_fmt(s['steps_ratio'], '.2f')} | "
            f"{s['rollouts_mean']:.0f} | {s['informative_group_share']:.3f} | {s['broken_share_served']:.3f} |"
        )
    lines += [
        "",
        "## Artifacts: SAE features vs raw activations",
        "",
        f"Probes are fitted on the labelled 10% subsets only; the truth columns score them on the "
        f"{next(iter(art.values()))['n_unlabelled']} prompts outside both subsets (hidden ground truth).",
        "",
        "| features | difficulty probe held-out Spearman | Spearman vs true level (clean) | quality probe held-out AUROC | "
        "quality AUROC vs truth | cluster purity vs family (clean) | kept | broken share kept (pool) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, m in art.items():
        lines.append(
            f"| {kind} | {_fmt(m['difficulty_probe_heldout'].get('spearman'))} | {_fmt(m['difficulty_spearman_vs_level_clean'])} | "
            f"{_fmt(m['quality_probe_heldout'].get('auroc'))} | {_fmt(m['quality_auroc_vs_truth'])} | "
            f"{_fmt(m['cluster_purity_vs_family_clean'])} ({m['n_clusters']} clusters) | {m['kept']} | "
            f"{m['broken_share_kept']:.3f} ({m['broken_share_pool']:.3f}) |"
        )
    surface = report.get("surface_baselines") or {}
    for name, m in surface.items():
        lines.append(f"| surface baseline: {SURFACE_LABELS.get(name, name)} | — | {_fmt(m['difficulty_spearman_vs_level_clean'])} | — | "
                     f"{_fmt(m['quality_auroc_vs_truth'])} | — | — | — |")
    if surface and "sae" in art:
        best = {k: max(m[k] for m in surface.values()) for k in ("difficulty_spearman_vs_level_clean", "quality_auroc_vs_truth")}
        sae = art["sae"]
        lines += ["", "Surface baselines (`saerl_zoo.baselines`) are fitted on the same labelled subsets and scored on the same prompts. "
                      f"SAE probe minus the best of them: {sae['difficulty_spearman_vs_level_clean'] - best['difficulty_spearman_vs_level_clean']:+.3f} "
                      f"Spearman (difficulty), {sae['quality_auroc_vs_truth'] - best['quality_auroc_vs_truth']:+.3f} AUROC (quality); "
                      "what the SAE adds beyond the prompt's surface, negative where the surface alone ranks better."]
    van = summary["vanilla"]
    p, n = van["final_mean"], cfg["n_eval"]
    lines += ["", f"Noise scale: one accuracy on {n} held-out problems has a binomial standard error of "
                  f"{100 * math.sqrt(p * (1 - p) / n):.1f} points (at p = {p:.3f}); all arms share the same problems, so "
                  "differences between arms are paired, but gaps within the seed spread are not evidence either way."]
    if van["target_accuracy"] <= van["initial_mean"]:
        lines += ["", f"Note: vanilla GRPO ended at {van['final_mean']:.3f}, not above its starting accuracy "
                      f"{van['initial_mean']:.3f}, so every arm \"reaches\" the target at step 0 and the steps ratio is undefined."]
    if report.get("sae"):
        sae = report["sae"]
        lines += ["", f"SAE ({sae.get('architecture', '')}, d_sae {sae.get('d_sae')}, {sae.get('hook_name')}): "
                      f"L0 {_fmt(sae.get('l0'), '.1f')}, explained variance {_fmt(sae.get('explained_variance'))}, "
                      f"dead fraction {_fmt(sae.get('dead_fraction'))} on {sae.get('n_tokens')} held-out tokens "
                      "(measured by `python scripts/build_default.py --seed 0`)."]
    lines += ["", "![accuracy vs steps](accuracy_vs_steps.png)", "", "![final accuracy](final_accuracy.png)", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], records: dict[str, dict[int, list[dict[str, Any]]]], out: Path) -> dict[str, Path]:
    """report.json, report.md and the two plots, each written atomically."""
    paths = plot_report(records, report["arms"], out)
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_markdown(report))
    return {"json": out / "report.json", "markdown": out / "report.md", **paths}


def _machine() -> str:
    import platform

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}, torch {torch.__version__}"


def run_reproduction(config: ReproConfig, *, command: str = "", progress: bool = True) -> dict[str, Any]:
    """Run every arm x seed (resuming finished and interrupted runs) and write the report into ``out_dir``."""
    from saerl_zoo.embedded import default_path
    from saerl_zoo.extras import require
    from saerl_zoo.storage import read_json

    require("reproduce", "saerl-zoo reproduce")  # the eval set comes from reasoning-gym: say so before any work
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    pool = load_pool()
    # both featurizations always: the artifact table compares them whatever the arms read
    artifacts = {kind: pool_artifacts(kind, pool, out, n_clusters=config.n_clusters, seed=config.artifact_seed)
                 for kind in ("sae", "raw")}
    eval_rows = _eval_set(config)

    jobs = [(config, arm, seed, artifacts, pool, eval_rows) for arm in config.arms for seed in config.seeds]
    records: dict[str, dict[int, list[dict[str, Any]]]] = {arm: {} for arm in config.arms}
    bar = tqdm(total=len(jobs), desc="reproduce (runs)", unit="run", disable=not progress)
    if config.jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(config.jobs, mp_context=multiprocessing.get_context("spawn")) as pool_executor:
            for arm, seed, recs in pool_executor.map(_run_arm_job, jobs):
                records[arm][seed] = recs
                bar.update()
    else:
        for job in jobs:
            arm, seed, recs = _run_arm_job(job)
            records[arm][seed] = recs
            bar.update()
    bar.close()

    summary = summarize(records, pool["truth"])
    sae_metrics_path = default_path("sae_metrics.json")
    report = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": _machine(),
        "train_seconds": sum(a["train_seconds"] for a in summary.values()),
        "policy": config.policy or "embedded default policy (saerl_zoo/default/model)",
        # small level-1 problem spaces repeat across generator streams: say how far "held-out" is true
        "eval_prompts_in_pool": len({r["prompt"] for r in eval_rows} & {i["prompt"] for i in pool["items"]}),
        "config": dataclasses.asdict(config),
        "arms": summary,
        "artifacts": {kind: a["metrics"] for kind, a in sorted(artifacts.items())},
        "surface_baselines": surface_artifacts(pool),
        "sae": read_json(sae_metrics_path) if sae_metrics_path.exists() else None,
    }
    write_report(report, records, out)
    return report
