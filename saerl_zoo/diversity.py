"""Diversity: k-means clusters of prompts in SAE feature space.

Prompts that light up the same SAE features exercise the same skills; SaeRL
builds each batch mostly from one cluster (coherent gradients) and rotates
across clusters from batch to batch (coverage). Codes are L2-normalised first by
default, so clusters follow which features fire rather than how long a prompt
is. The centres are kept, so new prompts can be assigned to the same clusters.
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
        dist = -2 * np.asarray(X @ self.centers.T) + (self.centers**2).sum(1)[None, :]
        return dist.argmin(1).astype(np.int64)

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


def cluster(
    features: Any,
    n_clusters: int | None = None,
    *,
    seed: int = 0,
    normalize: bool = True,
    n_init: int = 3,
    max_iter: int = 100,
) -> Clustering:
    """k-means on sparse SAE codes, deterministic for a seed. `n_clusters` defaults to `default_n_clusters(n)`."""
    X = as_features(features)
    k = default_n_clusters(X.shape[0]) if n_clusters is None else int(n_clusters)
    if not 1 <= k <= X.shape[0]:
        raise ValueError(f"n_clusters={k} must be between 1 and the number of prompts ({X.shape[0]})")
    if normalize:
        X = l2_normalize(X)
    km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(X)
    labels = km.labels_.astype(np.int64)
    config = ClusteringConfig(
        n_clusters=k,
        d_in=X.shape[1],
        normalize=normalize,
        seed=seed,
        inertia=float(km.inertia_),
        sizes=np.bincount(labels, minlength=k).tolist(),
    )
    return Clustering(labels=labels, centers=km.cluster_centers_.astype(np.float32), config=config)


def purity(labels: Any, truth: Any) -> float:
    """Fraction of prompts whose cluster's majority true class is their own (evaluation only)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    _, truth_ids = np.unique(truth, return_inverse=True)
    total = 0
    for c in np.unique(labels):
        total += np.bincount(truth_ids[labels == c]).max()
    return total / len(labels)
