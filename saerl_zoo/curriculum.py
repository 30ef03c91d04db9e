"""The offline SaeRL pipeline in one call: prompts → features → properties → order.

`build_curriculum` featurizes a prompt pool, scores it with the difficulty and
quality probes, clusters it, and returns a `Curriculum`: the per-prompt scores,
the keep mask and the sampler settings, saved together so a trainer on another
machine (or another model, for scorer transfer) can rebuild the exact sampler.
`write_report` explains the result to a person: a table and a plot of
difficulty along the curriculum and the cluster mix of each batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saerl_zoo.difficulty import DifficultyProbe
from saerl_zoo.diversity import Clustering, cluster
from saerl_zoo.featurizer import featurize
from saerl_zoo.hooks import resolve
from saerl_zoo.pacing import Pacing, competence, known_mean, pacing_figures, stage_cuts
from saerl_zoo.probe import as_features
from saerl_zoo.quality import QualityProbe, quality_mask
from saerl_zoo.sampler import SaeRLSampler
from saerl_zoo.zoo.api import load_sae
from saerl_zoo.storage import atomic_path, read_json, read_tensors, write_json, write_tensors

SCORES_NAME = "scores.safetensors"
CONFIG_NAME = "curriculum.json"
DEFAULT_STAGES = 5  # the fewest stages meeting issue #13's pacing and diversity targets: benchmarks/results/pacing.md
PACING_KEYS = ("stages", "num_steps", "competence", "initial_competence")


@dataclasses.dataclass
class Curriculum:
    """Per-prompt SaeRL properties plus the sampler settings that turn them into an order."""

    keep: np.ndarray
    difficulty: np.ndarray | None
    quality: np.ndarray | None
    clusters: np.ndarray | None
    sampler_kwargs: dict[str, Any]  # batch_size, mixing, rotate, seed, drop_last and the pacing (PACING_KEYS)
    provenance: dict[str, Any]  # which model, layer, SAE and probes produced the scores

    def __len__(self) -> int:
        return len(self.keep)

    def sampler(self, *, num_replicas: int = 1, rank: int = 0, **overrides: Any) -> SaeRLSampler:
        """A fresh sampler for this curriculum; every rank must pass the same overrides.

        Overriding any pacing setting replaces the saved pacing as a whole, so
        ``sampler(num_steps=N)`` switches a staged curriculum to competence pacing.
        """
        saved = self.sampler_kwargs
        if any(key in overrides for key in PACING_KEYS):
            saved = {key: value for key, value in saved.items() if key not in PACING_KEYS}
        kwargs = {**saved, **overrides}
        return SaeRLSampler(
            len(self), clusters=self.clusters, difficulty=self.difficulty, keep=self.keep, num_replicas=num_replicas, rank=rank, **kwargs
        )

    def order(self) -> list[int]:
        """The epoch-0 order of kept prompt indices, for trainers that cannot take a sampler."""
        return self.sampler().order()

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        arrays = {"keep": self.keep.astype(np.uint8)}
        for name in ("difficulty", "quality", "clusters"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = np.asarray(value)
        write_tensors(path / SCORES_NAME, arrays)
        write_json(path / CONFIG_NAME, {"n_prompts": len(self), "sampler": self.sampler_kwargs, "provenance": self.provenance})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Curriculum:
        path = Path(path)
        config = read_json(path / CONFIG_NAME)
        t = read_tensors(path / SCORES_NAME)
        if len(t["keep"]) != config["n_prompts"]:
            raise ValueError(f"{path}: scores and config disagree on the number of prompts")
        return cls(
            keep=t["keep"].astype(bool),
            difficulty=t.get("difficulty"),
            quality=t.get("quality"),
            clusters=t.get("clusters"),
            sampler_kwargs=config["sampler"],
            provenance=config["provenance"],
        )


def resolve_pacing(
    difficulty_probe: DifficultyProbe | None,
    stages: int | None = None,
    num_steps: int | None = None,
    competence: str = "linear",
    initial_competence: float = 0.01,
) -> Pacing:
    """The pacing a curriculum gets: ``num_steps`` -> competence, else ``stages`` (default: see below).

    ``stages=None`` means ``DEFAULT_STAGES`` with a difficulty probe and 1
    without one (nothing to pace by); asking for pacing without a difficulty
    probe is refused.
    """
    if stages is None:
        stages = 1 if difficulty_probe is None or num_steps is not None else DEFAULT_STAGES
    pacing = Pacing(stages, num_steps, competence, initial_competence)
    if pacing.active and difficulty_probe is None:
        raise ValueError(f"pacing ({pacing}) orders prompts by difficulty: give a difficulty probe, or stages=1")
    return pacing


def curriculum_from_features(
    features: Any,
    *,
    difficulty_probe: DifficultyProbe | None = None,
    quality_probe: QualityProbe | None = None,
    n_clusters: int | None = None,
    clustering: Clustering | None = None,
    use_clusters: bool = True,
    quality_threshold: float | None = None,
    keep_fraction: float | None = None,
    batch_size: int = 8,
    mixing: float = 0.1,
    rotate: bool = True,
    seed: int = 0,
    stages: int | None = None,
    num_steps: int | None = None,
    competence: str = "linear",
    initial_competence: float = 0.01,
    provenance: dict[str, Any] | None = None,
) -> Curriculum:
    """Score, filter and cluster already-featurized prompts.

    Leaving out a probe (or `use_clusters=False`) switches that component off,
    so every ablation is one argument. Without a threshold or a keep fraction,
    a logistic quality probe keeps P(good) >= 0.5 and a ridge one the best 90%.

    Pacing (see :mod:`saerl_zoo.pacing`): ``num_steps`` (the run's optimiser
    steps) turns on the competence schedule; otherwise the order is cut into
    ``stages`` difficulty stages, by default ``DEFAULT_STAGES`` with a
    difficulty probe and 1 (nothing to pace by) without one.
    """
    pacing = resolve_pacing(difficulty_probe, stages, num_steps, competence, initial_competence)
    X = as_features(features)
    n = X.shape[0]
    difficulty = difficulty_probe.predict(X) if difficulty_probe is not None else None
    quality = quality_probe.predict(X) if quality_probe is not None else None
    if quality is None:
        if quality_threshold is not None or keep_fraction is not None:
            raise ValueError("a quality threshold or keep fraction needs a quality probe")
        keep = np.ones(n, dtype=bool)
    else:
        if quality_threshold is None and keep_fraction is None:
            if quality_probe.config.estimator == "logistic":
                quality_threshold = 0.5
            else:
                keep_fraction = 0.9
        keep = quality_mask(quality, threshold=quality_threshold, keep_fraction=keep_fraction)
    labels = None
    if use_clusters:
        labels = clustering.assign(X) if clustering is not None else cluster(X, n_clusters, seed=seed).labels
    info = dict(provenance or {})
    info.update(
        difficulty_probe=difficulty_probe.config.metrics if difficulty_probe is not None else None,
        quality_probe=quality_probe.config.metrics if quality_probe is not None else None,
        quality_threshold=quality_threshold,
        keep_fraction=keep_fraction,
        n_clusters=int(labels.max()) + 1 if labels is not None else None,
    )
    return Curriculum(
        keep=keep,
        difficulty=difficulty,
        quality=quality,
        clusters=labels,
        sampler_kwargs={"batch_size": batch_size, "mixing": mixing, "rotate": rotate, "seed": seed, "drop_last": False,
                        **dataclasses.asdict(pacing)},
        provenance=info,
    )


def build_curriculum(
    prompts: Sequence[str],
    model: Any,
    tokenizer: Any,
    sae: Any,
    *,
    layer: int | None = None,
    pooling: str = "mean",
    featurize_batch_size: int = 32,
    max_length: int = 512,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> Curriculum:
    """Featurize `prompts` through `model` and `sae`, then `curriculum_from_features(**kwargs)`."""
    # refuse a pacing the scores cannot support before the costly featurize
    resolve_pacing(kwargs.get("difficulty_probe"), **{key: kwargs[key] for key in PACING_KEYS if key in kwargs})
    sae = load_sae(sae, device=str(next(model.parameters()).device))
    point = resolve(model, sae, layer)
    features, info = featurize(
        prompts,
        model,
        tokenizer,
        sae,
        layer=layer,
        pooling=pooling,  # type: ignore[arg-type]
        batch_size=featurize_batch_size,
        max_length=max_length,
        cache_dir=cache_dir,
        progress=progress,
        return_info=True,
    )
    from saerl_zoo.transfer.scorer import scorer_record

    provenance = {
        "model": str(getattr(model, "name_or_path", "")),
        # who scored the prompts, so a trainer can tell when another policy uses this order (scorer transfer)
        "scorer": scorer_record(model, sae, difficulty_probe=kwargs.get("difficulty_probe"),
                                quality_probe=kwargs.get("quality_probe")),
        "layer": point.layer,
        "sae_hook": sae.cfg.metadata.get("hook_name"),
        "hook_point": point.describe(),
        "d_sae": int(sae.cfg.d_sae),
        "pooling": pooling,
        "featurize": dataclasses.asdict(info),  # tokens read per prompt, and how many prompts were cut to them
        **kwargs.pop("provenance", {}),
    }
    return curriculum_from_features(features, provenance=provenance, **kwargs)


def write_ordered_dataset(rows: Sequence[dict[str, Any]], curriculum: Curriculum, path: str | os.PathLike[str]) -> Path:
    """Write kept rows in curriculum order (jsonl or parquet), each tagged with its SaeRL scores."""
    if len(rows) != len(curriculum):
        raise ValueError(f"{len(rows)} rows for a curriculum of {len(curriculum)} prompts")
    path = Path(path)
    out = []
    for position, i in enumerate(curriculum.order()):
        row = dict(rows[i])
        row["saerl_position"] = position
        row["saerl_index"] = int(i)
        for name in ("difficulty", "quality", "clusters"):
            value = getattr(curriculum, name)
            if value is not None:
                row[f"saerl_{name.rstrip('s')}"] = value[i].item()
        out.append(row)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(out), tmp)
        elif path.suffix == ".jsonl":
            tmp.write_text("".join(json.dumps(r) + "\n" for r in out))
        else:
            raise ValueError(f"unsupported output type {path.suffix!r}: use .jsonl or .parquet")
    return path


def true_levels(rows: Sequence[dict[str, Any]], ground_truth: str | os.PathLike[str], field: str = "level") -> np.ndarray:
    """One ground-truth difficulty per row (``nan`` where a prompt has none), for measuring an order only.

    A ground-truth row whose level is null (off-topic text has no level) or that lacks the field counts as none.
    """
    from saerl_zoo.data import align_labels, load_rows

    truth = load_rows(ground_truth, prompt_field=None)
    index, values = align_labels(list(rows), truth.subset([i for i, r in enumerate(truth) if r.get(field) is not None]), field)
    levels = np.full(len(rows), np.nan)
    levels[index] = values
    return levels


def _stage_starts(curriculum: Curriculum, sampler: SaeRLSampler) -> list[int]:
    """First batch of each difficulty stage after the first (stage sizes are whole batches)."""
    if sampler.pacing.stages == 1:
        return []
    kept = int(curriculum.keep.sum())
    return [cut // sampler.global_batch_size for cut in stage_cuts(kept, sampler.pacing.stages, sampler.global_batch_size)]


def summarize(curriculum: Curriculum, levels: np.ndarray | None = None) -> dict[str, Any]:
    """Per-batch statistics of the epoch-0 schedule and its pacing figures (see :func:`~saerl_zoo.pacing.pacing_figures`).

    ``levels`` (ground truth per prompt, ``nan`` where unknown) adds true-level
    figures. With competence pacing over fewer steps than the epoch has
    batches, the figures are also given for the run alone (``run``).
    """
    sampler = curriculum.sampler()
    batches = sampler.global_batches()
    starts = _stage_starts(curriculum, sampler)
    per_batch = []
    for b, batch in enumerate(batches):
        entry: dict[str, Any] = {"batch": b, "size": len(batch), "stage": int(np.searchsorted(starts, b, side="right"))}
        if curriculum.difficulty is not None:
            entry["mean_difficulty"] = float(np.mean(curriculum.difficulty[batch]))
        if levels is not None:
            entry["mean_true_level"] = known_mean(levels[batch])
        if curriculum.clusters is not None:
            counts = np.bincount(curriculum.clusters[batch])
            entry["n_clusters"] = int(np.count_nonzero(counts))
            entry["dominant_cluster"] = int(counts.argmax())
            entry["dominant_fraction"] = float(counts.max() / len(batch))
        per_batch.append(entry)
    pacing = {**sampler.pacing.describe(), "stage_starts": starts}
    pacing["figures"] = pacing_figures(batches, curriculum.difficulty, curriculum.clusters, levels)
    steps = sampler.pacing.num_steps
    if steps is not None and steps < len(batches):
        pacing["run"] = pacing_figures(batches[:steps], curriculum.difficulty, curriculum.clusters, levels)
    summary = {
        "n_prompts": len(curriculum),
        "n_kept": int(curriculum.keep.sum()),
        "n_batches": len(batches),
        "sampler": curriculum.sampler_kwargs,
        "provenance": curriculum.provenance,
        "pacing": pacing,
        "batches": per_batch,
    }
    if curriculum.difficulty is not None:
        kept = curriculum.difficulty[curriculum.keep]
        summary["difficulty_scale"] = {
            "target": "1 - pass rate", "kept_min": float(kept.min()), "kept_max": float(kept.max()),
            "kept_above_1": int((kept > 1).sum()), "kept_below_0": int((kept < 0).sum()),
        }
    return summary


def _rolling(values: Sequence[float], width: int) -> np.ndarray:
    """Centred moving average that shrinks its window at the ends (no padding artefacts)."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    kernel = np.ones(max(1, min(width, len(values))))  # a window longer than the series would lengthen the output
    total = np.convolve(np.where(ok, values, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(np.float64), kernel, mode="same")
    return np.divide(total, count, out=np.full(len(values), np.nan), where=count > 0)


def plot_curriculum(curriculum: Curriculum, path: str | os.PathLike[str], summary: dict[str, Any] | None = None) -> Path:
    """PNG: difficulty along the run with stage boundaries (top), batch diversity (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summary or summarize(curriculum)
    rows = summary["batches"]
    window = summary["pacing"]["figures"]["window"]
    xs = np.arange(len(rows))
    smooth = max(3, len(rows) // 40)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    pacing = summary["pacing"]
    design = (f"competence ({pacing['competence']}) over {pacing['num_steps']} steps" if "num_steps" in pacing
              else f"{len(pacing['stage_starts']) + 1} difficulty stages" if pacing["stage_starts"] else "unpaced")
    top.set_title(f"SaeRL curriculum: {summary['n_kept']} of {summary['n_prompts']} prompts kept, "
                  f"{len(rows)} batches, {design}")
    if curriculum.difficulty is not None:
        mean = np.clip([r["mean_difficulty"] for r in rows], 0, 1)
        top.plot(xs, mean, lw=0.6, color="tab:blue", alpha=0.35, label="batch mean")
        top.plot(xs, _rolling(mean, smooth), lw=2, color="tab:blue", label=f"moving average of {smooth} batches")
        top.set_ylim(0, 1.02)
    top.set_ylabel("predicted difficulty\n(1 - pass rate, clipped to [0, 1])")
    for start in pacing["stage_starts"]:
        top.axvline(start - 0.5, color="grey", ls="--", lw=1)
    if pacing["stage_starts"]:
        top.plot([], [], color="grey", ls="--", lw=1, label="stage boundary")
    if "num_steps" in pacing:
        horizon = min(pacing["num_steps"], len(rows))
        allowed = [competence(t, horizon, pacing["competence"], pacing["initial_competence"]) for t in xs]
        top.plot(xs, allowed, color="tab:green", ls=":", lw=1.5, label="competence c(t): easiest fraction allowed")
        if pacing["num_steps"] < len(rows):
            top.axvline(pacing["num_steps"] - 0.5, color="tab:green", lw=1, label=f"end of the run ({pacing['num_steps']} steps)")
    if rows and "mean_true_level" in rows[0]:
        level = np.array([np.nan if r["mean_true_level"] is None else r["mean_true_level"] for r in rows])
        twin = top.twinx()
        twin.plot(xs, _rolling(level, smooth), color="tab:orange", lw=2, label="true level (moving average)")
        twin.set_ylabel("true level (ground truth)", color="tab:orange")
        twin.legend(loc="lower right")
    top.legend(loc="upper left", fontsize=8)

    if curriculum.clusters is not None:
        labels = [curriculum.clusters[r] for r in curriculum.sampler().global_batches()]
        width = min(window, len(rows))
        distinct = [len(np.unique(np.concatenate(labels[s : s + width]))) for s in range(len(rows) - width + 1)]
        bottom.plot(np.arange(len(distinct)) + (width - 1) / 2, distinct, color="tab:purple", lw=2,
                    label=f"distinct clusters in {width} consecutive batches (centred)")
        bottom.set_ylabel("distinct clusters per window", color="tab:purple")
        bottom.set_ylim(0, int(curriculum.clusters.max()) + 2)
        share = bottom.twinx()
        share.plot(xs, _rolling([r["dominant_fraction"] for r in rows], smooth), color="tab:red", lw=1.5,
                   label="dominant-cluster share of a batch (moving average)")
        share.set_ylim(0, 1.05)
        share.set_ylabel("dominant-cluster share", color="tab:red")
        bottom.legend(loc="lower left", fontsize=8)
        share.legend(loc="lower right", fontsize=8)
    bottom.set_xlabel("batch (training order)")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def _truncation_lines(featurized: dict[str, int] | None) -> list[str]:
    """The report's line on truncation, when the curriculum was featurized here (not from given features)."""
    if featurized is None:
        return []
    return [f"- prompts longer than {featurized['max_length']} tokens (truncated to it): {featurized['n_truncated']} "
            f"of {featurized['n_prompts']}"]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return " / ".join(_fmt(v) for v in value)
    return str(value)


FIGURE_NAMES = {
    "spearman_position_difficulty": "Spearman(prompt position, predicted difficulty)",
    "spearman_batch_difficulty": "Spearman(batch index, batch-mean predicted difficulty)",
    "difficulty_by_quarter": "mean predicted difficulty by quarter of the batches",
    "spearman_position_level": "Spearman(prompt position, true level)",
    "level_by_quarter": "mean true level by quarter of the batches",
    "distinct_clusters_per_window_min": "distinct clusters per window of {window} batches, fewest",
    "distinct_clusters_per_window_mean": "distinct clusters per window of {window} batches, mean",
    "dominant_share_mean": "dominant-cluster share of a batch, mean",
}


def _figure_table(figures: dict[str, Any], heading: str) -> list[str]:
    lines = [f"| measure | {heading} |", "|---|---:|"]
    for key, name in FIGURE_NAMES.items():
        if key in figures:
            lines.append(f"| {name.format(window=figures['window'])} | {_fmt(figures[key])} |")
    return lines


def write_report(curriculum: Curriculum, out_dir: str | os.PathLike[str], levels: np.ndarray | None = None) -> dict[str, Path]:
    """report.json (all numbers), report.md (tables to read) and curriculum.png.

    ``levels`` (ground truth per prompt) adds the true-level figures; it is
    only measured against, never used to order.
    """
    out_dir = Path(out_dir)
    summary = summarize(curriculum, levels)
    write_json(out_dir / "report.json", summary)
    pacing, kwargs = summary["pacing"], curriculum.sampler_kwargs
    if "num_steps" in pacing:
        design = (f"competence schedule ({pacing['competence']}, initial competence {pacing['initial_competence']}) "
                  f"over {pacing['num_steps']} steps: batch t draws only from the easiest c(t) of the kept prompts")
    elif pacing["stage_starts"]:
        design = (f"{len(pacing['stage_starts']) + 1} difficulty stages (quantiles of predicted difficulty), "
                  f"starting at batches {', '.join(map(str, [0, *pacing['stage_starts']]))}")
    else:
        design = "none (one stage: clusters rotate over the whole epoch)"
    lines = [
        "# SaeRL curriculum report",
        "",
        f"- prompts: {summary['n_prompts']}, kept after the quality filter: {summary['n_kept']}",
        f"- batches: {summary['n_batches']} of {kwargs['batch_size']}, mixing {kwargs['mixing']}",
        f"- pacing: {design}",
        *_truncation_lines(curriculum.provenance.get("featurize")),
    ]
    scale = summary.get("difficulty_scale")
    if scale is not None:
        lines.append(
            f"- difficulty scale: the probe predicts 1 - pass rate (0 = always solved, 1 = never). It is a linear "
            f"model, so it can extrapolate past that range: {scale['kept_above_1']} kept prompts are predicted above 1 "
            f"(max {scale['kept_max']:.2f}) and {scale['kept_below_0']} below 0 (min {scale['kept_min']:.2f}). "
            "The order uses the raw values (above 1 = harder than anything labelled); the plot clips them to [0, 1]."
        )
    probes = [(name, curriculum.provenance.get(f"{name}_probe")) for name in ("difficulty", "quality")]
    if any(metrics for _, metrics in probes):
        lines += ["", "## Probes, held-out", "", "| probe | metric | value |", "|---|---|---:|"]
        for name, metrics in probes:
            for metric, value in (metrics or {}).items():
                lines.append(f"| {name} | {metric} | {_fmt(value)} |")
    lines += ["", "## Pacing and diversity", ""]
    if "run" in pacing:
        lines += [f"Over the run (the first {pacing['num_steps']} batches):", ""]
        lines += _figure_table(pacing["run"], "run")
        lines += ["", "Over the whole epoch:", ""]
    lines += _figure_table(pacing["figures"], "epoch")
    has_levels = levels is not None
    lines += [
        "",
        "## Batches",
        "",
        "| batch | stage | size | mean difficulty | clusters in batch | dominant cluster share |"
        + (" mean true level |" if has_levels else ""),
        "|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_levels else ""),
    ]
    for b in summary["batches"]:
        row = (f"| {b['batch']} | {b['stage']} | {b['size']} | {_fmt(b.get('mean_difficulty'))} | "
               f"{b.get('n_clusters', '-')} | {_fmt(b.get('dominant_fraction'))} |")
        lines.append(row + (f" {_fmt(b['mean_true_level'])} |" if has_levels else ""))
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    plot = plot_curriculum(curriculum, out_dir / "curriculum.png", summary)
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": plot}


def default_curriculum(prompts: Sequence[str], save_to: str | os.PathLike[str] | None = None, **kwargs: Any) -> Curriculum:
    """A curriculum over ``prompts`` scored by the embedded default: its policy, SAE and both probes.

    Why: the runnable examples under ``adapters/`` must work on a fresh CPU
    machine with nothing downloaded. The scores are only meaningful for prompts
    like the embedded pool; for your own model build the curriculum with
    ``saerl-zoo curriculum --model ... --sae ... --difficulty-probe ... --quality-probe ...``.
    ``save_to`` saves it there (a folder :meth:`Curriculum.load` reads);
    ``kwargs`` go to :func:`build_curriculum` (``batch_size``, ``mixing``, ``seed``, ...).
    """
    from saerl_zoo.embedded import default_path, load_default_model

    model, tokenizer = load_default_model()
    result = build_curriculum(
        list(prompts), model, tokenizer, default_path("sae"),
        difficulty_probe=DifficultyProbe.load(default_path("difficulty_probe")),
        quality_probe=QualityProbe.load(default_path("quality_probe")),
        **kwargs,
    )
    if save_to is not None:
        result.save(save_to)
    return result
