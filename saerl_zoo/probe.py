"""Linear probes on sparse SAE codes: the shared weights, metrics and storage.

A probe is one weight vector and a bias over SAE features — small enough to
publish next to its SAE, and readable (its largest weights name the features
that drive difficulty or quality). Estimators come from scikit-learn, which
fits sparse matrices directly. Codes are fitted unscaled: with unit-norm decoder
rows an SAE code already measures a feature's share of the residual stream, and
standardising would blow up rare features, whose few activations are mostly
noise on a labelled set of a few hundred prompts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import scipy.sparse as sp
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from saerl_zoo.storage import read_json, read_tensors, write_json, write_tensors

CONFIG_NAME = "probe_config.json"
WEIGHTS_NAME = "probe.safetensors"
FIT_DIAGNOSTICS = ("not_converged", "final_fit_converged")
P = TypeVar("P", bound="LinearProbe")

# The largest |decision value| (and |bias|) a sound probe gives. A regression probe predicts pass rates (or a
# user's difficulty or quality scale): a million times such a scale comes only from corrupt weights or from
# features the probe was not fitted on. A logistic probe's decision is log-odds: at 1e3, P(good) = 1 - e^-1000,
# which no probe fitted on a few hundred labels can claim (the embedded one stays within about ±30).
SCORE_BOUNDS = {"logistic": 1e3}
REGRESSION_SCORE_BOUND = 1e6
# An SAE code of a firing feature is O(0.1-100), so a coefficient beyond 1e6 puts every prompt that fires it past
# any bound above; such weights come from a corrupt file (a flipped exponent bit) or a degenerate fit.
WEIGHT_BOUND = 1e6


@dataclasses.dataclass
class ProbeConfig:
    """Everything needed to apply a probe correctly, saved next to its weights."""

    probe: str  # "difficulty" or "quality"
    estimator: str  # "elasticnet", "ridge" or "logistic"
    d_in: int
    target: str  # what the score means, e.g. "1 - pass rate (higher = harder)"
    hyperparameters: dict[str, Any]
    metrics: dict[str, float]  # on the held-out split, before the final refit on all labels
    n_train: int
    n_heldout: int
    seed: int
    sae: dict[str, Any] | None = None  # provenance of the features: hook, d_sae, SAE hash
    version: int = 1
    fit: dict[str, float] = dataclasses.field(default_factory=dict)  # solver diagnostics: not_converged, final_fit_converged

    def __post_init__(self) -> None:
        # Probes saved before `fit` existed kept the solver diagnostics among the held-out metrics, where cards
        # and catalogs would list them as measurements of the probe; they belong with the fit.
        for key in FIT_DIAGNOSTICS:
            if key in self.metrics:
                self.fit.setdefault(key, self.metrics.pop(key))


def as_features(features: Any, d_in: int | None = None) -> sp.csr_matrix:
    """Accept CSR/dense features; refuse NaN/inf and a wrong width with a clear error."""
    X = sp.csr_matrix(features, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"features must be a non-empty 2-D matrix, got shape {X.shape}")
    if not np.all(np.isfinite(X.data)):
        raise ValueError("features contain NaN or inf")
    if d_in is not None and X.shape[1] != d_in:
        raise ValueError(f"features have {X.shape[1]} columns but the probe expects d_in={d_in}")
    return X


def as_targets(targets: Any, n: int) -> np.ndarray:
    y = np.asarray(targets, dtype=np.float64).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} targets for {n} feature rows")
    if not np.all(np.isfinite(y)):
        raise ValueError("targets contain NaN or inf")
    if np.ptp(y) == 0:
        raise ValueError("targets are constant: nothing to fit")
    return y


MIN_TRAIN, MIN_HELDOUT = 4, 2  # 2-fold cross-validation of 2 labels each; a held-out correlation needs 2 points
MIN_TRAIN_PER_CLASS, MIN_HELDOUT_PER_CLASS = 2, 1  # each class in both folds of the search; AUROC needs both classes


def _check_fraction(heldout_fraction: float) -> None:
    if not 0 < heldout_fraction < 1:
        raise ValueError("heldout_fraction must be in (0, 1)")


def _n_heldout(n: int, heldout_fraction: float) -> int:
    return max(1, int(round(n * heldout_fraction)))


def labels_needed(heldout_fraction: float, classes: bool) -> int:
    """The fewest labels (of each class, for a classifier) that leave enough to cross-validate and to score.

    For classes it assumes two balanced classes, each split in proportion
    (as the stratified split does).
    """
    _check_fraction(heldout_fraction)
    if classes:
        def ok(c: int) -> bool:
            held = _n_heldout(2 * c, heldout_fraction)
            return held // 2 >= MIN_HELDOUT_PER_CLASS and c - math.ceil(held / 2) >= MIN_TRAIN_PER_CLASS
    else:
        def ok(n: int) -> bool:
            held = _n_heldout(n, heldout_fraction)
            return held >= MIN_HELDOUT and n - held >= MIN_TRAIN
    return next(n for n in itertools.count(1) if ok(n))


def _too_few_labels(kind: str, y: np.ndarray, heldout_fraction: float, classes: bool) -> ValueError:
    need = labels_needed(heldout_fraction, classes)
    if classes:
        counts = ", ".join(f"{int(c)} of class {int(v)}" for v, c in zip(*np.unique(y, return_counts=True)))
        return ValueError(
            f"{len(y)} labels ({counts}) are too few for a {kind} probe: it needs at least {need} of each class "
            f"({MIN_TRAIN_PER_CLASS} per class to choose the regulariser by cross-validation, {MIN_HELDOUT_PER_CLASS} to score "
            f"on the held-out {heldout_fraction:.0%})"
        )
    return ValueError(
        f"{len(y)} labels are too few for a {kind} probe: it needs at least {need} ({MIN_TRAIN} to choose the "
        f"regulariser by cross-validation, {MIN_HELDOUT} to score on the held-out {heldout_fraction:.0%})"
    )


def check_enough_labels(kind: str, y: np.ndarray, heldout_fraction: float, classes: bool) -> None:
    """Refuse, before any fitting, a label set too small to split, cross-validate and score."""
    if classes:
        enough = np.unique(y, return_counts=True)[1].min() >= labels_needed(heldout_fraction, True)
    else:
        enough = len(y) >= labels_needed(heldout_fraction, False)
    if not enough:
        raise _too_few_labels(kind, y, heldout_fraction, classes)


@contextmanager
def count_nonconvergence() -> Iterator[list[int]]:
    """Count the solver runs inside that stop at their iteration limit, instead of one warning each.

    A cross-validated ElasticNet path on a few hundred labels leaves dozens of
    weakly regularised fits short of tolerance; the count goes into the probe's
    metrics, and other warnings pass through unchanged.
    """
    count = [0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        yield count
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            count[0] += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def heldout_split(n: int, heldout_fraction: float, seed: int, stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/held-out index split (stratified for class labels)."""
    _check_fraction(heldout_fraction)
    n_held = _n_heldout(n, heldout_fraction)
    if n - n_held < 2:
        raise ValueError(f"{n} labelled examples are too few to fit and hold out")
    from sklearn.model_selection import train_test_split

    train, held = train_test_split(np.arange(n), test_size=n_held, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(held)


def split_strata(classes: np.ndarray, groups: np.ndarray, heldout_fraction: float) -> np.ndarray:
    """What to stratify the held-out split on: each (class, group) pair when every pair has the 2 rows a
    stratified split needs and the held-out and training parts each have room for one of every pair, else
    the classes alone. Groups (defect kinds) split in proportion leave each one in the held-out part to score."""
    keys = np.asarray([f"{c}|{g}" for c, g in zip(classes, groups)])
    counts = np.unique(keys, return_counts=True)[1]
    n_held = _n_heldout(len(keys), heldout_fraction)
    if counts.min() >= 2 and len(counts) <= min(n_held, len(keys) - n_held):
        return keys
    return classes


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
        rho = r = 0.0
    else:
        rho, r = float(stats.spearmanr(y_true, y_pred).statistic), float(stats.pearsonr(y_true, y_pred).statistic)
    return {"spearman": rho, "pearson": r, "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2)))}


def classification_metrics(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    auroc = float(roc_auc_score(labels, prob)) if len(np.unique(labels)) == 2 else float("nan")
    return {"auroc": auroc, "accuracy": float(np.mean((prob >= 0.5) == labels))}


class LinearProbe:
    """score = link(features @ weight + bias); subclasses choose the estimator and the link."""

    kind: ClassVar[str]

    def __init__(self, weight: np.ndarray, bias: float, config: ProbeConfig):
        self.weight = np.asarray(weight, dtype=np.float32).reshape(-1)
        self.bias = float(bias)
        self.config = config
        if self.weight.shape[0] != config.d_in:
            raise ValueError(f"weight has {self.weight.shape[0]} entries but config says d_in={config.d_in}")
        broken = "the weights are broken (a corrupt file or a degenerate fit)"
        self._refuse_absurd(self.weight, "weight", WEIGHT_BOUND, broken)
        self._refuse_absurd(np.asarray([self.bias]), "bias", self.score_bound, broken)

    @property
    def score_bound(self) -> float:
        """The largest |decision value| this probe may give (see SCORE_BOUNDS)."""
        return SCORE_BOUNDS.get(self.config.estimator, REGRESSION_SCORE_BOUND)

    def _refuse_absurd(self, values: np.ndarray, what: str, bound: float, cause: str) -> None:
        """One line naming the first non-finite or out-of-bound value: a silently wrong score is worse than none."""
        bad = np.flatnonzero(~np.isfinite(values) | (np.abs(values) > bound))
        if bad.size:
            at = f" {bad[0]}" if values.size > 1 else ""
            raise ValueError(
                f"{self.kind} probe {what}{at} is {values[bad[0]]:.3g} ({bad.size} of {values.size} non-finite or beyond "
                f"±{bound:.0e}, which no sound {self.config.estimator} probe gives): {cause}"
            )

    @classmethod
    def _fit_with_heldout(
        cls: type[P],
        X: sp.csr_matrix,
        y: np.ndarray,
        fit: Callable[[sp.csr_matrix, np.ndarray, float | None], tuple[np.ndarray, float, float]],
        score: Callable[[np.ndarray, np.ndarray], dict[str, float]],
        *,
        estimator: str,
        regulariser: str,
        target: str,
        heldout_fraction: float,
        seed: int,
        stratify: np.ndarray | None,
        sae: dict[str, Any] | None,
        hyperparameters: dict[str, Any] | None = None,
        strata: np.ndarray | None = None,
        heldout_extra: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None,
    ) -> P:
        """Fit on a training split (choosing the regulariser), score the held-out split, refit on every label.

        `fit(X, y, reg)` returns (weight, bias, reg) and chooses `reg` itself
        when given None; `score(y_true, decision)` gives the held-out metrics.
        `strata` (with `stratify`) are finer groups of the classes to split
        in proportion when every group can be (see `split_strata`);
        `heldout_extra(held_rows, decision)` adds metrics that need to know
        which rows were held out.
        """
        classes = stratify is not None
        check_enough_labels(cls.kind, y, heldout_fraction, classes)
        if classes and strata is not None:
            stratify = split_strata(stratify, strata, heldout_fraction)
        train, held = heldout_split(X.shape[0], heldout_fraction, seed, stratify=stratify)
        if classes and (np.unique(y[held]).size < np.unique(y).size or np.bincount(y[train].astype(int)).min() < MIN_TRAIN_PER_CLASS):
            raise _too_few_labels(cls.kind, y, heldout_fraction, classes)  # an unbalanced set the proportional split could not cover
        with count_nonconvergence() as in_search:
            w, b, reg = fit(X[train], y[train], None)
        decision = np.asarray(X[held] @ w) + b
        metrics = score(y[held], decision)
        if heldout_extra is not None:
            metrics.update(heldout_extra(held, decision))
        with count_nonconvergence() as in_final:
            w, b, _ = fit(X, y, reg)
        config = ProbeConfig(
            probe=cls.kind,
            estimator=estimator,
            d_in=X.shape[1],
            target=target,
            hyperparameters={regulariser: reg, **(hyperparameters or {}), "nonzero_weights": int(np.count_nonzero(w))},
            metrics=metrics,
            fit={"not_converged": float(in_search[0] + in_final[0]), "final_fit_converged": float(in_final[0] == 0)},
            n_train=len(train),
            n_heldout=len(held),
            seed=seed,
            sae=sae,
        )
        return cls(w, b, config)

    @property
    def metrics(self) -> dict[str, float]:
        return self.config.metrics

    def convergence_note(self) -> str | None:
        """One line when some solver runs of the fit stopped at their iteration limit, else None."""
        n = int(self.config.fit.get("not_converged", 0))
        if not n:
            return None
        final = "converged" if self.config.fit.get("final_fit_converged") else "did not converge either"
        return (f"{self.kind} probe: {n} solver runs of the fit stopped at their iteration limit before converging; "
                f"the final fit on all labels {final} (probe_config.json: fit.not_converged)")

    def decision_function(self, features: Any) -> np.ndarray:
        X = as_features(features, self.config.d_in)
        scores = np.asarray(X @ self.weight, dtype=np.float64) + self.bias
        self._refuse_absurd(scores, "score of row", self.score_bound,
                            "the features do not fit this probe (another SAE or layer?) or its weights are corrupt")
        return scores

    def predict(self, features: Any) -> np.ndarray:
        return self.decision_function(features)

    def top_features(self, k: int = 10) -> list[tuple[int, float]]:
        """The features with the largest |weight|: what to look up in a feature dashboard."""
        idx = np.argsort(-np.abs(self.weight), kind="stable")[:k]
        return [(int(i), float(self.weight[i])) for i in idx if self.weight[i] != 0]

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        write_tensors(path / WEIGHTS_NAME, {"weight": self.weight, "bias": np.asarray([self.bias], dtype=np.float32)})
        write_json(path / CONFIG_NAME, dataclasses.asdict(self.config))
        return path

    @classmethod
    def load(cls: type[P], path: str | os.PathLike[str]) -> P:
        from saerl_zoo.zoo.integrity import check_catalog_files

        path = Path(path)
        check_catalog_files(path)  # a probe the catalog knows is checked whichever route it comes by
        raw = read_json(path / CONFIG_NAME)
        try:
            config = ProbeConfig(**raw)
        except TypeError as err:
            raise ValueError(f"{path / CONFIG_NAME} is not a probe config: {err}") from err
        if config.probe != cls.kind:
            raise ValueError(f"{path} holds a {config.probe} probe, not a {cls.kind} probe")
        tensors = read_tensors(path / WEIGHTS_NAME)
        try:
            return cls(tensors["weight"], float(tensors["bias"][0]), config)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    def __repr__(self) -> str:
        return f"{type(self).__name__}(estimator={self.config.estimator!r}, d_in={self.config.d_in}, metrics={self.metrics})"
