"""Quality: a linear probe on SAE codes that flags broken prompts, and the filter.

Broken RL prompts — wrong reference answers, truncated statements, noise — cost
rollouts and teach nothing, so they are dropped before anything else. With
good/bad labels the probe is a logistic classifier (score = P(good)); with a
numeric quality score it is ridge regression. Regularisation is chosen by
cross-validation on the training split; the held-out split gives AUROC (or
Spearman) and the shipped probe is refitted on every label.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV

from saerl_zoo.arrays import ArrayLike, check_finite, to_vector
from saerl_zoo.probe import (
    LinearProbe,
    as_features,
    as_targets,
    classification_metrics,
    regression_metrics,
)

QualityKind = Literal["logistic", "ridge"]
_ALPHAS = np.logspace(-3, 3, 13)


def quality_mask(
    scores: ArrayLike, threshold: float | None = None, keep_fraction: float | None = None
) -> np.ndarray:
    """Boolean ``keep`` mask from quality-probe scores (higher = better).

    Give exactly one of ``threshold`` (keep ``scores >= threshold``) or
    ``keep_fraction`` (keep the best ``max(1, round(keep_fraction * n))``
    prompts). Equal scores are broken by lower index first, so the same
    scores always give the same mask.
    """
    if (threshold is None) == (keep_fraction is None):
        raise ValueError("give exactly one of threshold or keep_fraction")
    scores = check_finite(to_vector(scores, "scores"), "scores")
    if threshold is not None:
        return scores >= threshold
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    count = max(1, round(keep_fraction * len(scores)))
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:count]] = True
    return mask


def _fit(X, y, kind: QualityKind, seed: int, reg: float | None) -> tuple[np.ndarray, float, float]:
    """Return weights, bias and the regulariser (chosen by cross-validation when `reg` is None)."""
    if kind == "logistic":
        if reg is None:
            folds = int(min(5, np.bincount(y.astype(int)).min()))
            cv = LogisticRegressionCV(
                Cs=1.0 / _ALPHAS, l1_ratios=(0.0,), cv=max(2, folds), scoring="roc_auc", max_iter=2000, random_state=seed, use_legacy_attributes=False
            )
            model = cv.fit(X, y)
            reg = float(np.ravel(cv.C_)[0])
        else:
            model = LogisticRegression(C=reg, max_iter=2000, random_state=seed).fit(X, y)
        return model.coef_.reshape(-1), float(np.ravel(model.intercept_)[0]), reg
    if reg is None:
        cv = RidgeCV(alphas=_ALPHAS).fit(X, y)
        model, reg = cv, float(cv.alpha_)
    else:
        model = Ridge(alpha=reg).fit(X, y)
    return model.coef_.reshape(-1), float(model.intercept_), reg


class QualityProbe(LinearProbe):
    """Predicted prompt quality; higher = better (P(good) for the logistic kind)."""

    kind = "quality"

    def predict(self, features: Any) -> np.ndarray:
        z = self.decision_function(features)
        return expit(z) if self.config.estimator == "logistic" else z

    def keep_mask(self, features: Any, *, threshold: float | None = None, keep_fraction: float | None = None) -> np.ndarray:
        """The quality filter: a boolean mask of prompts to train on."""
        return quality_mask(self.predict(features), threshold=threshold, keep_fraction=keep_fraction)

    @classmethod
    def fit(
        cls,
        features: Any,
        labels: Any,
        *,
        kind: QualityKind = "logistic",
        heldout_fraction: float = 0.2,
        seed: int = 0,
        target: str | None = None,
        sae: dict[str, Any] | None = None,
    ) -> QualityProbe:
        X = as_features(features)
        y = as_targets(labels, X.shape[0])
        if kind == "logistic":
            if not np.isin(y, (0, 1)).all():
                raise ValueError("logistic quality labels must be 0 (bad) or 1 (good)")
        elif kind != "ridge":
            raise ValueError(f"unknown quality probe kind {kind!r}; choose 'logistic' or 'ridge'")
        logistic = kind == "logistic"
        return cls._fit_with_heldout(
            X,
            y,
            lambda X_, y_, reg: _fit(X_, y_, kind, seed, reg),
            (lambda y_, z: classification_metrics(y_, expit(z))) if logistic else regression_metrics,
            estimator=kind,
            regulariser="C" if logistic else "alpha",
            target=target or ("P(good prompt)" if logistic else "quality score (higher = better)"),
            heldout_fraction=heldout_fraction,
            seed=seed,
            stratify=y if logistic else None,
            sae=sae,
        )
