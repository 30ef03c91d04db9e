#!/usr/bin/env python
"""Pacing on the embedded default (issue #13): old vs new order, and the numbers behind the defaults.

Builds the embedded-default curriculum (embedded policy, SAE, probes, 2000
prompts; featurizing takes about half a minute on a CPU), then measures the
served order of each pacing design against the predicted difficulty, the
hidden ground-truth level (``saerl_zoo/default/ground_truth.jsonl``, used only
to measure) and the clusters:

* ``unpaced`` (``stages=1``: the order before pacing existed);
* ``stages=S`` for S = 2 ... 8;
* competence (linear / sqrt, initial competence 0.01 / 0.1) for runs of the
  whole epoch, half of it and 50 steps, measured over the run's batches.

Each figure is the median over sampler seeds 0-4 (``--seeds``), with the
worst seed beside the acceptance figures. Writes
``benchmarks/results/pacing.{md,json}`` and the default curriculum's report
and plot (``benchmarks/results/pacing/``; the README shows its
``curriculum.png``).

Run: ``python scripts/pacing_table.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saerl_zoo.curriculum import Curriculum, build_curriculum, true_levels, write_report  # noqa: E402
from saerl_zoo.data import load_rows  # noqa: E402
from saerl_zoo.difficulty import DifficultyProbe  # noqa: E402
from saerl_zoo.embedded import default_path, load_default_model  # noqa: E402
from saerl_zoo.pacing import Pacing, pacing_figures  # noqa: E402
from saerl_zoo.quality import QualityProbe  # noqa: E402
from saerl_zoo.storage import atomic_path, write_json  # noqa: E402

COLUMNS = [
    ("spearman_position_difficulty", "ρ(pos, pred)"),
    ("spearman_batch_difficulty", "ρ(batch, batch-mean pred)"),
    ("spearman_position_level", "ρ(pos, true level)"),
    ("level_by_quarter", "true level by quarter"),
    ("distinct_clusters_per_window_min", "distinct clusters / 32 batches, fewest"),
    ("distinct_clusters_per_window_mean", "… mean"),
    ("dominant_share_mean", "dominant-cluster share"),
]


def embedded_curriculum() -> tuple[Curriculum, np.ndarray]:
    """The curriculum `saerl-zoo curriculum` builds on the embedded default, and the true levels."""
    rows = load_rows(default_path("prompts.jsonl"))
    model, tokenizer = load_default_model()
    curriculum = build_curriculum(
        [r["prompt"] for r in rows], model, tokenizer, default_path("sae"), progress=False,
        difficulty_probe=DifficultyProbe.load(default_path("difficulty_probe")),
        quality_probe=QualityProbe.load(default_path("quality_probe")),
    )
    return curriculum, true_levels(rows, default_path("ground_truth.jsonl"))


def measure(curriculum: Curriculum, levels: np.ndarray, seeds: list[int], steps: int | None = None, **pacing: Any) -> dict[str, Any]:
    """Median (and worst) over seeds of the pacing figures over the first ``steps`` batches.

    ``steps`` defaults to a competence run's ``num_steps``, else the whole epoch.
    """
    kept = np.flatnonzero(curriculum.keep)
    ranked = kept[np.argsort(curriculum.difficulty[kept], kind="stable")]
    quantile = np.empty(len(curriculum))
    quantile[ranked] = (np.arange(len(ranked)) + 1) / len(ranked)
    per_seed = []
    for seed in seeds:
        batches = curriculum.sampler(seed=seed, **pacing).global_batches()
        run = batches[: steps or pacing.get("num_steps") or len(batches)]
        figures = pacing_figures(run, curriculum.difficulty, curriculum.clusters, levels)
        half = [i for b in run[: len(run) // 2] for i in b]
        figures["max_quantile_first_half"] = float(quantile[half].max())
        figures["max_quantile_run"] = float(quantile[[i for b in run for i in b]].max())
        per_seed.append(figures)
    out: dict[str, Any] = {"pacing": pacing, "steps": per_seed[0]["n_batches"]}
    for key in per_seed[0]:
        values = [f[key] for f in per_seed]
        if isinstance(values[0], list):
            out[key] = np.median(np.asarray(values, dtype=float), axis=0).tolist()
        elif isinstance(values[0], (int, float)):
            out[key] = float(np.median(values))
            out[f"{key}_worst"] = float(max(values) if key == "max_quantile_first_half" else min(values))
    return out


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return " / ".join(f"{v:.2f}" for v in value)
    return f"{value:.2f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"


def table(rows: list[tuple[str, dict[str, Any]]], extra: list[tuple[str, str]] = ()) -> list[str]:
    columns = COLUMNS + list(extra)
    lines = ["| order | batches | " + " | ".join(name for _, name in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for name, figures in rows:
        lines.append(f"| {name} | {figures['steps']} | " + " | ".join(_cell(figures.get(key, float('nan'))) for key, _ in columns) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    curriculum, levels = embedded_curriculum()
    epoch = math.ceil(int(curriculum.keep.sum()) / curriculum.sampler_kwargs["batch_size"])
    default = {k: curriculum.sampler_kwargs[k] for k in ("stages", "num_steps", "competence", "initial_competence")}
    staged = [("unpaced (stages=1, before #13)", measure(curriculum, levels, seeds, stages=1))]
    staged += [(f"stages={s}", measure(curriculum, levels, seeds, stages=s)) for s in range(2, 9)]
    competence = []
    for steps in (epoch, epoch // 2, 50):
        competence.append((f"unpaced, first {steps} batches", measure(curriculum, levels, seeds, steps, stages=1)))
        for schedule in ("linear", "sqrt"):
            for c0 in (0.01, 0.1):
                competence.append((f"competence {schedule}, c0={c0}, num_steps={steps}",
                                   measure(curriculum, levels, seeds, num_steps=steps, competence=schedule, initial_competence=c0)))

    old, new = staged[0][1], dict(staged)[f"stages={default['stages']}"]
    checks = [
        ("Spearman(batch, batch-mean predicted difficulty) >= 0.9", new["spearman_batch_difficulty_worst"] >= 0.9,
         f"{new['spearman_batch_difficulty']:.3f} (worst seed {new['spearman_batch_difficulty_worst']:.3f})"),
        ("mean true level rises across quarters", bool(np.all(np.diff(new["level_by_quarter"]) > 0)),
         " / ".join(f"{v:.2f}" for v in new["level_by_quarter"])),
        ("fewest distinct clusters in a 32-batch window >= 80% of unpaced",
         new["distinct_clusters_per_window_min"] >= 0.8 * old["distinct_clusters_per_window_min"],
         f"{new['distinct_clusters_per_window_min']:g} vs {old['distinct_clusters_per_window_min']:g} "
         f"(worst seeds {new['distinct_clusters_per_window_min_worst']:g} vs {old['distinct_clusters_per_window_min_worst']:g})"),
        ("mean distinct clusters per 32-batch window >= 80% of unpaced",
         new["distinct_clusters_per_window_mean"] >= 0.8 * old["distinct_clusters_per_window_mean"],
         f"{new['distinct_clusters_per_window_mean']:.1f} vs {old['distinct_clusters_per_window_mean']:.1f} "
         f"({new['distinct_clusters_per_window_mean'] / old['distinct_clusters_per_window_mean']:.0%})"),
        ("dominant-cluster share within 10% of unpaced",
         abs(new["dominant_share_mean"] / old["dominant_share_mean"] - 1) <= 0.1,
         f"{new['dominant_share_mean']:.3f} vs {old['dominant_share_mean']:.3f} "
         f"({new['dominant_share_mean'] / old['dominant_share_mean'] - 1:+.1%}; worst seed {new['dominant_share_mean_worst']:.3f})"),
    ]
    half = dict(competence)[f"competence linear, c0=0.01, num_steps={epoch // 2}"]
    checks.append(("competence (linear, c0=0.01): the first half of a run serves only the easiest c(half) = 50.5%",
                   half["max_quantile_first_half_worst"] <= 0.505 + 1e-9, f"max quantile {half['max_quantile_first_half_worst']:.3f}"))

    lines = [
        "# Pacing on the embedded default (issue #13)",
        "",
        f"Command: `python scripts/pacing_table.py`; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"{int(curriculum.keep.sum())} of {len(curriculum)} prompts kept, {epoch} batches of "
        f"{curriculum.sampler_kwargs['batch_size']}, mixing {curriculum.sampler_kwargs['mixing']}, 32 clusters. "
        f"Figures: median over sampler seeds {args.seeds}; true level = the hidden ground truth (1-3), only measured.",
        "",
        f"Default chosen: `{Pacing(**default)}` (with a difficulty probe; `saerl_zoo.curriculum.DEFAULT_STAGES`).",
        "",
        "## Stages (whole epoch)",
        "",
        *table(staged),
        "",
        "## Competence (measured over the run's own batches)",
        "",
        "max quantile = the hardest prompt served, as a quantile of predicted difficulty among the kept prompts.",
        "",
        *table(competence, [("max_quantile_first_half", "max quantile, first half"), ("max_quantile_run", "max quantile, run")]),
        "",
        "## Acceptance, default vs unpaced",
        "",
        "| check | met | figure |",
        "|---|---|---|",
        *[f"| {name} | {'yes' if ok else '**no**'} | {figure} |" for name, ok, figure in checks],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with atomic_path(args.out / "pacing.md") as tmp:
        tmp.write_text(text)
    write_json(args.out / "pacing.json", {"default": default, "seeds": seeds, "stages": dict(staged),
                                           "competence": dict(competence),
                                           "checks": [{"check": n, "met": bool(ok), "figure": f} for n, ok, f in checks]})
    plot = write_report(curriculum, args.out / "pacing", levels)["plot"]
    from PIL import Image  # a 64-colour copy keeps the committed plot small (about 40 kB instead of 130)

    with atomic_path(plot) as tmp:
        Image.open(plot).convert("RGB").quantize(64).save(tmp, format="png", optimize=True)


if __name__ == "__main__":
    main()
