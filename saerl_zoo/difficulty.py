"""Difficulty: an ElasticNet probe on SAE codes that predicts how hard a prompt is.

Fitted on a small labelled subset (the policy's pass rate over a few rollouts,
or any numeric difficulty), then applied to the whole pool for free. The L1
part keeps the probe sparse over tens of thousands of SAE features; the L2 part
keeps correlated features from fighting. The penalty strength is chosen by
cross-validation on the training split, the held-out split reports how well the
probe ranks prompts, and the shipped probe is refitted on every label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import ElasticNet, ElasticNetCV

from saerl_zoo.probe import LinearProbe, as_features, as_targets, regression_metrics


def _fit_elasticnet(X, y, l1_ratio: float, seed: int, alpha: float | None) -> tuple[np.ndarray, float, float]:
    if alpha is None:
        cv = ElasticNetCV(l1_ratio=l1_ratio, cv=min(5, X.shape[0] // 2), random_state=seed, max_iter=5000, n_jobs=1)
        model = cv.fit(X, y)
        alpha = float(cv.alpha_)
    else:
        model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, random_state=seed, max_iter=5000).fit(X, y)
    return model.coef_, float(model.intercept_), alpha


class DifficultyProbe(LinearProbe):
    """Predicted difficulty; higher = harder. Order a curriculum easy → hard by it."""

    kind = "difficulty"

    @classmethod
    def fit(
        cls,
        features: Any,
        targets: Any,
        *,
        l1_ratio: float = 0.5,
        heldout_fraction: float = 0.2,
        seed: int = 0,
        target: str = "difficulty (higher = harder), e.g. 1 - pass rate",
        sae: dict[str, Any] | None = None,
    ) -> DifficultyProbe:
        X = as_features(features)
        y = as_targets(targets, X.shape[0])
        return cls._fit_with_heldout(
            X,
            y,
            lambda X_, y_, alpha: _fit_elasticnet(X_, y_, l1_ratio, seed, alpha),
            regression_metrics,
            estimator="elasticnet",
            regulariser="alpha",
            target=target,
            heldout_fraction=heldout_fraction,
            seed=seed,
            stratify=None,
            sae=sae,
            hyperparameters={"l1_ratio": l1_ratio},
        )
