"""An affine map from model B's residual stream into host model A's: y = x @ weight + bias.

Every fitting method (ridge, orthogonal Procrustes after whitening, CCA, and the
identity baseline) ends in the same affine form, so a stitch is always two
tensors plus its config, applies as one matmul, and can be compared with any
other stitch by the same held-out explained variance.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from saerl_zoo.storage import read_json, read_tensors, write_json, write_tensors

CONFIG_NAME = "stitch_config.json"
WEIGHTS_NAME = "stitch.safetensors"
Method = Literal["ridge", "procrustes", "cca", "identity"]
Pairing = Literal["prompt", "token"]
METHODS: tuple[str, ...] = typing.get_args(Method)
PAIRINGS: tuple[str, ...] = typing.get_args(Pairing)
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 9))
CCA_PCA_DIMS = 128  # CCA runs in at most this many principal components of each side (SVCCA) ...
CCA_ROWS_PER_DIM = 10  # ... and in at most one per 10 pairs: whitening more dims than the data supports blows up noise


@dataclasses.dataclass
class StitchConfig:
    """Everything needed to apply a stitch correctly (and to know where it is valid), saved next to its weights.

    `source_*` is the new model B whose activations the map reads; `target_*` is
    the SAE's host model A whose residual stream it predicts.
    """

    method: str  # ridge, procrustes, cca or identity
    source_model: str
    source_layer: int
    source_hook: str  # module name of B's decoder block (the SAE wrapper hooks it)
    d_source: int
    target_model: str
    target_layer: int
    target_hook: str
    d_target: int
    sae: str  # the host SAE the mapped activations feed (catalog name or path)
    pairing: str  # "prompt": mean-pooled per text; "token": tokens aligned by character offsets
    corpus: dict[str, Any]  # path / sha256 / n_texts / n_pairs of the shared fitting corpus
    hyperparameters: dict[str, Any]  # chosen on a validation split of the training texts
    metrics: dict[str, Any]  # held-out (test texts, before the final refit on all texts), with the identity baseline
    pooling: str = "mean"  # how prompt-level pairs pool tokens (the featurizer's pooling)
    identity: str | None = None  # identity map only: "exact", "truncated" (d_source > d_target) or "padded"
    seed: int = 0
    version: int = 1
    # `saerl_zoo.transfer.scorer.model_fingerprint` of B and A at fit time: what `check_stitch_model` compares
    # before a forward pass (None: fitted from saved activations or before fingerprints were kept)
    source_fingerprint: str | None = None
    target_fingerprint: str | None = None
    # `saerl_zoo.preprocessing.SaePreprocessing` of the host SAE that both models' activations were collected with
    # (token limit, special tokens, BOS, attention sinks): `check_stitch_preprocessing` refuses an SAE recording another
    preprocessing: dict[str, Any] | None = None


def identity_kind(d_source: int, d_target: int) -> str:
    """How the no-map baseline lines up two widths: exact, truncated (extra source dims dropped) or padded (zeros)."""
    return "exact" if d_source == d_target else ("truncated" if d_source > d_target else "padded")


def identity_map(d_source: int, d_target: int) -> tuple[np.ndarray, np.ndarray]:
    """The no-map baseline: B's dims read as A's, the first min(d_source, d_target) of them (rest dropped or zero)."""
    return np.eye(d_source, d_target, dtype=np.float32), np.zeros(d_target, dtype=np.float32)


def explained_variance(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """1 - SSE / total variance around the true mean, summed over dimensions (as `sae_metrics` measures it)."""
    y_true = np.asarray(y_true, dtype=np.float64)
    resid = ((y_true - np.asarray(y_pred, dtype=np.float64)) ** 2).sum()
    total = ((y_true - y_true.mean(0)) ** 2).sum()
    return float(1.0 - resid / total) if total > 0 else float("nan")


def check_pairs(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two float matrices with one row per pair; a clear error for anything else."""
    X, Y = np.asarray(X, dtype=np.float32), np.asarray(Y, dtype=np.float32)
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"source and target activations must be 2-D (pairs x dims), got shapes {X.shape} and {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{X.shape[0]} source rows but {Y.shape[0]} target rows: activations must be paired row by row")
    if X.shape[0] < 4:
        raise ValueError(f"{X.shape[0]} pairs are too few to fit a map")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("activations contain NaN or inf")
    return X, Y


