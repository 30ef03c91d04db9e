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
from saerl_zoo.probe import as_features
from saerl_zoo.quality import QualityProbe
from saerl_zoo.sampler import SaeRLSampler, quality_mask
from saerl_zoo.zoo.api import load_sae
from saerl_zoo.storage import atomic_path, read_json, read_tensors, write_json, write_tensors

SCORES_NAME = "scores.safetensors"
CONFIG_NAME = "curriculum.json"


@dataclasses.dataclass
class Curriculum:
    """Per-prompt SaeRL properties plus the sampler settings that turn them into an order."""

    keep: np.ndarray
    difficulty: np.ndarray | None
    quality: np.ndarray | None
    clusters: np.ndarray | None
    sampler_kwargs: dict[str, Any]  # batch_size, mixing, rotate, seed, drop_last
    provenance: dict[str, Any]  # which model, layer, SAE and probes produced the scores

    def __len__(self) -> int:
        return len(self.keep)

    def sampler(self, *, num_replicas: int = 1, rank: int = 0, **overrides: Any) -> SaeRLSampler:
        """A fresh sampler for this curriculum; every rank must pass the same overrides."""
        kwargs = {**self.sampler_kwargs, **overrides}
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
    provenance: dict[str, Any] | None = None,
) -> Curriculum:
    """Score, filter and cluster already-featurized prompts.

    Leaving out a probe (or `use_clusters=False`) switches that component off,
    so every ablation is one argument. Without a threshold or a keep fraction,
    a logistic quality probe keeps P(good) >= 0.5 and a ridge one the best 90%.
    """
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
        sampler_kwargs={"batch_size": batch_size, "mixing": mixing, "rotate": rotate, "seed": seed, "drop_last": False},
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
    sae = load_sae(sae, device=str(next(model.parameters()).device))
    point = resolve(model, sae, layer)
    features = featurize(
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


def summarize(curriculum: Curriculum) -> dict[str, Any]:
    """Per-batch statistics of the epoch-0 schedule: difficulty and cluster mix."""
    sampler = curriculum.sampler()
    batches = sampler.global_batches()
    per_batch = []
    for b, batch in enumerate(batches):
        entry: dict[str, Any] = {"batch": b, "size": len(batch)}
        if curriculum.difficulty is not None:
            entry["mean_difficulty"] = float(np.mean(curriculum.difficulty[batch]))
        if curriculum.clusters is not None:
            counts = np.bincount(curriculum.clusters[batch])
            entry["n_clusters"] = int(np.count_nonzero(counts))
            entry["dominant_cluster"] = int(counts.argmax())
            entry["dominant_fraction"] = float(counts.max() / len(batch))
        per_batch.append(entry)
    return {
        "n_prompts": len(curriculum),
        "n_kept": int(curriculum.keep.sum()),
        "n_batches": len(batches),
        "sampler": curriculum.sampler_kwargs,
        "provenance": curriculum.provenance,
        "batches": per_batch,
    }


def plot_curriculum(curriculum: Curriculum, path: str | os.PathLike[str]) -> Path:
    """PNG: predicted difficulty along the curriculum (top) and each batch's cluster mix (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = curriculum.sampler().global_batches()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, constrained_layout=True)
    xs = np.arange(len(batches))
    if curriculum.difficulty is not None:
        d = [curriculum.difficulty[b] for b in batches]
        top.fill_between(xs, [x.min() for x in d], [x.max() for x in d], alpha=0.25, label="range in batch")
        top.plot(xs, [x.mean() for x in d], lw=1.5, label="batch mean")
        top.legend(loc="upper left")
    top.set_ylabel("predicted difficulty")
    top.set_title(f"SaeRL curriculum: {int(curriculum.keep.sum())} of {len(curriculum)} prompts kept, {len(batches)} batches")
    if curriculum.clusters is not None:
        k = int(curriculum.clusters.max()) + 1
        cmap = plt.get_cmap("tab20", max(k, 1))
        bottoms = np.zeros(len(batches))
        counts = np.stack([np.bincount(curriculum.clusters[b], minlength=k) / len(b) for b in batches])
        for c in range(k):
            bottom.bar(xs, counts[:, c], bottom=bottoms, width=1.0, color=cmap(c), linewidth=0)
            bottoms += counts[:, c]
        bottom.set_ylabel("cluster mix")
    bottom.set_xlabel("batch (training order)")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def write_report(curriculum: Curriculum, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """report.json (all numbers), report.md (a table to read) and curriculum.png."""
    out_dir = Path(out_dir)
    summary = summarize(curriculum)
    write_json(out_dir / "report.json", summary)
    lines = [
        "# SaeRL curriculum report",
        "",
        f"- prompts: {summary['n_prompts']}, kept after the quality filter: {summary['n_kept']}",
        f"- batches: {summary['n_batches']} of {curriculum.sampler_kwargs['batch_size']}, mixing {curriculum.sampler_kwargs['mixing']}",
        f"- difficulty probe held-out: {curriculum.provenance.get('difficulty_probe')}",
        f"- quality probe held-out: {curriculum.provenance.get('quality_probe')}",
        "",
        "| batch | size | mean difficulty | clusters in batch | dominant cluster share |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b in summary["batches"]:
        lines.append(
            f"| {b['batch']} | {b['size']} | {b.get('mean_difficulty', float('nan')):.3f} | "
            f"{b.get('n_clusters', '-')} | {b.get('dominant_fraction', float('nan')):.2f} |"
        )
    with atomic_path(out_dir / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "plot": plot_curriculum(curriculum, out_dir / "curriculum.png")}
