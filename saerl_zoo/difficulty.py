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

from saerl_zoo.probe import LinearProbe, ProbeConfig, as_features, as_targets, heldout_split, regression_metrics


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
        train, held = heldout_split(X.shape[0], heldout_fraction, seed)
        w, b, alpha = _fit_elasticnet(X[train], y[train], l1_ratio, seed, None)
        metrics = regression_metrics(y[held], np.asarray(X[held] @ w) + b)
        w, b, _ = _fit_elasticnet(X, y, l1_ratio, seed, alpha)
        config = ProbeConfig(
            probe=cls.kind,
            estimator="elasticnet",
            d_in=X.shape[1],
            target=target,
            hyperparameters={"alpha": alpha, "l1_ratio": l1_ratio, "nonzero_weights": int(np.count_nonzero(w))},
            metrics=metrics,
            n_train=len(train),
            n_heldout=len(held),
            seed=seed,
            sae=sae,
        )
        return cls(w, b, config)
