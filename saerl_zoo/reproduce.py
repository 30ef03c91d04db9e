"""Reproduce SaeRL's claim (accuracy gain, steps to target) against vanilla GRPO on a CPU.

The experiment, in the order :func:`run_reproduction` runs it:

1. **Data.** Everything comes from one folder with
   ``scripts/build_default.py``'s layout (``ReproConfig.data``; default: the
   embedded default): the task pool with its broken prompts, the only labels
   the paper allows (pass rates from k rollouts and quality labels, each on
   a small subset), the hidden ground truth (family, level, quality, defect:
   read for evaluation and the oracle arm only), the policy, its SAE, and
   the held-out evaluation set (``eval_prompts.jsonl`` + ``eval_truth.jsonl``;
   a folder without one gets :func:`~saerl_zoo.tasks.build_eval_set`). The
   completion length is the one the folder's policy was built with.
2. **Artifacts.** The pool is featurized twice through the same path: with
   the policy's SAE and with :func:`~saerl_zoo.featurizer.raw_activation_sae`
   (the raw residual stream). On each, the difficulty probe, the quality
   probe and k-means are fitted, and scored against the ground truth.
3. **Arms.** :data:`ARMS` is data: each arm says which features it reads,
   which of filter / curriculum / clusters it uses (or their oracle, reverse
   and random stand-ins), its pacing and online feedback, plus GRPO
   overrides for the online filter and the second algorithm. Every arm is
   the bundled GRPO loop with one sampler.
4. **Runs.** Each arm x seed is one :func:`saerl_zoo.grpo.train` run with the
   same model, steps and hyperparameters, checkpointed under
   ``out/runs/<arm>/seed<k>``: an interrupted experiment resumes where it
   stopped, and a finished run is read back from its log. Run k of every
   arm uses seed k, so arms pair with their baseline seed by seed.
5. **Report.** Per arm: final held-out accuracy (mean ± sd), the paired
   difference to the baseline with a t-interval over seeds, area under the
   accuracy curve, steps to the target (the baseline's final accuracy,
   interpolated between evaluations), per-level curves, informative groups,
   the learning signal per step, and the true level and defects served by
   quarter; plus the smallest difference the seeds could detect. Every number
   comes from the run logs (see :func:`write_report`).

``policy`` trains another model on the curriculum the folder's model scored
(scorer transfer): the scores never depend on the policy being trained.
"""

from __future__ import annotations

import dataclasses
import json
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

from saerl_zoo.pacing import known_mean
from saerl_zoo.storage import atomic_path, write_json

__all__ = ["ARMS", "DEFAULT_ARMS", "QUICK", "PoolFit", "ReproConfig", "accuracy_auc", "arm_sampler", "data_folder",
           "fit_artifacts", "fit_pool", "learning_signal", "load_eval_set", "min_detectable_difference", "paired_interval",
           "run_reproduction", "steps_to_target", "summarize", "write_report"]


@dataclasses.dataclass(frozen=True)
class Arm:
    """One training condition: where each SaeRL component comes from (None = off)."""

    features: str | None = "sae"  # "sae" | "raw": which featurization the probes and clusters read
    filter: str | None = "probe"  # "probe" | "random" (drop as many prompts as the probe, at random)
    difficulty: str | None = "probe"  # "probe" | "reverse" (the probe's, hard -> easy) | "oracle" (the true level)
    clusters: bool = True
    pacing: str | None = "stages"  # "stages" (curriculum.DEFAULT_STAGES) | "competence" (over the run) | None
    feedback: bool = False  # online feedback (feedback.OnlineFeedback) re-orders by the rewards seen
    grpo: tuple[tuple[str, Any], ...] = ()  # GRPOConfig overrides (second algorithm, online filter)

    def __post_init__(self) -> None:
        if self.pacing is not None and self.difficulty is None:
            raise ValueError(f"pacing {self.pacing!r} orders prompts by difficulty: give a difficulty, or pacing=None")

    @property
    def shuffled(self) -> bool:
        """No difficulty and no clusters: the order is a uniform shuffle of the kept prompts."""
        return self.difficulty is None and not self.clusters


VANILLA = Arm(features=None, filter=None, difficulty=None, clusters=False, pacing=None)
DR_GRPO = (("dr_grpo", True),)
ARMS: dict[str, Arm] = {
    "vanilla": VANILLA,
    "saerl": Arm(),  # filter, clusters, and the curriculum paced in DEFAULT_STAGES difficulty stages
    # each component alone (the curriculum keeps saerl's pacing: pacing is how the curriculum acts)
    "filter_only": Arm(difficulty=None, clusters=False, pacing=None),
    "curriculum_only": Arm(filter=None, clusters=False),
    "diversity_only": Arm(filter=None, difficulty=None, pacing=None),
    # pacing
    "saerl_unpaced": Arm(pacing=None),  # stages=1: the order before pacing existed
    "saerl_competence": Arm(pacing="competence"),  # competence schedule over the run's steps (sweeps within the run)
    # controls and baselines
    "saerl_reverse": Arm(difficulty="reverse"),  # hard -> easy: a negative control
    "oracle_curriculum": Arm(filter=None, difficulty="oracle", clusters=False),
    "random_filter": Arm(filter="random", difficulty=None, clusters=False, pacing=None),
    "saerl_feedback": Arm(feedback=True),
    "online_filter": dataclasses.replace(VANILLA, grpo=(("dynamic_sampling", True), ("oversample", 2))),
    # a second RL algorithm
    "vanilla_drgrpo": dataclasses.replace(VANILLA, grpo=DR_GRPO),
    "saerl_drgrpo": Arm(grpo=DR_GRPO),
    # opt-in (not in DEFAULT_ARMS): SaeRL without each component, and SaeRL on raw activations
    "saerl_no_filter": Arm(filter=None),
    "saerl_no_curriculum": Arm(difficulty=None, pacing=None),
    "saerl_no_diversity": Arm(clusters=False),
    "saerl_raw": Arm(features="raw"),
}
OPT_IN = ("saerl_competence", "saerl_no_filter", "saerl_no_curriculum", "saerl_no_diversity", "saerl_raw")
DEFAULT_ARMS = tuple(a for a in ARMS if a not in OPT_IN)  # the arms issue 14 asks for


