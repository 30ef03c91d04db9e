"""Surface-form baselines for a probe: what the text's characters alone predict, on the same labels and split.

A difficulty or quality probe on SAE codes is only worth its cost by what it
adds over the prompt's surface: on the arithmetic pool the digit count alone
has Spearman 0.83 with the true level. Every table that reports probe quality
reports these next to it, fitted on exactly the labels and held-out prompts
the SAE probe was scored on:

* `tfidf_char_1_3`: TF-IDF of character 1-3-grams, ridge (difficulty) or
  logistic regression (quality), the regularisation chosen by cross-validation
  on the training prompts only;
* `length_digits`: a linear / logistic model on two counts, characters and digits.

Metrics are the SAE probe's: Spearman with the truth (difficulty), AUROC (quality).
Everything is deterministic: no random state is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

Kind = Literal["difficulty", "quality"]
KINDS: tuple[str, ...] = ("difficulty", "quality")
METRIC = {"difficulty": "spearman", "quality": "auroc"}
ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 6))  # ridge strengths tried (difficulty)
CS = tuple(float(c) for c in np.logspace(-2, 3, 6))  # inverse strengths tried (quality)
N_FOLDS = 5


def length_digit_counts(texts: Sequence[str]) -> np.ndarray:
    """Characters and digits of each text (texts x 2)."""
    return np.array([[len(t), sum(c.isdigit() for c in t)] for t in texts], dtype=np.float64)


def _model(name: str, kind: str) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if name == "tfidf_char_1_3":
        features = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        if kind == "difficulty":
            return make_pipeline(features, RidgeCV(alphas=ALPHAS))
        # the strength is chosen by AUROC on folds of the training prompts (unshuffled folds: deterministic)
        head = GridSearchCV(LogisticRegression(max_iter=2000), {"C": CS}, cv=StratifiedKFold(N_FOLDS), scoring="roc_auc")
        return make_pipeline(features, head)
    counts = FunctionTransformer(length_digit_counts)
    head = LinearRegression() if kind == "difficulty" else LogisticRegression(max_iter=2000)
    return make_pipeline(counts, StandardScaler(), head)


BASELINES: tuple[str, ...] = ("tfidf_char_1_3", "length_digits")


def surface_scores(texts_train: Sequence[str], y_train: Sequence[float], texts_test: Sequence[str], kind: Kind) -> dict[str, np.ndarray]:
    """Each baseline's score of every test text (higher = harder / more likely good), fitted on the training texts."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    texts_train, texts_test = list(texts_train), list(texts_test)
    y = np.asarray(y_train, dtype=np.float64)
    if len(texts_train) != len(y) or not len(y):
        raise ValueError(f"{len(texts_train)} training texts for {len(y)} labels")
    if not np.isfinite(y).all():
        raise ValueError("training labels contain NaN or inf")
    if kind == "quality" and set(np.unique(y)) != {0.0, 1.0}:
        raise ValueError("quality labels must be 0 (broken) and 1 (good), both present")
    out = {}
    for name in BASELINES:
        model = _model(name, kind).fit(texts_train, y if kind == "difficulty" else y.astype(int))
        out[name] = model.predict(texts_test) if kind == "difficulty" else model.predict_proba(texts_test)[:, 1]
    return out


def score_metric(kind: Kind, y_true: np.ndarray, scores: np.ndarray) -> float:
    """The probe's metric: Spearman (difficulty) or AUROC (quality) of `scores` against `y_true`."""
    if kind == "difficulty":
        return float(stats.spearmanr(scores, y_true).statistic)
    return float(roc_auc_score(y_true, scores))


def surface_baselines(texts_train: Sequence[str], y_train: Sequence[float], texts_test: Sequence[str], y_test: Sequence[float],
                      kind: Kind) -> dict[str, dict[str, float]]:
    """{baseline: {metric: value}} on the test texts, e.g. {"tfidf_char_1_3": {"spearman": 0.85}, "length_digits": {...}}."""
    texts_train, texts_test, y_test = list(texts_train), list(texts_test), np.asarray(y_test, dtype=np.float64)
    if len(y_test) != len(texts_test):
        raise ValueError(f"{len(texts_test)} test texts for {len(y_test)} labels")
    scores = surface_scores(texts_train, y_train, texts_test, kind)
    return {name: {METRIC[kind]: score_metric(kind, y_test, s), "n_train": len(texts_train), "n_test": len(y_test)}
            for name, s in scores.items()}


def compare_with_surface(texts: Sequence[str], train_index: Sequence[int], y_train: Sequence[float], test_index: Sequence[int],
                         y_test: Sequence[float], probe_scores: np.ndarray, kind: Kind, seed: int = 0) -> dict[str, Any]:
    """The surface baselines next to an SAE probe whose scores of all `texts` are `probe_scores`: each baseline is
    fitted on the probe's training prompts and labels, scored on its test prompts, and the probe's metric minus the
    baseline's gets a paired bootstrap interval over those prompts (what the SAE adds beyond the surface)."""
    from saerl_zoo.bootstrap import paired_bootstrap

    texts, test_index, y_test = list(texts), np.asarray(test_index), np.asarray(y_test, dtype=np.float64)
    test_texts = [texts[i] for i in test_index]
    scores = surface_scores([texts[i] for i in train_index], y_train, test_texts, kind)
    probe = np.asarray(probe_scores, dtype=np.float64)[test_index]
    metric = METRIC[kind]
    out: dict[str, Any] = {"sae_probe": {metric: score_metric(kind, y_test, probe)}, "n_train": len(list(train_index)), "n_test": len(test_index)}
    for name, s in scores.items():
        out[name] = {metric: score_metric(kind, y_test, s),
                     "sae_minus_baseline": paired_bootstrap(lambda t, x: score_metric(kind, t, x), y_test, probe, s, seed=seed)}
    return out
