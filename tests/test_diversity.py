from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from saerl_zoo.diversity import Clustering, cluster, default_n_clusters, purity


def blobs(n_per=60, k=4, d=200, seed=0):
    """k groups of prompts, each firing its own block of SAE features."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for c in range(k):
        block = np.arange(c * (d // k), (c + 1) * (d // k))
        for _ in range(n_per):
            row = np.zeros(d, dtype=np.float32)
            row[rng.choice(block, 6, replace=False)] = rng.exponential(1.0, 6)
            row[rng.choice(d, 2, replace=False)] += 0.1  # a little cross-talk
            rows.append(row)
            truth.append(c)
    return sp.csr_matrix(np.array(rows)), np.array(truth)


def test_kmeans_finds_planted_groups():
    X, truth = blobs()
    result = cluster(X, 4, seed=0)
    assert purity(result.labels, truth) == 1.0
    assert sorted(result.config.sizes) == [60, 60, 60, 60]


def test_kmeans_is_deterministic_by_seed():
    X, _ = blobs(seed=1)
    a, b = cluster(X, 7, seed=3), cluster(X, 7, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)


def test_assign_reproduces_labels_and_round_trips(tmp_path):
    X, _ = blobs(seed=2)
    result = cluster(X, 4, seed=0)
    np.testing.assert_array_equal(result.assign(X), result.labels)
    result.save(tmp_path / "c")
    loaded = Clustering.load(tmp_path / "c")
    np.testing.assert_array_equal(loaded.assign(X), result.labels)
    assert loaded.config == result.config


def test_default_k_and_errors():
    assert default_n_clusters(10) == 2
    assert default_n_clusters(2000) == 32
    assert default_n_clusters(10**6) == 100
    X, _ = blobs(n_per=2, k=2)
    with pytest.raises(ValueError, match="n_clusters=5"):
        cluster(X, 5)