def baseline_of(arm: str, present: set[str] | dict[str, Any]) -> str:
    """The vanilla run an arm is compared with: the one with the same RL algorithm when it ran."""
    if dict(ARMS[arm].grpo).get("dr_grpo") and "vanilla_drgrpo" in present:
        return "vanilla_drgrpo"
    return "vanilla"


@dataclasses.dataclass
class ReproConfig:
    """The whole experiment; every arm shares these settings.

    ``data`` is one folder with ``scripts/build_default.py``'s layout: pool,
    labels, ground truth, policy, SAE and (when it has one) the held-out
    evaluation set; None is the embedded default. Run ``k`` of an arm uses
    RL seed ``k``: seeds ``0 .. seeds-1`` (``arm_seeds`` overrides the count
    per arm), so an arm's runs pair with its baseline's runs of the same seeds.
    """

    out_dir: str = "runs/reproduce"
    data: str | None = None
    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: int = 3
    arm_seeds: dict[str, int] = dataclasses.field(default_factory=lambda: {"vanilla": 5, "saerl": 5})
    num_steps: int = 150
    prompts_per_step: int = 8
    group_size: int = 8
    max_new_tokens: int | None = None  # default: the data folder's (competence.json / build_info.json); others refused
    lr: float = 3e-5
    temperature: float = 1.0
    eval_every: int = 10
    n_eval: int | None = None  # held-out clean problems in all, equal per family x level; None: the folder's whole set
    eval_seed: int = 1  # only for a folder without an evaluation set (tasks.build_eval_set)
    mixing: float = 0.1
    n_clusters: int | None = None  # default: diversity.default_n_clusters
    artifact_seed: int = 0  # probes, clusters and the random filter
    policy: str | None = None  # model to train; default: the data folder's policy (which also scores)
    device: str = "cpu"
    threads: int = 1  # torch threads per run
    jobs: int = 1  # runs in parallel (processes)

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
        if "vanilla" not in self.arms:
            raise ValueError("the arms must include 'vanilla': the target accuracy is vanilla GRPO's final accuracy")
        for name in ("seeds", "num_steps", "prompts_per_step", "group_size", "eval_every", "threads", "jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_new_tokens", "n_eval"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        bad = {a: k for a, k in self.arm_seeds.items() if a not in ARMS or isinstance(k, bool) or not isinstance(k, int) or k < 1}
        if bad:
            raise ValueError(f"arm_seeds must map known arms to seed counts >= 1, got {bad}")
        for arm in self.arms:  # every run of an arm needs its baseline's run of the same seed to pair with
            base = baseline_of(arm, set(self.arms))
            if self.n_seeds(arm) > self.n_seeds(base):
                raise ValueError(f"arm {arm!r} has {self.n_seeds(arm)} seeds but its baseline {base!r} only "
                                 f"{self.n_seeds(base)}: every seed needs a baseline run to pair with")

    def n_seeds(self, arm: str) -> int:
        """How many seeds (runs) ``arm`` gets."""
        return self.arm_seeds.get(arm, self.seeds)

    def seeds_of(self, arm: str) -> list[int]:
        return list(range(self.n_seeds(arm)))


# Small enough for CI (minutes on 2 cores), large enough that every number is real: vanilla gets one seed more
# than the other arms, so the pairing by seed is exercised.
QUICK = {"arms": tuple(ARMS), "seeds": 2, "arm_seeds": {"vanilla": 3}, "num_steps": 4, "prompts_per_step": 4,
         "group_size": 4, "eval_every": 2, "n_eval": 42}


# ----------------------------------------------------------------------------
# 1-2. pool, labels, artifacts


DATA_FILES = ("prompts.jsonl", "ground_truth.jsonl", "pass_rates.jsonl", "quality_labels.jsonl", "model", "sae")
EVAL_FILES = ("eval_prompts.jsonl", "eval_truth.jsonl")


def data_folder(config: ReproConfig) -> Path:
    """The one folder everything is read from (the embedded default unless ``config.data``), checked complete."""
    from saerl_zoo.embedded import DEFAULT_DIR
    from saerl_zoo.errors import UserError

    folder = Path(config.data) if config.data is not None else DEFAULT_DIR
    missing = [name for name in DATA_FILES if not (folder / name).exists()]
    if missing:
        raise UserError(f"data folder {folder} has no {', '.join(missing)}: give a folder with "
                        "scripts/build_default.py's layout (pool, labels, ground truth, model, sae)")
    present = [name for name in EVAL_FILES if (folder / name).exists()]
    if len(present) == 1:
        raise UserError(f"data folder {folder} has {present[0]} but not its partner: the evaluation set needs both "
                        f"{' and '.join(EVAL_FILES)}")
    return folder


def has_eval_set(folder: Path) -> bool:
    return all((folder / name).exists() for name in EVAL_FILES)


def data_max_new_tokens(folder: Path, given: int | None) -> tuple[int, str]:
    """The completion length the folder's policy was built and measured with, and the file that says so.

    A ``given`` length that differs is refused; it is used only when the folder says nothing.

    Why refuse: worked solutions are ~110 tokens; a shorter budget cuts them
    before the final answer and scores a right solution 0, silently.
    """
    from saerl_zoo.errors import UserError
    from saerl_zoo.storage import read_json

    built, source = None, None
    if (folder / "competence.json").exists():
        built, source = read_json(folder / "competence.json").get("max_new_tokens"), "competence.json"
    if built is None and (folder / "build_info.json").exists():
        built, source = read_json(folder / "build_info.json").get("args", {}).get("max_new_tokens"), "build_info.json"
    if built is None:
        if given is None:
            raise UserError(f"data folder {folder} does not say how long its completions are (no max_new_tokens in "
                            "competence.json or build_info.json): give --max-new-tokens")
        return given, "given"
    if given is not None and given != built:
        raise UserError(f"max_new_tokens {given} differs from the {built} the policy in {folder} was built and measured "
                        f"with ({source}): leave --max-new-tokens out")
    return int(built), f"the data folder's {source}"


def data_fingerprint(folder: Path) -> str:
    """sha256 of the folder's inputs (pool, labels, truth, evaluation set, policy and SAE weights).

    Why: a job folder resumed on other data would mix runs of two experiments
    into one report; :func:`run_reproduction` refuses that with this digest.
    """
    import hashlib

    digest = hashlib.sha256()
    files = [folder / name for name in (*DATA_FILES[:4], *EVAL_FILES) if (folder / name).is_file()]
    # every file of the policy and the SAE: a changed config, tokenizer or recorded hook/preprocessing is other data too
    files += sorted(p for sub in ("model", "sae") for p in (folder / sub).rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _same_ids(items: list[dict[str, Any]], truth: list[dict[str, Any]], what: str) -> None:
    from saerl_zoo.errors import UserError

    for n, (item, t) in enumerate(zip(items, truth)):
        if item.get("id") != t.get("id"):
            raise UserError(f"{what}: row {n + 1} is prompt {item.get('id')!r} but its truth row is {t.get('id')!r}")
    if len(items) != len(truth):
        raise UserError(f"{what}: {len(items)} prompts but {len(truth)} truth rows")


def load_pool(folder: Path) -> dict[str, Any]:
    """The folder's pool, its labelled subsets (as row numbers) and the ground truth."""
    from saerl_zoo.data import align_labels, load_rows

    items = load_rows(folder / "prompts.jsonl")
    truth = load_rows(folder / "ground_truth.jsonl", None)
    _same_ids(items, truth, f"{folder} prompts.jsonl vs ground_truth.jsonl")
    d_rows, pass_rates = align_labels(items, load_rows(folder / "pass_rates.jsonl", None), "pass_rate", bounds=(0, 1))
    q_rows, labels = align_labels(items, load_rows(folder / "quality_labels.jsonl", None), "label", binary=True)
    return {
        "items": items,
        "truth": truth,
        "difficulty_rows": d_rows.tolist(),
        "difficulty_targets": (1.0 - pass_rates).tolist(),
        "quality_rows": q_rows.tolist(),
        "quality_labels": labels.tolist(),
    }


def load_eval_set(folder: Path, n_eval: int | None, seed: int) -> list[dict[str, Any]]:
    """Held-out clean problems, each row carrying its ``family`` and ``level`` (for the per-level curves).

    From the folder's ``eval_prompts.jsonl`` + ``eval_truth.jsonl`` when it has
    them: ``n_eval`` in all, the first ``n_eval / cells`` of each family x
    level cell in file order (None: the whole set). Otherwise
    :func:`~saerl_zoo.tasks.build_eval_set` (``n_eval`` default 420).
    """
    from saerl_zoo.data import load_rows
    from saerl_zoo.errors import UserError

    if not has_eval_set(folder):
        from saerl_zoo.tasks import build_eval_set

        items, truth = build_eval_set(n_eval or 420, seed=seed)
    else:
        items, truth = load_rows(folder / EVAL_FILES[0]), load_rows(folder / EVAL_FILES[1], None)
        _same_ids(items, truth, f"{folder} {' vs '.join(EVAL_FILES)}")
        broken = [t["id"] for t in truth if t.get("quality") != 1]
        if broken:
            raise UserError(f"{folder / EVAL_FILES[1]}: {len(broken)} evaluation problems are not clean (quality != 1), "
                            f"e.g. {broken[0]!r}: the held-out set must hold only well-posed problems")
        if n_eval is not None:
            cells: dict[tuple[str, Any], list[int]] = {}
            for n, t in enumerate(truth):
                cells.setdefault((t["family"], t["level"]), []).append(n)
            per_cell, rest = divmod(n_eval, len(cells))
            smallest = min(len(rows) for rows in cells.values())
            if rest or per_cell > smallest:
                raise UserError(f"n_eval {n_eval} must be a multiple of the {len(cells)} family x level cells of "
                                f"{folder / EVAL_FILES[0]}, at most {smallest * len(cells)}")
            keep = sorted(n for rows in cells.values() for n in rows[:per_cell])
            items, truth = [items[n] for n in keep], [truth[n] for n in keep]
    return [{**item, "family": t["family"], "level": t["level"]} for item, t in zip(items, truth)]


def featurize_pool(kind: str, prompts: list[str], folder: Path, cache_dir: Path) -> Any:
    """Pooled codes of every prompt with the folder's SAE ("sae") or its model's raw residual stream ("raw")."""
    from saerl_zoo.featurizer import featurize, raw_activation_sae, resolve_layer
    from saerl_zoo.models import load_model
    from saerl_zoo.zoo.api import load_sae

    model, tokenizer = load_model(folder / "model")
    sae = load_sae(folder / "sae")
    if kind == "raw":
        sae = raw_activation_sae(model.config.hidden_size, resolve_layer(model, sae, None), like=sae)
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


def pool_artifacts(kind: str, pool: dict[str, Any], folder: Path, out: Path, *, n_clusters: int | None,
                   seed: int) -> dict[str, Any]:
    """:func:`fit_artifacts` on the folder's pool featurized by ``kind``, cached in ``out/artifacts/<kind>``."""
    from saerl_zoo.storage import read_json, read_tensors, write_tensors

    cache = out / "artifacts" / kind
    key = {"n_clusters": n_clusters, "seed": seed, "version": 2}  # bump when the metrics change
    if (cache / "metrics.json").exists() and read_json(cache / "metrics.json")["key"] == key:
        arrays = read_tensors(cache / "scores.safetensors")
        return {"difficulty": arrays["difficulty"], "keep": arrays["keep"].astype(bool), "clusters": arrays["clusters"],
                "metrics": read_json(cache / "metrics.json")["metrics"]}
    features = featurize_pool(kind, [item["prompt"] for item in pool["items"]], folder, out / "features")
    art = fit_artifacts(features, pool, n_clusters=n_clusters, seed=seed)
    write_tensors(cache / "scores.safetensors", {"difficulty": art["difficulty"], "keep": art["keep"].astype(np.uint8),
                                                  "clusters": art["clusters"]})
    write_json(cache / "metrics.json", {"key": key, "metrics": art["metrics"]})  # written last: marks the cache complete
    return art


# ----------------------------------------------------------------------------
# 3. arms


def arm_sampler(arm: Arm, seed: int, n: int, artifacts: dict[str, dict[str, Any]], truth: list[dict[str, Any]],
                config: ReproConfig) -> Any:
    """The arm's prompt sampler: SaeRLSampler with the arm's components, seeded by the run seed."""
    from saerl_zoo.curriculum import DEFAULT_STAGES
    from saerl_zoo.feedback import OnlineFeedback
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
    if arm.difficulty in ("probe", "reverse"):
        difficulty = art["difficulty"] if arm.difficulty == "probe" else -np.asarray(art["difficulty"])
    elif arm.difficulty == "oracle":  # off-topic noise has no level: it goes last, as unsolvable
        top = max(t["level"] for t in truth if t["level"] is not None)
        difficulty = np.array([top + 1 if t["level"] is None else t["level"] for t in truth], dtype=np.float64)
    pacing = {"stages": {"stages": DEFAULT_STAGES}, "competence": {"num_steps": config.num_steps}, None: {}}[arm.pacing]
    return SaeRLSampler(
        n,
        batch_size=config.prompts_per_step,
        keep=keep,
        difficulty=difficulty,
        clusters=art["clusters"] if arm.clusters else None,
        mixing=1.0 if arm.shuffled else config.mixing,
        seed=seed,
        feedback=OnlineFeedback() if arm.feedback else None,
        **pacing,
    )


# ----------------------------------------------------------------------------
# 4. runs


def _run_dir(config: ReproConfig, arm: str, seed: int) -> Path:
    return Path(config.out_dir) / "runs" / arm / f"seed{seed}"


def run_arm(config: ReproConfig, arm_name: str, seed: int, artifacts: dict[str, dict[str, Any]],
            pool: dict[str, Any], eval_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train one arm with one seed (resuming from its checkpoint) and return its log records."""
    from saerl_zoo.models import load_model
    from saerl_zoo.grpo import GRPOConfig, train
    from saerl_zoo.rewards import task_reward
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint "Writing model shards" bars would drown the run's own bar
    hf_logging.set_verbosity_error()
    torch.set_num_threads(config.threads)
    arm = ARMS[arm_name]
    grpo = GRPOConfig(
        prompts_per_step=config.prompts_per_step, group_size=config.group_size, max_new_tokens=config.max_new_tokens,
        lr=config.lr, temperature=config.temperature, num_steps=config.num_steps, eval_every=config.eval_every,
        eval_batch=128, seed=seed, checkpoint_every=max(1, config.num_steps // 4), out_dir=str(_run_dir(config, arm_name, seed)),
        log=False, **dict(arm.grpo),
    )
    run_dir = _run_dir(config, arm_name, seed)
    finished = _finished_run(run_dir, grpo)
    if finished is not None:
        return finished
    model, tokenizer = load_model(config.policy or data_folder(config) / "model", device=config.device)
    sampler = arm_sampler(arm, seed, len(pool["items"]), artifacts, pool["truth"], config)
    history = train(model, tokenizer, pool["items"], sampler, task_reward, grpo, eval_rows=eval_rows)
    write_json(run_dir / DONE_NAME, {"config": _comparable(grpo)})
    return history["train"] + history["eval"]


DONE_NAME = "done.json"  # written after a run's last step: its log alone then stands for the run


def _comparable(grpo: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(grpo), default=str))


def _finished_run(run_dir: Path, grpo: Any) -> list[dict[str, Any]] | None:
    """The log records of a run that finished with this very config, read without its checkpoints.

    Why: a finished run's checkpoints (weights and optimiser state, ~10 MB)
    are only needed to continue it; the report needs only its log, so a job
    folder can keep (or be given back) just ``log.jsonl`` + ``done.json`` per
    run and still resume the experiment. A run done with another config is
    refused rather than mixed in.
    """
    from saerl_zoo.errors import UserError
    from saerl_zoo.grpo import LOG_NAME
    from saerl_zoo.storage import read_json

    if not (run_dir / DONE_NAME).exists():
        return None
    if read_json(run_dir / DONE_NAME)["config"] != _comparable(grpo):
        raise UserError(f"{run_dir} finished with another GRPO config ({run_dir / DONE_NAME}): use another --out")
    return [json.loads(line) for line in (run_dir / LOG_NAME).read_text().splitlines() if line.strip()]


def _run_arm_job(args: tuple) -> tuple[str, int, list[dict[str, Any]]]:
    config, arm, seed, artifacts, pool, eval_rows = args
    return arm, seed, run_arm(config, arm, seed, artifacts, pool, eval_rows)


# ----------------------------------------------------------------------------
# 5. summary and report


ALPHA, POWER = 0.05, 0.8  # the minimum detectable difference's test level and power


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _evals(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in records if r["type"] == "eval"), key=lambda r: r["step"])


def steps_to_target(records: list[dict[str, Any]], target: float) -> float | None:
    """Step at which a run's accuracy first reaches ``target`` (None: never within the run).

    Linear interpolation between the last evaluation below the target and the
    first at or above it; the first evaluation's step when it already is.
    """
    previous = None
    for record in _evals(records):
        if record["accuracy"] >= target - 1e-12:
            if previous is None:
                return float(record["step"])
            rise = record["accuracy"] - previous["accuracy"]
            fraction = min(1.0, max(0.0, (target - previous["accuracy"]) / rise))
            return float(previous["step"] + fraction * (record["step"] - previous["step"]))
        previous = record
    return None


def accuracy_auc(records: list[dict[str, Any]]) -> float:
    """Area under a run's accuracy-vs-step curve (trapezoids between evaluations) over the steps it spans.

    Divided by the span, it is the run's mean accuracy: comparable across runs
    of one length, and it credits an arm that gets there earlier.
    """
    evals = _evals(records)
    steps = np.array([r["step"] for r in evals], dtype=np.float64)
    acc = np.array([r["accuracy"] for r in evals], dtype=np.float64)
    if len(evals) < 2:
        return float(acc[-1])
    return float(np.sum((acc[1:] + acc[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))


def learning_signal(record: dict[str, Any]) -> float:
    """Sum of p(1 - p) over the groups a step trained on, p = the group's mean reward.

    p(1 - p) is the reward variance a group of 0/1 rewards holds: 0 for a
    group all right or all wrong (no gradient), largest at p = 1/2. The step
    trained on the first ``groups_kept`` informative groups (all of them
    without dynamic sampling); uninformative groups add 0 either way.
    """
    rewards = np.asarray(record["group_rewards"], dtype=np.float64)
    p = rewards.mean(1)
    informative = rewards.max(1) > rewards.min(1)
    trained = informative & (np.cumsum(informative) <= record["groups_kept"])
    return float((p * (1 - p))[trained].sum())


def paired_interval(differences: list[float]) -> dict[str, Any]:
    """Mean of paired differences over seeds and its 95% t-interval (sd and interval None below 2 pairs)."""
    from scipy.stats import t

    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    if n < 2:
        return {"n": n, "mean": float(d.mean()), "sd": None, "ci": None}
    sd = float(d.std(ddof=1))
    half = float(t.ppf(1 - ALPHA / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": float(d.mean()), "sd": sd, "ci": [float(d.mean()) - half, float(d.mean()) + half]}


def min_detectable_difference(sd: float, n: int) -> float | None:
    """Smallest true paired difference a two-sided paired t-test over ``n`` seeds detects with power ``POWER``.

    ``(t[1 - ALPHA/2, n-1] + t[POWER, n-1]) * sqrt(2) * sd / sqrt(n)``: a
    paired difference of two runs that each spread like vanilla's seeds
    (``sd``) has sd ``sqrt(2) sd`` when the pairing removes nothing, the
    conservative case; central t quantiles stand in for the noncentral t.
    """
    from scipy.stats import t

    if n < 2:
        return None
    return float((t.ppf(1 - ALPHA / 2, n - 1) + t.ppf(POWER, n - 1)) * math.sqrt(2) * sd / math.sqrt(n))


def _by_quarter(per_step: list[np.ndarray], parts: int = 4) -> list[float | None]:
    """Mean of per-step values (nan = unknown, skipped) over each quarter of the run's steps."""
    bounds = np.linspace(0, len(per_step), parts + 1).round().astype(int)
    return [known_mean(np.concatenate(per_step[a:b])) if b > a else None for a, b in zip(bounds[:-1], bounds[1:])]


def _served(train: list[list[dict[str, Any]]], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """What the runs of one arm trained on, by quarter of the run: true level, broken share, learning signal.

    ``train`` holds each seed's train records; step ``k`` of every seed falls in the same quarter.
    """
    levels = np.array([np.nan if t["level"] is None else t["level"] for t in truth], dtype=np.float64)
    broken = np.array([t["quality"] == 0 for t in truth], dtype=np.float64)
    defects = np.array([t.get("defect") or "" for t in truth])
    steps = min(len(t) for t in train)
    served = [np.concatenate([t[k]["indices"] for t in train]).astype(np.int64) for k in range(steps)]
    signal = [np.array([learning_signal(t[k]) for t in train]) for k in range(steps)]
    everything = np.concatenate(served)
    return {
        "level_by_quarter": _by_quarter([levels[i] for i in served]),
        "broken_by_quarter": _by_quarter([broken[i] for i in served]),
        "signal_by_quarter": _by_quarter(signal),
        "level_by_step": [known_mean(levels[i]) for i in served],
        "broken_by_step": [float(broken[i].mean()) for i in served],
        "defect_share": {kind: float((defects[everything] == kind).mean()) for kind in sorted(set(defects) - {""})},
    }


def _level_curves(runs: list[list[dict[str, Any]]]) -> dict[str, Any] | None:
    """Mean accuracy per level over seeds at each evaluation (None when the logs carry no per-level accuracy)."""
    evals = [_evals(r) for r in runs]
    if not all("by_level" in e for run in evals for e in run):
        return None
    levels = list(evals[0][0]["by_level"])
    return {"steps": [e["step"] for e in evals[0]],
            "mean": {lv: [float(np.mean([run[k]["by_level"][lv] for run in evals])) for k in range(len(evals[0]))]
                     for lv in levels}}


def summarize(records: dict[str, dict[int, list[dict[str, Any]]]], truth: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-arm numbers from the run logs: final accuracy, paired difference to the baseline, steps to target,
    area under the curve, per-level curves, rollouts, and how the served prompts were spent (informative groups,
    learning signal; true level and broken prompts, judged by the hidden truth)."""
    broken = np.array([t["quality"] == 0 for t in truth])

    def final(arm: str, seed: int) -> float:
        return _evals(records[arm][seed])[-1]["accuracy"]

    arms: dict[str, Any] = {}
    for arm, by_seed in records.items():
        seeds = sorted(by_seed)
        accs = [final(arm, s) for s in seeds]
        mean, std = _mean_std(accs)
        aucs = [accuracy_auc(by_seed[s]) for s in seeds]
        first = [_evals(by_seed[s])[0]["accuracy"] for s in seeds]
        train = [[r for r in by_seed[s] if r["type"] == "train"] for s in seeds]
        groups = [np.asarray(r["group_rewards"]) for t in train for r in t]
        served = np.concatenate([r["indices"] for t in train for r in t])
        curves = _level_curves([by_seed[s] for s in seeds])
        arms[arm] = {"final_accuracy": accs, "final_mean": mean, "final_std": std, "initial_mean": float(np.mean(first)),
                     "auc": aucs, "auc_mean": float(np.mean(aucs)), "auc_std": _mean_std(aucs)[1],
                     "rollouts_mean": float(np.mean([sum(r["rollouts"] for r in t) for t in train])),
                     "informative_group_share": float(np.mean(np.concatenate([g.max(1) > g.min(1) for g in groups]))),
                     "learning_signal_mean": float(np.mean([learning_signal(r) for t in train for r in t])),
                     "broken_share_served": float(broken[served].mean()),
                     "served": _served(train, truth),
                     "by_level": curves,
                     "final_by_level": None if curves is None else {lv: c[-1] for lv, c in curves["mean"].items()},
                     "train_seconds": float(sum(r["seconds"] for t in train for r in t)), "seeds": seeds}
    for arm, info in arms.items():
        base = baseline_of(arm, arms)
        target = arms[base]["final_mean"]
        steps = [steps_to_target(records[arm][s], target) for s in info["seeds"]]
        base_steps = [steps_to_target(records[base][s], target) for s in arms[base]["seeds"]]
        reached = [s for s in steps if s is not None]
        base_reached = [s for s in base_steps if s is not None]
        paired = None
        if arm != base:
            common = [s for s in info["seeds"] if s in records[base]]
            paired = {"seeds": common,
                      "final_points": paired_interval([100 * (final(arm, s) - final(base, s)) for s in common]),
                      "auc_points": paired_interval([100 * (accuracy_auc(records[arm][s]) - accuracy_auc(records[base][s]))
                                                     for s in common])}
        info.update(
            baseline=base,
            target_accuracy=target,
            gain_points=100 * (info["final_mean"] - target),
            paired=paired,
            steps_to_target=steps,
            steps_to_target_mean=float(np.mean(reached)) if reached else None,
            reached=f"{len(reached)}/{len(steps)}",
            steps_ratio=(float(np.mean(reached)) / float(np.mean(base_reached))
                         if reached and base_reached and np.mean(base_reached) > 0 else None),
        )
    return arms


def power_analysis(summary: dict[str, Any]) -> dict[str, Any]:
    """The smallest paired difference in final accuracy (points) the run could detect, per seed count of its arms."""
    seeds = len(summary["vanilla"]["seeds"])
    sd = 100 * summary["vanilla"]["final_std"] if seeds > 1 else None  # one seed has no spread to measure
    counts = sorted({len(s["paired"]["seeds"]) for s in summary.values() if s["paired"] is not None})
    return {"alpha": ALPHA, "power": POWER, "vanilla_sd_points": sd, "vanilla_seeds": seeds,
            "mde_points": {str(n): None if sd is None else min_detectable_difference(sd, n) for n in counts}}


def _curves(records: dict[int, list[dict[str, Any]]]) -> tuple[np.ndarray, np.ndarray]:
    steps = sorted({r["step"] for recs in records.values() for r in recs if r["type"] == "eval"})
    acc = np.array([[next(r["accuracy"] for r in recs if r["type"] == "eval" and r["step"] == s) for s in steps]
                    for recs in records.values()])
    return np.asarray(steps), acc


CURVE_ARMS = ("vanilla", "saerl", "saerl_unpaced", "saerl_reverse", "oracle_curriculum", "saerl_feedback", "online_filter")


def _rolling(values: list[float | None], window: int) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array([np.nanmean(a[max(0, k - window + 1): k + 1]) if np.isfinite(a[max(0, k - window + 1): k + 1]).any()
                     else np.nan for k in range(len(a))])


def plot_report(records: dict[str, dict[int, list[dict[str, Any]]]], summary: dict[str, Any], out: Path) -> dict[str, Path]:
    """Accuracy vs steps with seed bands, per-level accuracy, the ablation bars with CIs, and what was served."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {"curves": out / "accuracy_vs_steps.png", "levels": out / "accuracy_by_level.png",
             "bars": out / "ablation_bars.png", "served": out / "served_over_time.png"}
    panels = [("GRPO", list(CURVE_ARMS)), ("Dr. GRPO", ["vanilla_drgrpo", "saerl_drgrpo"])]
    panels = [(title, [a for a in arms if a in records]) for title, arms in panels]
    panels = [(title, arms) for title, arms in panels if arms]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, arms) in zip(axes[0], panels):
        for arm in arms:
            steps, acc = _curves(records[arm])
            mean, std = acc.mean(0), acc.std(0, ddof=1) if len(acc) > 1 else np.zeros(acc.shape[1])
            ax.plot(steps, mean, label=arm)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=f"{title}: held-out accuracy (mean ± sd over seeds)", xlabel="step", ylabel="accuracy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, paths["curves"])

    level_arms = [a for a in ("vanilla", "saerl", "saerl_reverse", "oracle_curriculum") if summary.get(a, {}).get("by_level")]
    levels = list(summary["vanilla"]["by_level"]["mean"]) if summary["vanilla"].get("by_level") else []
    fig, axes = plt.subplots(1, max(1, len(levels)), figsize=(2.6 * max(1, len(levels)), 3), squeeze=False, sharey=True)
    for ax, level in zip(axes[0], levels):
        for arm in level_arms:
            curve = summary[arm]["by_level"]
            ax.plot(curve["steps"], curve["mean"][level], label=arm)
        ax.set(title=f"level {level}", xlabel="step")
    axes[0][0].set_ylabel("held-out accuracy (mean over seeds)")
    if levels:
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, paths["levels"])

    names = [a for a in summary if summary[a]["paired"] is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4))
    means = [summary[a]["paired"]["final_points"]["mean"] for a in names]
    cis = [summary[a]["paired"]["final_points"]["ci"] for a in names]
    err = np.array([[m - c[0], c[1] - m] if c else [0.0, 0.0] for m, c in zip(means, cis)]).T.reshape(2, len(names))
    ax.bar(range(len(names)), means, yerr=err, capsize=3, color="tab:blue")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylabel="final accuracy − baseline (points)", title="Paired difference to the baseline, 95% t-interval over seeds")
    fig.tight_layout()
    _save_figure(fig, paths["bars"])

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for arm in [a for a in (*CURVE_ARMS, "curriculum_only") if a in summary]:
        served = summary[arm]["served"]
        window = max(1, len(served["level_by_step"]) // 20)
        steps = np.arange(1, len(served["level_by_step"]) + 1)
        top.plot(steps, _rolling(served["level_by_step"], window), label=arm)
        bottom.plot(steps, _rolling(served["broken_by_step"], window), label=arm)
    top.set(ylabel="mean true level served", title="What each arm trained on (rolling mean over seeds)")
    bottom.set(ylabel="broken share served", xlabel="step")
    top.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, paths["served"])
    return paths


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


