"""Quality: a linear probe on SAE codes that flags broken prompts, and the filter.

Broken RL prompts — wrong reference answers, truncated statements, noise — cost
rollouts and teach nothing, so they are dropped before anything else. With
good/bad labels the probe is a logistic classifier (score = P(good)); with a
numeric quality score it is ridge regression. Regularisation is chosen by
cross-validation on the training split; the held-out split gives AUROC (or
Spearman) and the shipped probe is refitted on every label. When the labels
say which defect made each bad prompt bad (`defects`), the held-out split keeps
every kind in proportion and the metrics add one AUROC per kind, so a probe
that finds truncations but misses near-duplicates shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV

from saerl_zoo.arrays import ArrayLike, check_finite, to_vector
from saerl_zoo.data import where
from saerl_zoo.defects import NOT_IN_TEXT
from saerl_zoo.probe import (
    LinearProbe,
    as_features,
    as_targets,
    classification_metrics,
    regression_metrics,
)

QualityKind = Literal["logistic", "ridge"]
_ALPHAS = np.logspace(-3, 3, 13)
HELDOUT_FRACTION = 0.2


def defect_aurocs(labels: ArrayLike, scores: ArrayLike, defects: Sequence[str | None]) -> dict[str, float]:
    """AUROC of each defect kind: its prompts against the clean ones (label 1, no defect), higher score = better.

    Keys are ``auroc_defect_<kind>`` for kinds the text can show and
    ``auroc_hidden_defect_<kind>`` for kinds it cannot (`defects.NOT_IN_TEXT`,
    e.g. a wrong reference answer): a text probe scores those at chance, so
    they stay apart, never averaged in. ``n_defect_<kind>`` counts the kind's
    prompts, since an AUROC over three of them says little. NaN when there is
    no clean prompt to compare with.
    """
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    kinds = np.asarray(defects, dtype=object)
    clean = (labels == 1) & np.equal(kinds, None)
    out: dict[str, float] = {}
    for kind in sorted({k for k in defects if k is not None}):
        broken = kinds == kind
        rows = clean | broken
        auroc = roc_auc_score(clean[rows], scores[rows]) if clean.any() else float("nan")
        out[f"auroc_{'hidden_' if kind in NOT_IN_TEXT else ''}defect_{kind}"] = float(auroc)
        out[f"n_defect_{kind}"] = float(broken.sum())
    return out


def label_defects(label_rows: Sequence[dict[str, Any]]) -> list[str | None] | None:
    """The ``defect`` of each label row (a kind name, or null for a clean prompt or an unknown kind), or None
    when no row has that field. A row's kind must be a non-empty string or null; `file:line` names one that is not."""
    if not any("defect" in row for row in label_rows):
        return None
    kinds = [row.get("defect") for row in label_rows]
    for i, kind in enumerate(kinds):
        if kind is not None and not (isinstance(kind, str) and kind.strip()):
            raise ValueError(f"{where(label_rows, i, 'label')}: 'defect' is {kind!r}; give a defect kind's name or null")
    return kinds


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
        heldout_fraction: float = HELDOUT_FRACTION,
        seed: int = 0,
        target: str | None = None,
        sae: dict[str, Any] | None = None,
        defects: Sequence[str | None] | None = None,
    ) -> QualityProbe:
        """`defects` (logistic only): each label's defect kind, None for a clean prompt or a bad one of unknown
        kind; the held-out metrics then add `defect_aurocs`."""
        X = as_features(features)
        y = as_targets(labels, X.shape[0])
        if kind == "logistic":
            if not np.isin(y, (0, 1)).all():
                raise ValueError("logistic quality labels must be 0 (bad) or 1 (good)")
        elif kind != "ridge":
            raise ValueError(f"unknown quality probe kind {kind!r}; choose 'logistic' or 'ridge'")
        logistic = kind == "logistic"
        if defects is not None:
            defects = _check_defects(defects, y, logistic)
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
            strata=None if defects is None else np.asarray(defects, dtype=object),
            heldout_extra=None if defects is None else (lambda held, z: defect_aurocs(y[held], z, [defects[i] for i in held])),
        )


def _check_defects(defects: Sequence[str | None], y: np.ndarray, logistic: bool) -> list[str | None]:
    """Defect kinds for a logistic probe's labels: one per label, and only on bad (0) ones."""
    defects = list(defects)
    if not logistic:
        raise ValueError("per-defect AUROC needs good/bad (0/1) labels: fit the logistic quality probe")
    if len(defects) != len(y):
        raise ValueError(f"{len(defects)} defect kinds for {len(y)} labels")
    good = [i for i, (k, v) in enumerate(zip(defects, y)) if k is not None and v == 1]
    if good:
        raise ValueError(f"label {good[0] + 1} is good (1) but names defect {defects[good[0]]!r} "
                         f"({len(good)} such labels): a defect kind belongs to a bad (0) label")
    return defects
