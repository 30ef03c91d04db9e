"""Paired bootstrap intervals for the gap between two scorings of the same prompts.

"Transferred vs native AUROC" is a difference of two metrics measured on the
same prompts, so the prompts are resampled once per draw and both metrics are
computed on that resample: the interval then reflects how the gap varies with
the prompt sample, not two independent noises. Seeded, so a table regenerates
to the same interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]  # (truth, scores) -> value, e.g. Spearman or AUROC


def paired_bootstrap(metric: Metric, y_true: Any, scores_a: Any, scores_b: Any, *, n_resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """`metric(y, a) - metric(y, b)` on all prompts, and its percentile interval over prompts resampled with replacement.

    Resamples where the metric is undefined (e.g. AUROC on a draw with one class) are
    skipped and counted in `n_undefined`; the interval needs at least half of them defined.
    """
    y, a, b = (np.asarray(v, dtype=np.float64) for v in (y_true, scores_a, scores_b))
    if not (y.ndim == a.ndim == b.ndim == 1 and len(y) == len(a) == len(b)) or len(y) < 2:
        raise ValueError(f"paired_bootstrap needs three 1-D arrays of one length >= 2, got shapes {y.shape}, {a.shape}, {b.shape}")
    if not 0 < level < 1 or n_resamples < 1:
        raise ValueError("level must be in (0, 1) and n_resamples positive")
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(n_resamples):
        idx = rng.integers(0, len(y), len(y))
        try:
            gap = metric(y[idx], a[idx]) - metric(y[idx], b[idx])
        except ValueError:  # sklearn's AUROC on a one-class draw
            continue
        if np.isfinite(gap):
            gaps.append(gap)
    if len(gaps) < n_resamples / 2:
        raise ValueError(f"the metric is undefined on {n_resamples - len(gaps)} of {n_resamples} resamples; too few prompts")
    low, high = np.quantile(gaps, [(1 - level) / 2, (1 + level) / 2])
    return {"gap": float(metric(y, a) - metric(y, b)), "low": float(low), "high": float(high), "level": level,
            "n": len(y), "n_resamples": n_resamples, "n_undefined": n_resamples - len(gaps), "seed": seed}
