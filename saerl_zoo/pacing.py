"""Pacing: how fast the SaeRL order moves from easy to hard prompts.

Cluster batches and rotation make neighbouring batches diverse, but on their
own they interleave clusters whose difficulty ranges differ, so the order of a
whole epoch barely rises. Pacing is the outer structure that makes it rise;
the sampler puts its cluster machinery inside it. Two designs:

* **stages** - the kept prompts are cut into ``stages`` equal-count bands by
  their global predicted difficulty (quantiles), served easiest band first.
  ``stages=1`` is the unpaced order.
* **competence** (Platanios et al., NAACL 2019) - batch ``t`` of a run of
  ``num_steps`` batches draws only from the easiest ``c(t)`` fraction of the
  pool, with ``c`` growing from ``initial_competence`` to 1 at the run's last
  step: ``linear`` ``c0 + (1 - c0) x`` or ``sqrt`` ``sqrt(c0^2 + (1 - c0^2) x)``
  at progress ``x = (t + 1) / num_steps``. A run shorter than an epoch thus
  still sweeps the whole difficulty range.

This module holds the schedule arithmetic and the figures that measure how an
order paces; :mod:`saerl_zoo.sampler` builds the batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

__all__ = ["COMPETENCE_SCHEDULES", "Pacing", "competence", "known_mean", "pacing_figures", "stage_cuts"]

COMPETENCE_SCHEDULES = ("linear", "sqrt")


@dataclasses.dataclass(frozen=True)
class Pacing:
    """One pacing design, validated: ``stages`` bands, or a competence schedule over ``num_steps`` batches.

    ``stages=1`` with ``num_steps=None`` is no pacing (the unpaced order).
    """

    stages: int = 1
    num_steps: int | None = None
    competence: str = "linear"
    initial_competence: float = 0.01

    def __post_init__(self) -> None:
        for name in ("stages", "num_steps"):
            value = getattr(self, name)
            if name == "num_steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.num_steps is not None and self.stages != 1:
            raise ValueError(f"give stages={self.stages} or num_steps={self.num_steps} (competence pacing), not both")
        if self.competence not in COMPETENCE_SCHEDULES:
            raise ValueError(f"competence must be one of {COMPETENCE_SCHEDULES}, got {self.competence!r}")
        c0 = self.initial_competence
        if isinstance(c0, bool) or not isinstance(c0, (int, float, np.integer, np.floating)) or not 0 <= c0 <= 1:
            raise ValueError(f"initial_competence must be a number in [0, 1], got {c0!r}")

    @property
    def active(self) -> bool:
        """Whether the order is paced at all (it needs a difficulty to pace by)."""
        return self.stages > 1 or self.num_steps is not None

    def __str__(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.describe().items()) or "unpaced"

    def describe(self) -> dict[str, Any]:
        """The settings that shape the order; empty when unpaced, so unpaced fingerprints stay as they were."""
        if self.num_steps is not None:
            return {"num_steps": int(self.num_steps), "competence": self.competence,
                    "initial_competence": float(self.initial_competence)}
        return {"stages": int(self.stages)} if self.stages > 1 else {}


def stage_cuts(n_kept: int, stages: int, global_batch: int) -> list[int]:
    """Where the difficulty-ranked kept prompts are cut into stages (cut positions, ascending).

    Cuts sit on multiples of ``global_batch`` so every stage but the last fills
    whole batches (the sampler's "only the very last batch may be short").
    Stages that would be empty after that rounding are merged away, so a pool
    of fewer than ``stages`` batches gets one stage per batch.
    """
    cuts = {round(s * n_kept / stages / global_batch) * global_batch for s in range(1, stages)}
    return sorted(cut for cut in cuts if 0 < cut < n_kept)


def competence(step: int, horizon: int, schedule: str, initial: float) -> float:
    """Fraction of the pool (easiest first) that batch ``step`` of a ``horizon``-batch run may draw from."""
    progress = min(1.0, (step + 1) / horizon)
    if schedule == "linear":
        return min(1.0, initial + (1.0 - initial) * progress)
    if schedule == "sqrt":
        return min(1.0, math.sqrt(initial**2 + (1.0 - initial**2) * progress))
    raise ValueError(f"competence schedule must be one of {COMPETENCE_SCHEDULES}, got {schedule!r}")


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Rank correlation, or None where it is undefined (fewer than 2 values, or one side constant)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def known_mean(values: np.ndarray) -> float | None:
    """Mean of the non-nan values (ground truth is unknown for some prompts), None when there are none."""
    known = values[~np.isnan(values)]
    return float(known.mean()) if len(known) else None


def pacing_figures(
    batches: Sequence[Sequence[int]],
    difficulty: np.ndarray | None,
    clusters: np.ndarray | None,
    levels: np.ndarray | None = None,
    *,
    window: int = 32,
    parts: int = 4,
) -> dict[str, Any]:
    """How an order paces and how diverse it stays: the figures the curriculum report prints.

    ``levels`` is a ground-truth difficulty per prompt (``nan`` where unknown,
    e.g. off-topic noise), used only to measure, never to order. Quarters
    (``parts``) split the batches into equal runs of consecutive batches.
    A figure that is undefined (a constant side, no known level) is None.
    """
    flat = np.asarray([i for batch in batches for i in batch], dtype=np.int64)
    position = np.arange(len(flat))
    batch_index = np.arange(len(batches))
    bounds = np.linspace(0, len(batches), parts + 1).round().astype(int)
    figures: dict[str, Any] = {"n_batches": len(batches), "window": window, "quarters": bounds.tolist()}
    if difficulty is not None:
        batch_mean = [float(np.mean(difficulty[b])) for b in batches]
        figures["spearman_position_difficulty"] = _spearman(position, difficulty[flat])
        figures["spearman_batch_difficulty"] = _spearman(batch_index, batch_mean)
        figures["difficulty_by_quarter"] = [known_mean(np.asarray(batch_mean[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
    if levels is not None:
        served = levels[flat]
        known = ~np.isnan(served)
        figures["spearman_position_level"] = _spearman(position[known], served[known])
        per_batch = np.repeat(batch_index, [len(b) for b in batches])
        figures["level_by_quarter"] = [
            known_mean(served[(per_batch >= a) & (per_batch < b)]) for a, b in zip(bounds[:-1], bounds[1:])
        ]
    if clusters is not None:
        labels = [clusters[b] for b in batches]
        dominant = [float(np.bincount(lab).max() / len(lab)) for lab in labels]
        width = min(window, len(batches))
        distinct = [len(np.unique(np.concatenate(labels[s : s + width]))) for s in range(len(batches) - width + 1)]
        figures["dominant_share_mean"] = float(np.mean(dominant))
        figures["distinct_clusters_per_window_min"] = int(min(distinct))
        figures["distinct_clusters_per_window_mean"] = float(np.mean(distinct))
    return figures
