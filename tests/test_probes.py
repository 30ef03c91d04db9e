from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from saerl_zoo.difficulty import DifficultyProbe
from saerl_zoo.quality import QualityProbe


def planted(n=400, d=300, active=12, seed=0):
    """Sparse non-negative codes and a target that is linear in 5 of the features."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=active / d, random_state=rng, data_rvs=lambda k: rng.exponential(1.0, k), format="lil")
    signal = rng.choice(d, 5, replace=False)
    for j in signal:  # the informative features fire on about 40% of prompts, like common SAE features
        on = rng.random(n) < 0.4
        X[np.flatnonzero(on), j] = rng.exponential(1.0, on.sum())[:, None]
    X = X.tocsr()
    w = np.zeros(d)
    w[signal] = rng.choice([-1.0, 1.0], 5) * rng.uniform(1, 2, 5)
    y = np.asarray(X @ w).ravel()
    return X.astype(np.float32), y, signal


def test_difficulty_probe_recovers_planted_signal():
    X, y, signal = planted()
    y_noisy = y + np.random.default_rng(1).normal(0, 0.1 * y.std(), len(y))
    probe = DifficultyProbe.fit(X, y_noisy, seed=0)
    assert probe.metrics["spearman"] > 0.9
    assert {i for i, _ in probe.top_features(5)} == set(signal.tolist())
    assert np.corrcoef(probe.predict(X), y)[0, 1] > 0.95


def test_difficulty_probe_is_at_chance_on_noise():
    X, _, _ = planted()
    noise = np.random.default_rng(3).normal(size=X.shape[0])
    assert abs(DifficultyProbe.fit(X, noise, seed=0).metrics["spearman"]) < 0.3


def test_difficulty_probe_round_trips(tmp_path):
    X, y, _ = planted()
    probe = DifficultyProbe.fit(X, y)
    probe.save(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["probe.safetensors", "probe_config.json"]
    loaded = DifficultyProbe.load(tmp_path / "p")
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))
    assert loaded.config == probe.config


def test_quality_logistic_recovers_planted_signal(tmp_path):
    X, y, _ = planted(seed=5)
    labels = (y > np.median(y)).astype(int)
    probe = QualityProbe.fit(X, labels, kind="logistic")
    assert probe.metrics["auroc"] > 0.9
    p = probe.predict(X)
    assert p.min() >= 0 and p.max() <= 1
    probe.save(tmp_path / "q")
    np.testing.assert_array_equal(QualityProbe.load(tmp_path / "q").predict(X), p)


def test_quality_ridge_on_scores():
    X, y, _ = planted(seed=7)
    probe = QualityProbe.fit(X, y, kind="ridge")
    assert probe.config.estimator == "ridge"
    assert probe.metrics["spearman"] > 0.9


def test_keep_mask_drops_the_predicted_worst():
    X, y, _ = planted(seed=5)
    probe = QualityProbe.fit(X, (y > np.median(y)).astype(int))
    keep = probe.keep_mask(X, keep_fraction=0.5)
    assert keep.sum() == len(y) // 2
    assert y[keep].mean() > y[~keep].mean()


def test_probe_kinds_are_not_interchangeable(tmp_path):
    X, y, _ = planted()
    DifficultyProbe.fit(X, y).save(tmp_path / "d")
    with pytest.raises(ValueError, match="difficulty probe, not a quality probe"):
        QualityProbe.load(tmp_path / "d")


def test_probe_bad_inputs(tmp_path):
    X, y, _ = planted()
    with pytest.raises(ValueError, match="targets for"):
        DifficultyProbe.fit(X, y[:-1])
    with pytest.raises(ValueError, match="constant"):
        DifficultyProbe.fit(X, np.ones(X.shape[0]))
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DifficultyProbe.fit(bad, y)
    with pytest.raises(ValueError, match="0 \\(bad\\) or 1"):
        QualityProbe.fit(X, y, kind="logistic")
    probe = DifficultyProbe.fit(X, y)
    with pytest.raises(ValueError, match="d_in=300"):
        probe.predict(X[:, :10])
    with pytest.raises(FileNotFoundError):
        DifficultyProbe.load(tmp_path / "missing")
    probe.save(tmp_path / "p")
    (tmp_path / "p" / "probe.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        DifficultyProbe.load(tmp_path / "p")
