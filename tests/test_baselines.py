"""Surface-form baselines and the paired bootstrap (issue 17 items 3 and 4)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from saerl_zoo.baselines import length_digit_counts, surface_baselines, surface_scores
from saerl_zoo.bootstrap import paired_bootstrap


def digit_prompts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Prompts of one template whose label is the number of digits in the operand (1..5)."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(1, 6, n)
    texts = [f"What is {rng.integers(10 ** (d - 1), 10 ** d)} squared?" for d in digits]
    return texts, digits.astype(float)


def test_digit_count_that_sets_the_label_is_found():
    train, y_train = digit_prompts(120, 0)
    test, y_test = digit_prompts(80, 1)
    found = surface_baselines(train, y_train, test, y_test, "difficulty")
    assert found["length_digits"]["spearman"] > 0.99 and found["tfidf_char_1_3"]["spearman"] > 0.5
    q = surface_baselines(train, (y_train >= 3).astype(float), test, (y_test >= 3).astype(float), "quality")
    assert q["length_digits"]["auroc"] > 0.99


def test_metrics_are_the_hand_computed_ones_and_deterministic():
    train, y_train = digit_prompts(60, 2)
    test, y_test = digit_prompts(40, 3)
    scores = surface_scores(train, y_train, test, "difficulty")
    got = surface_baselines(train, y_train, test, y_test, "difficulty")
    for name, s in scores.items():
        assert got[name]["spearman"] == pytest.approx(stats.spearmanr(s, y_test).statistic, abs=1e-12)
    labels = (y_test >= 3).astype(float)
    q_scores = surface_scores(train, (y_train >= 3).astype(float), test, "quality")
    q = surface_baselines(train, (y_train >= 3).astype(float), test, labels, "quality")
    assert q["tfidf_char_1_3"]["auroc"] == pytest.approx(roc_auc_score(labels, q_scores["tfidf_char_1_3"]), abs=1e-12)
    assert surface_baselines(train, y_train, test, y_test, "difficulty") == got
    np.testing.assert_array_equal(length_digit_counts(["a1b22", ""]), [[5, 3], [0, 0]])


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="quality labels must be 0 \\(broken\\) and 1 \\(good\\)"):
        surface_scores(["a", "b"], [1, 1], ["c"], "quality")
    with pytest.raises(ValueError, match="unknown kind 'level'"):
        surface_scores(["a", "b"], [1, 2], ["c"], "level")


def mean_metric(_y: np.ndarray, s: np.ndarray) -> float:
    return float(s.mean())


def test_constant_gap_has_a_zero_width_interval():
    rng = np.random.default_rng(0)
    b = rng.normal(size=300)
    got = paired_bootstrap(mean_metric, np.zeros(300), b + 0.25, b, n_resamples=200, seed=1)
    assert got["gap"] == pytest.approx(0.25) and got["low"] == pytest.approx(0.25) and got["high"] == pytest.approx(0.25)


def test_interval_of_a_mean_gap_matches_the_normal_one():
    """Gap of means of paired 0/1 outcomes: the percentile interval ~ p ± 1.96 sqrt(p (1 - p) / n)."""
    n, p = 2000, 0.3
    a = (np.arange(n) < p * n).astype(float)
    got = paired_bootstrap(mean_metric, np.zeros(n), a, np.zeros(n), n_resamples=4000, seed=0)
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    assert got["gap"] == pytest.approx(p)
    assert got["low"] == pytest.approx(p - half, abs=0.004) and got["high"] == pytest.approx(p + half, abs=0.004)


def test_perfect_vs_reversed_spearman_is_exactly_two_and_seeded():
    y = np.arange(50, dtype=float)
    spearman = lambda t, s: float(stats.spearmanr(s, t).statistic)  # noqa: E731
    got = paired_bootstrap(spearman, y, y, -y, n_resamples=100, seed=3)
    assert (got["gap"], got["low"], got["high"]) == pytest.approx((2.0, 2.0, 2.0))
    noisy = y + np.random.default_rng(0).normal(scale=20, size=50)
    assert paired_bootstrap(spearman, y, y, noisy, seed=5) == paired_bootstrap(spearman, y, y, noisy, seed=5)
