"""Diversity: k-means clusters of prompts in SAE feature space.

Prompts that light up the same SAE features exercise the same skills; SaeRL
builds each batch mostly from one cluster (coherent gradients) and rotates
across clusters from batch to batch (coverage). Codes are L2-normalised first by
default, so clusters follow which features fire rather than how long a prompt
is. The centres are kept, so new prompts can be assigned to the same clusters.

Two algorithms, one objective (Euclidean k-means on the rows as given):

* up to ``EXACT_MAX_ROWS`` prompts, scikit-learn's ``KMeans`` (Lloyd, k-means++,
  ``n_init`` restarts) — a few seconds at that size;
* above it, :func:`sparse_kmeans`: k-means++ on a sample, Lloyd refined on
  nested samples that grow 4× at a time, then full passes until fewer than
  0.1% of the labels change. Every pass is one sparse × dense product (CSR
  codes × k dense centres, chunked by rows so memory stays O(chunk × k)) and
  one sparse × sparse sum for the new centres; nothing dense of size
  n × d_sae is ever built. 1M prompts × 16k features, k = 100 takes well under
  a minute on 2 CPU cores (benchmarks/bench_scale.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.preprocessing import normalize as l2_normalize

from saerl_zoo.probe import as_features
from saerl_zoo.storage import read_json, read_tensors, write_json, write_tensors

CONFIG_NAME = "clusters_config.json"
WEIGHTS_NAME = "clusters.safetensors"
EXACT_MAX_ROWS = 20_000  # up to this many prompts: sklearn KMeans; above: sparse_kmeans
_ROW_CHUNK = 1 << 16  # rows per sparse × dense block: 65k × k floats of distances at a time


def default_n_clusters(n_prompts: int) -> int:
    """sqrt(n/2), between 2 and 100: ~30 clusters for 2k prompts, 100 from 20k on."""
    return int(min(100, max(2, round(math.sqrt(n_prompts / 2)))))


@dataclasses.dataclass
class ClusteringConfig:
    n_clusters: int
    d_in: int
    normalize: bool
    seed: int
    inertia: float
    sizes: list[int]
    version: int = 1


@dataclasses.dataclass
class Clustering:
    """Cluster label of each prompt, plus the centres to label new prompts."""

    labels: np.ndarray
    centers: np.ndarray
    config: ClusteringConfig

    def _prepare(self, features: Any) -> sp.csr_matrix:
        X = as_features(features, self.config.d_in)
        return l2_normalize(X) if self.config.normalize else X

    def assign(self, features: Any) -> np.ndarray:
        """Nearest centre of each row (the same rule k-means used)."""
        X = self._prepare(features)
        return _nearest(X, self.centers.astype(np.float32))[0]

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        write_tensors(path / WEIGHTS_NAME, {"centers": self.centers.astype(np.float32), "labels": self.labels.astype(np.int64)})
        write_json(path / CONFIG_NAME, dataclasses.asdict(self.config))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Clustering:
        path = Path(path)
        config = ClusteringConfig(**read_json(path / CONFIG_NAME))
        t = read_tensors(path / WEIGHTS_NAME)
        return cls(labels=t["labels"], centers=t["centers"], config=config)


def _row_norms_sq(X: sp.csr_matrix) -> np.ndarray:
    """||x||² of each CSR row, in float64, without copying the matrix."""
    out = np.empty(X.shape[0], dtype=np.float64)
    for start in range(0, X.shape[0], _ROW_CHUNK):
        stop = min(X.shape[0], start + _ROW_CHUNK)
        indptr = X.indptr[start : stop + 1]
        squares = np.concatenate([[0.0], np.cumsum(X.data[indptr[0] : indptr[-1]].astype(np.float64) ** 2)])
        out[start:stop] = np.diff(squares[indptr - indptr[0]])
    return out


def _nearest(X: sp.csr_matrix, centers: np.ndarray, norms_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label and squared distance of each row to its nearest centre, in row chunks.

    ||x - c||² = ||x||² - 2 x·c + ||c||²; the products are one sparse × dense
    matmul per chunk (scipy: single-threaded, so deterministic and immune to
    the thread oversubscription that makes small multi-threaded ops crawl on
    a busy machine).
    """
    n = X.shape[0]
    X = X if X.dtype == np.float32 else X.astype(np.float32)
    minus_2ct = np.ascontiguousarray(-2.0 * centers.T, dtype=np.float32)
    c2 = (centers.astype(np.float64) ** 2).sum(1).astype(np.float32)
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    for start in range(0, n, _ROW_CHUNK):
        stop = min(n, start + _ROW_CHUNK)
        d = np.asarray(X[start:stop] @ minus_2ct)
        d += c2
        best = d.argmin(1)
        labels[start:stop] = best
        dist[start:stop] = np.take_along_axis(d, best[:, None], 1)[:, 0]
    dist += _row_norms_sq(X) if norms_sq is None else norms_sq
    np.maximum(dist, 0, out=dist)
    return labels, dist