SURFACE_LABELS = {"tfidf_char_1_3": "character 1–3-gram TF-IDF", "length_digits": "length + digit count"}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _interval(p: dict[str, Any] | None, spec: str = "+.1f") -> str:
    """``+1.2 [-0.3, +2.7]`` (the paired mean and its 95% t-interval), ``—`` without a baseline."""
    if p is None:
        return "—"
    ci = f" [{p['ci'][0]:{spec}}, {p['ci'][1]:{spec}}]" if p["ci"] else " (1 pair: no interval)"
    return f"{p['mean']:{spec}}{ci}"


def _quarters(values: list[float | None], spec: str = ".2f") -> str:
    return " / ".join(_fmt(v, spec) for v in values)


def render_markdown(report: dict[str, Any]) -> str:
    """The report's markdown: every number is read from ``report`` (itself built from the runs)."""
    cfg, summary, art, ev, power = report["config"], report["arms"], report["artifacts"], report["eval"], report["power"]
    cov = report["coverage"]
    order = sorted(summary, key=list(ARMS).index)  # JSON may have re-sorted them
    lines = [
        "# SaeRL vs vanilla GRPO",
        "",
        f"Command: `{report['command']}` (report written {report['date']})  ",
        f"Machine: {report['machine']}; {report['train_seconds']:.0f} s of training steps in all.  ",
        f"Data: {report['data']} (pool, labels, ground truth, scorer: its model and SAE).  ",
        f"Policy: {report['policy']}; {cfg['num_steps']} steps x {cfg['prompts_per_step']} prompts x "
        f"{cfg['group_size']} completions of at most {cfg['max_new_tokens']} tokens ({report['max_new_tokens_source']}), "
        f"lr {cfg['lr']}, T {cfg['temperature']}.  ",
        f"Held-out set: {ev['n']} clean problems from {ev['source']}, {ev['per_cell']} per family x level "
        f"({ev['cells']} cells), greedy accuracy; {report['eval_prompts_in_pool']} of them also appear verbatim in the pool.",
        "",
        f"Each run trains on {cov['prompts_per_run']} prompts: {cov['prompts_per_run'] / cov['kept_by_sae_filter']:.2f} "
        f"epochs of the {cov['kept_by_sae_filter']} prompts the SAE quality filter keeps "
        f"({cov['prompts_per_run'] / cov['pool']:.2f} of the {cov['pool']}-prompt pool). Stage pacing spreads its "
        "stages over one epoch, so a run shorter than an epoch never reaches the hardest stages (saerl_competence "
        "paces over the run's steps instead).",
        "",
        "## Arms",
        "",
        "Seeds: run k of every arm uses RL seed k, so an arm's runs pair with its baseline's (vanilla GRPO, or vanilla "
        "Dr. GRPO for the Dr. GRPO arms) runs of the same seeds. Δ: the mean over those pairs of arm − baseline, in "
        "points, with its 95% t-interval over seeds (t with n − 1 degrees of freedom). AUC: area under the "
        "accuracy-vs-step curve (trapezoids between evaluations) divided by the steps, i.e. the run's mean accuracy. "
        "Target = the baseline's mean final accuracy; steps to target: linear interpolation between the last "
        "evaluation below it and the first at or above it, averaged over the seeds that reach it.",
        "",
        "| arm | seeds | final accuracy | Δ final (points) | AUC | Δ AUC (points) | steps to target | reached "
        "| ratio vs baseline | rollouts |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in order:
        s = summary[arm]
        p = s["paired"]
        lines.append(
            f"| {arm} | {len(s['seeds'])} | {s['final_mean']:.3f} ± {s['final_std']:.3f} | "
            f"{_interval(p and p['final_points'])} | {s['auc_mean']:.3f} ± {s['auc_std']:.3f} | "
            f"{_interval(p and p['auc_points'])} | {_fmt(s['steps_to_target_mean'], '.1f')} | {s['reached']} | "
            f"{_fmt(s['steps_ratio'], '.2f')} | {s['rollouts_mean']:.0f} |"
        )
    mde = ", ".join(f"{_fmt(v, '.1f')} points with {n} seeds" for n, v in power["mde_points"].items())
    mde = mde if power["vanilla_sd_points"] is not None else "— (vanilla ran one seed: no spread to measure)"
    lines += [
        "",
        "## What the run can detect",
        "",
        f"Vanilla's final accuracy spreads by sd = {_fmt(power['vanilla_sd_points'], '.2f')} points over its "
        f"{power['vanilla_seeds']} seeds. The smallest true paired difference a two-sided paired t-test "
        f"(α = {power['alpha']}) detects with power {power['power']}:",
        "",
        f"    MDE(n) = (t[1 − α/2, n − 1] + t[power, n − 1]) · √2 · sd_vanilla / √n  =  {mde or '— (no arm to compare)'}",
        "",
        "(√2 · sd: the sd of a difference of two runs that each spread like vanilla's, pairing assumed to remove "
        "nothing; central t quantiles approximate the noncentral t.) A Δ whose interval holds 0 and whose size is "
        "below the MDE is \"no effect detected\", not \"no effect\".",
        "",
        "## What each arm trained on",
        "",
        "Informative groups: share of sampled groups whose rewards differ (the rest give no gradient). Learning "
        "signal: Σ p̂(1 − p̂) over the groups a step trained on (p̂ = the group's mean reward), mean per step. "
        "True level and broken share: of the prompts rolled out (hidden truth, evaluation only; off-topic prompts "
        "have no level), by quarter of the run (Q1 / Q2 / Q3 / Q4).",
        "",
        "| arm | informative groups | learning signal / step | signal by quarter | true level by quarter "
        "| broken share by quarter | broken served |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in order:
        s, sv = summary[arm], summary[arm]["served"]
        lines.append(
            f"| {arm} | {s['informative_group_share']:.3f} | {s['learning_signal_mean']:.3f} | "
            f"{_quarters(sv['signal_by_quarter'])} | {_quarters(sv['level_by_quarter'])} | "
            f"{_quarters(sv['broken_by_quarter'], '.3f')} | {s['broken_share_served']:.3f} |"
        )
    kinds = sorted({k for s in summary.values() for k in s["served"]["defect_share"]})
    if kinds:
        lines += ["", "Share of rolled-out prompts by defect (a wrong reference answer is invisible from the prompt):", "",
                  "| arm | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        lines += [f"| {arm} | " + " | ".join(f"{summary[arm]['served']['defect_share'].get(k, 0.0):.3f}" for k in kinds)
                  + " |" for arm in order]
    levels = list(summary["vanilla"]["final_by_level"] or {})
    if levels:
        lines += ["", "## Final accuracy by level (mean over seeds)", "",
                  "| arm | " + " | ".join(f"L{lv}" for lv in levels) + " |", "|---|" + "---|" * len(levels)]
        lines += [f"| {arm} | " + " | ".join(f"{summary[arm]['final_by_level'][lv]:.3f}" for lv in levels) + " |"
                  for arm in order if summary[arm]["final_by_level"]]
    lines += [
        "",
        "## Artifacts: SAE features vs raw activations",
        "",
        f"Probes are fitted on the labelled subsets only; the truth columns score them on the "
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
    p, n = van["final_mean"], ev["n"]
    lines += ["", f"Noise scale: one accuracy on {n} held-out problems has a binomial standard error of "
                  f"{100 * math.sqrt(p * (1 - p) / n):.1f} points (at p = {p:.3f}); all arms share the same problems."]
    if van["target_accuracy"] <= van["initial_mean"]:
        lines += ["", f"Note: vanilla GRPO ended at {van['final_mean']:.3f}, not above its starting accuracy "
                      f"{van['initial_mean']:.3f}, so every arm \"reaches\" the target at step 0 and the steps ratio is undefined."]
    if report.get("sae"):
        sae = report["sae"]
        lines += ["", f"SAE ({sae.get('architecture', '')}, d_sae {sae.get('d_sae')}, {sae.get('hook_name')}): "
                      f"L0 {_fmt(sae.get('l0'), '.1f')}, explained variance {_fmt(sae.get('explained_variance'))}, "
                      f"dead fraction {_fmt(sae.get('dead_fraction'))} on {sae.get('n_tokens')} held-out tokens "
                      f"(the data folder's sae_metrics.json)."]
    lines += ["", "![accuracy vs steps](accuracy_vs_steps.png)", "", "![accuracy by level](accuracy_by_level.png)", "",
              "![ablation bars](ablation_bars.png)", "", "![served over time](served_over_time.png)", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], records: dict[str, dict[int, list[dict[str, Any]]]], out: Path) -> dict[str, Path]:
    """report.json, report.md and the plots, each written atomically."""
    paths = plot_report(records, report["arms"], out)
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(render_markdown(report))
    return {"json": out / "report.json", "markdown": out / "report.md", **paths}


def _machine() -> str:
    import platform

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}, torch {torch.__version__}"


# ReproConfig fields a job folder may change between invocations: which runs exist, and where they run
# `data` is the folder's path: its content is checked by `data_fingerprint`, so a moved folder is the same data
JOB_ONLY_FIELDS = ("out_dir", "data", "arms", "seeds", "arm_seeds", "jobs", "threads", "device")


def job_settings(config: ReproConfig, eval_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What every run of a job folder must share besides the data: the config (less `JOB_ONLY_FIELDS`) and the eval rows."""
    import hashlib

    settings = {k: v for k, v in dataclasses.asdict(config).items() if k not in JOB_ONLY_FIELDS}
    settings["eval_ids"] = hashlib.sha256(json.dumps([r["id"] for r in eval_rows]).encode()).hexdigest()
    return json.loads(json.dumps(settings, default=str))


def _claim_job_folder(out: Path, folder: Path, settings: dict[str, Any]) -> None:
    """Stamp ``out`` with the data and settings it runs on; refuse a job folder whose runs were made otherwise.

    Why: a finished run is read back from its log (see :func:`_finished_run`),
    so another policy, evaluation set, filter seed or step count given to the
    same folder would silently mix two experiments into one report.
    """
    from saerl_zoo.errors import UserError
    from saerl_zoo.storage import read_json

    stamp = {"data": str(folder), "fingerprint": data_fingerprint(folder), "settings": settings}
    path = out / "data.json"
    if path.exists():
        saved = read_json(path)
        if saved.get("fingerprint") != stamp["fingerprint"]:
            raise UserError(f"{out} holds runs on other data ({saved.get('data')}) than {folder}: the pool, labels, "
                            "evaluation set, policy or SAE differ; use another --out")
        differ = sorted(k for k in settings if saved.get("settings", {}).get(k) != settings[k])
        if differ:
            raise UserError(f"{out} holds runs made with other settings ({', '.join(differ)}; see {path}): use another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, stamp)


def run_reproduction(config: ReproConfig, *, command: str = "", progress: bool = True) -> dict[str, Any]:
    """Run every arm x seed (resuming finished and interrupted runs) and write the report into ``out_dir``."""
    from saerl_zoo.embedded import DEFAULT_DIR
    from saerl_zoo.extras import require
    from saerl_zoo.storage import read_json

    folder = data_folder(config)
    if not has_eval_set(folder):  # the eval set comes from reasoning-gym: say so before any work
        require("reproduce", "saerl-zoo reproduce")
    max_new_tokens, max_new_tokens_source = data_max_new_tokens(folder, config.max_new_tokens)
    config = dataclasses.replace(config, max_new_tokens=max_new_tokens)
    eval_rows = load_eval_set(folder, config.n_eval, config.eval_seed)
    out = Path(config.out_dir)
    _claim_job_folder(out, folder, job_settings(config, eval_rows))
    torch.set_num_threads(config.threads)
    pool = load_pool(folder)
    # both featurizations always: the artifact table compares them whatever the arms read
    artifacts = {kind: pool_artifacts(kind, pool, folder, out, n_clusters=config.n_clusters, seed=config.artifact_seed)
                 for kind in ("sae", "raw")}

    jobs = [(config, arm, seed, artifacts, pool, eval_rows) for arm in config.arms for seed in config.seeds_of(arm)]
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
    cells = {(r["family"], r["level"]) for r in eval_rows}
    per_cell = sorted({sum((r["family"], r["level"]) == c for r in eval_rows) for c in cells})
    report = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": _machine(),
        "train_seconds": sum(a["train_seconds"] for a in summary.values()),
        "data": "the embedded default (saerl_zoo/default)" if folder == DEFAULT_DIR else str(folder),
        "data_fingerprint": data_fingerprint(folder),
        "policy": config.policy or "the data folder's policy (model/)",
        "max_new_tokens_source": max_new_tokens_source,
        "eval": {"source": EVAL_FILES[0] if has_eval_set(folder) else "tasks.build_eval_set", "n": len(eval_rows),
                 "cells": len(cells), "per_cell": "-".join(map(str, sorted({per_cell[0], per_cell[-1]})))},
        "eval_prompts_in_pool": len({r["prompt"] for r in eval_rows} & {i["prompt"] for i in pool["items"]}),
        # stage pacing spreads its stages over one epoch: a shorter run never reaches the hardest ones
        "coverage": {"prompts_per_run": config.num_steps * config.prompts_per_step, "pool": len(pool["items"]),
                     "kept_by_sae_filter": int(artifacts["sae"]["keep"].sum())},
        "config": dataclasses.asdict(config),
        "arms": summary,
        "power": power_analysis(summary),
        "artifacts": {kind: a["metrics"] for kind, a in sorted(artifacts.items())},
        "surface_baselines": surface_artifacts(pool),
        "sae": read_json(folder / "sae_metrics.json") if (folder / "sae_metrics.json").exists() else None,
    }
    write_report(report, records, out)
    return report