def hyperparameter_grid(method: str, d_source: int, d_target: int, n_rows: int) -> list[Any]:
    """Candidates for the one knob of each method: ridge alpha, or the number of whitened / canonical components."""
    if method == "ridge":
        return list(RIDGE_ALPHAS)
    if method == "identity":
        return [None]
    k_max = min(d_source, d_target, n_rows - 1)
    if method == "cca":
        k_max = max(1, min(k_max, CCA_PCA_DIMS, n_rows // CCA_ROWS_PER_DIM))
    if method not in ("procrustes", "cca"):
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    grid = [k for k in (2, 4, 8, 16, 32, 64, 128, 256, 512) if k < k_max]
    return grid + [k_max]


def fit_affine(X: np.ndarray, Y: np.ndarray, method: str, hyperparameter: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(weight d_source x d_target, bias d_target) of one method at one hyperparameter value."""
    X, Y = check_pairs(X, Y)
    d_x, d_y = X.shape[1], Y.shape[1]
    if method == "identity":
        return identity_map(d_x, d_y)
    if method == "ridge":
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        # standardise the source dims: residual streams have a few huge-norm dims that would otherwise take the whole penalty
        scaler = StandardScaler().fit(X)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        model = Ridge(alpha=float(hyperparameter)).fit((X - scaler.mean_) / scale, Y)
        weight = model.coef_.T.astype(np.float64) / scale[:, None]
        bias = model.intercept_ - scaler.mean_ @ weight
        return weight.astype(np.float32), bias.astype(np.float32)
    if method == "procrustes":
        from scipy.linalg import orthogonal_procrustes
        from sklearn.decomposition import PCA

        k = int(hyperparameter)
        px = PCA(n_components=k, whiten=True, random_state=seed).fit(X)
        py = PCA(n_components=k, whiten=True, random_state=seed).fit(Y)
        rotation, _ = orthogonal_procrustes(px.transform(X), py.transform(Y))
        # whiten B, rotate, un-whiten into A: x -> ((x - mx) Wx) R Dy + my
        whiten_x = px.components_.T / np.sqrt(px.explained_variance_)[None, :]
        unwhiten_y = np.sqrt(py.explained_variance_)[:, None] * py.components_
        weight = whiten_x @ rotation @ unwhiten_y
        bias = py.mean_ - px.mean_ @ weight
        return weight.astype(np.float32), bias.astype(np.float32)
    if method == "cca":
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LinearRegression

        # SVCCA in closed form: whiten each side in its top principal components; the SVD of the whitened
        # cross-covariance gives the canonical directions exactly (sklearn's iterative CCA took 20-80 s per fit
        # and grid point at these sizes, single-threaded: 8000 pairs x 128 dims, 1200 x 640); then least
        # squares from the k most correlated directions of B to A.
        n_pca = max(1, min(CCA_PCA_DIMS, d_x, d_y, X.shape[0] // CCA_ROWS_PER_DIM))
        px = PCA(n_components=n_pca, whiten=True, random_state=seed).fit(X)
        py = PCA(n_components=n_pca, whiten=True, random_state=seed).fit(Y)
        zx = px.transform(X)
        u, _, _ = np.linalg.svd(zx.T @ py.transform(Y) / (X.shape[0] - 1))
        directions = u[:, : int(hyperparameter)]
        regression = LinearRegression().fit(zx @ directions, Y)
        whiten_x = px.components_.T / np.sqrt(px.explained_variance_)[None, :]  # x -> (x - mean) @ whiten_x
        weight = whiten_x @ directions @ regression.coef_.T
        bias = regression.intercept_ - px.mean_ @ weight
        return weight.astype(np.float32), bias.astype(np.float32)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


class StitchMap:
    """A fitted stitch: `apply` takes B's activations (... x d_source) to A's residual stream (... x d_target)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, config: StitchConfig):
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32).reshape(-1)
        self.config = config
        if self.weight.shape != (config.d_source, config.d_target) or self.bias.shape != (config.d_target,):
            raise ValueError(
                f"stitch weights are {self.weight.shape} + bias {self.bias.shape} but the config says "
                f"d_source={config.d_source}, d_target={config.d_target}"
            )

    @property
    def metrics(self) -> dict[str, Any]:
        return self.config.metrics

    def apply(self, x: Any) -> Any:
        """Map source activations into the target space; numpy in, numpy out; torch in, torch out (same device/dtype)."""
        width = x.shape[-1]
        if width != self.config.d_source:
            raise ValueError(
                f"this stitch reads {self.config.d_source}-dim activations of {self.config.source_model} "
                f"(layer {self.config.source_layer}); got {width}-dim ones"
            )
        if isinstance(x, torch.Tensor):
            w = torch.as_tensor(self.weight, device=x.device, dtype=x.dtype)
            return x @ w + torch.as_tensor(self.bias, device=x.device, dtype=x.dtype)
        return np.asarray(x, dtype=np.float32) @ self.weight + self.bias

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        write_tensors(path / WEIGHTS_NAME, {"weight": self.weight, "bias": self.bias})
        write_json(path / CONFIG_NAME, dataclasses.asdict(self.config))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StitchMap:
        from saerl_zoo.zoo.integrity import check_catalog_files

        path = Path(path)
        check_catalog_files(path)  # a stitch the catalog knows is checked whichever route it comes by
        raw = read_json(path / CONFIG_NAME)
        try:
            config = StitchConfig(**raw)
        except TypeError as err:
            raise ValueError(f"{path / CONFIG_NAME} is not a stitch config: {err}") from err
        tensors = read_tensors(path / WEIGHTS_NAME)
        if {"weight", "bias"} - tensors.keys():
            raise ValueError(f"{path / WEIGHTS_NAME} is not a stitch (needs 'weight' and 'bias')")
        return cls(tensors["weight"], tensors["bias"], config)

    def __repr__(self) -> str:
        c = self.config
        return (f"StitchMap({c.method}, {c.source_model}[{c.source_layer}] {c.d_source}d -> "
                f"{c.target_model}[{c.target_layer}] {c.d_target}d, held-out EV {c.metrics.get('explained_variance')})")