def _means(X: sp.csr_matrix, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster mean rows (dense k × d, float64 sums) and cluster sizes, by row chunks of the CSR triplets."""
    n, d = X.shape
    sums = np.zeros(k * d, dtype=np.float64)
    flat = np.int64 if k * d >= 2**31 else np.int32
    for start in range(0, n, 2 * _ROW_CHUNK):
        stop = min(n, start + 2 * _ROW_CHUNK)
        lo, hi = X.indptr[start], X.indptr[stop]
        owner = np.repeat(labels[start:stop].astype(flat), np.diff(X.indptr[start : stop + 1]))
        sums += np.bincount(owner * d + X.indices[lo:hi], weights=X.data[lo:hi], minlength=k * d)
    sizes = np.bincount(labels, minlength=k)
    return sums.reshape(k, d) / np.maximum(sizes, 1)[:, None], sizes


def _kmeans_plusplus(X: sp.csr_matrix, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (as scikit-learn's: 2 + log k candidates per step, keep the best), for CSR rows.

    scikit-learn's own `kmeans_plusplus` upcasts float32 sparse rows chunk by
    chunk and spends seconds per 10k rows; here each step is one sparse ×
    dense product with the candidates.
    """
    n = X.shape[0]
    trials = 2 + int(np.log(k))
    norms = _row_norms_sq(X)
    centers = np.empty((k, X.shape[1]), dtype=np.float32)

    def sq_dist(rows: np.ndarray) -> np.ndarray:
        dense = X[rows].toarray()
        d = norms[:, None] - 2 * np.asarray(X @ dense.T, dtype=np.float64) + (dense.astype(np.float64) ** 2).sum(1)[None, :]
        return np.maximum(d, 0), dense

    first = int(rng.integers(n))
    closest, dense = sq_dist(np.asarray([first]))
    closest, centers[0] = closest[:, 0], dense[0]
    potential = closest.sum()
    for c in range(1, k):
        if potential <= 0:  # fewer distinct rows than clusters: any row will do
            picks = rng.integers(n, size=trials)
        else:
            picks = np.minimum(np.searchsorted(np.cumsum(closest), rng.random(trials) * potential), n - 1)
        dist, dense = sq_dist(picks)
        candidate = np.minimum(closest[:, None], dist)
        best = int(candidate.sum(0).argmin())
        closest, centers[c] = candidate[:, best], dense[best]
        potential = closest.sum()
    return centers


def _lloyd(
    X: sp.csr_matrix, centers: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Lloyd passes from `centers` until under `tol` of the labels change; returns labels, centres, distances, passes.

    The returned labels are the nearest-centre labels of the returned centres
    (a last assignment after the last update), so `Clustering.assign` reproduces them.
    """
    k = centers.shape[0]
    norms_sq = _row_norms_sq(X)
    labels, dist = _nearest(X, centers, norms_sq)
    passes = 0
    for passes in range(1, max_iter + 1):
        means, sizes = _means(X, labels, k)
        empty = np.flatnonzero(sizes == 0)
        if len(empty):  # re-seed empty clusters on the points farthest from their centre
            far = np.argsort(-dist, kind="stable")[: len(empty)]
            means[empty] = X[far].toarray()
        centers = means.astype(np.float32)
        new_labels, dist = _nearest(X, centers, norms_sq)
        changed = np.count_nonzero(new_labels != labels)
        labels = new_labels
        if changed <= tol * X.shape[0]:
            break
    return labels, centers, dist, passes


def sparse_kmeans(
    features: Any,
    n_clusters: int,
    *,
    seed: int = 0,
    n_init: int = 3,
    max_iter: int = 100,
    tol: float = 1e-3,
    init_size: int = 16_384,
) -> tuple[np.ndarray, np.ndarray, float, dict[str, Any]]:
    """Fast k-means for large sparse matrices, deterministic for a seed.

    1. greedy k-means++ (scikit-learn's rule) on a random sample of ``init_size``
       rows, ``n_init`` times; Lloyd on that sample; keep the lowest inertia;
    2. Lloyd on nested random samples 4× larger each time (cheap passes that
       move the centres most of the way);
    3. Lloyd passes on all rows until at most ``tol`` of the labels change,
       or ``max_iter`` passes.

    Returns ``(labels, centers, inertia, info)``; ``labels`` are the nearest
    centres of ``centers``. The rows are clustered as given (no normalisation).
    """
    X = as_features(features)
    n, k = X.shape[0], int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters={k} must be between 1 and the number of prompts ({n})")
    X.sort_indices()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    sizes = [min(n, max(init_size, 4 * k))]
    while sizes[-1] < n:
        sizes.append(min(n, sizes[-1] * 4))
    info: dict[str, Any] = {"algorithm": "sparse_kmeans", "levels": [], "n_init": n_init}

    sample = X[np.sort(perm[: sizes[0]])]
    best = None
    for trial in range(max(1, n_init)):
        init = _kmeans_plusplus(sample, k, rng)
        _, centers, dist, passes = _lloyd(sample, init, 20, tol)
        if best is None or dist.sum() < best[1]:
            best = (centers, float(dist.sum()), trial, passes)
    centers = best[0]
    info["levels"].append({"rows": sizes[0], "passes": best[3], "best_init": best[2]})
    for m in sizes[1:-1]:
        _, centers, _, passes = _lloyd(X[np.sort(perm[:m])], centers, 10, tol)
        info["levels"].append({"rows": m, "passes": passes})
    labels, centers, dist, passes = _lloyd(X, centers, max_iter, tol)
    info["levels"].append({"rows": n, "passes": passes})
    return labels, centers, float(dist.sum()), info


def cluster(
    features: Any,
    n_clusters: int | None = None,
    *,
    seed: int = 0,
    normalize: bool = True,
    n_init: int = 3,
    max_iter: int = 100,
) -> Clustering:
    """k-means on sparse SAE codes, deterministic for a seed. `n_clusters` defaults to `default_n_clusters(n)`.

    Up to ``EXACT_MAX_ROWS`` prompts this is scikit-learn's ``KMeans``
    (``n_init`` restarts of full Lloyd); above, :func:`sparse_kmeans`, which
    scales linearly in the number of prompts and never densifies the codes.
    """
    X = as_features(features)
    k = default_n_clusters(X.shape[0]) if n_clusters is None else int(n_clusters)
    if not 1 <= k <= X.shape[0]:
        raise ValueError(f"n_clusters={k} must be between 1 and the number of prompts ({X.shape[0]})")
    if normalize:
        X = l2_normalize(X)
    if X.shape[0] <= EXACT_MAX_ROWS:
        km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(X)
        labels, centers, inertia = km.labels_.astype(np.int64), km.cluster_centers_, float(km.inertia_)
    else:
        labels, centers, inertia, _ = sparse_kmeans(X, k, seed=seed, n_init=n_init, max_iter=max_iter)
    config = ClusteringConfig(
        n_clusters=k,
        d_in=X.shape[1],
        normalize=normalize,
        seed=seed,
        inertia=inertia,
        sizes=np.bincount(labels, minlength=k).tolist(),
    )
    return Clustering(labels=labels, centers=np.asarray(centers, dtype=np.float32), config=config)


def purity(labels: Any, truth: Any) -> float:
    """Fraction of prompts whose cluster's majority true class is their own (evaluation only)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    _, truth_ids = np.unique(truth, return_inverse=True)
    total = 0
    for c in np.unique(labels):
        total += np.bincount(truth_ids[labels == c]).max()
    return total / len(labels)
