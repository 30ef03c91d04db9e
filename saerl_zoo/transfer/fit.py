"""Fit a stitch: choose B's layer and the method's knob by held-out fit, report it next to the identity baseline.

Splits are by text, never by token: tokens of one text share most of their
context, so a token-level split would leak and flatter every map. The texts are
cut three ways: the map's knob (ridge alpha, number of components) is chosen on
a validation part of the training texts, the reported metrics come from test
texts no choice has seen, and the shipped map is refitted on every text with
the chosen knob (as the probes are).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from saerl_zoo.preprocessing import SaePreprocessing, sae_preprocessing
from saerl_zoo.transfer.activations import Pairs, TextActivations, make_pairs
from saerl_zoo.transfer.maps import (
    METHODS,
    PAIRINGS,
    StitchConfig,
    StitchMap,
    explained_variance,
    fit_affine,
    hyperparameter_grid,
    identity_kind,
    identity_map,
)


def split_texts(n_texts: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (kept, held-out) split of text indices."""
    if not 0 < fraction < 1:
        raise ValueError("the held-out fraction must be in (0, 1)")
    n_held = max(1, int(round(n_texts * fraction)))
    if n_texts - n_held < 2:
        raise ValueError(f"{n_texts} texts are too few to fit a map and hold some out")
    perm = np.random.default_rng(seed).permutation(n_texts)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def _rows(pairs: Pairs, texts: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(pairs.groups, texts))


def choose_and_score(pairs: Pairs, method: str, train: np.ndarray, test: np.ndarray, seed: int) -> tuple[Any, float, dict[str, float]]:
    """Pick the method's knob on a validation part of the `train` texts, then score a refit on all `train` texts on `test`.

    Returns (knob, held-out explained variance, validation EV of every knob tried).
    """
    fit_texts, val_texts = split_texts(len(train), 0.2, seed + 1)
    fit_rows, val_rows = _rows(pairs, train[fit_texts]), _rows(pairs, train[val_texts])
    grid = hyperparameter_grid(method, pairs.X.shape[1], pairs.Y.shape[1], len(fit_rows))
    scores: dict[str, float] = {}
    for knob in grid:
        weight, bias = fit_affine(pairs.X[fit_rows], pairs.Y[fit_rows], method, knob, seed)
        scores[str(knob)] = explained_variance(pairs.Y[val_rows], pairs.X[val_rows] @ weight + bias)
    best = grid[int(np.nanargmax([scores[str(k)] for k in grid]))]
    train_rows, test_rows = _rows(pairs, train), _rows(pairs, test)
    weight, bias = fit_affine(pairs.X[train_rows], pairs.Y[train_rows], method, best, seed)
    return best, explained_variance(pairs.Y[test_rows], pairs.X[test_rows] @ weight + bias), scores


def select_layer(source: TextActivations, target: TextActivations, target_layer: int, candidates: Sequence[int],
                 pairing: str = "token", seed: int = 0, heldout_fraction: float = 0.2,
                 progress: bool = False) -> tuple[int, dict[int, float]]:
    """B's layer whose ridge map predicts A's held-out activations best.

    Scored on the validation texts (best alpha), never on the test texts, whose
    explained variance `fit_stitch` reports for the chosen layer.
    """
    train, test = split_texts(source.n_texts, heldout_fraction, seed)
    scores = {}
    for layer in tqdm(candidates, desc="choose B's layer", unit="layer", disable=not progress):
        pairs = make_pairs(pairing, source, target, layer, target_layer)
        scores[int(layer)] = float(np.nanmax(list(choose_and_score(pairs, "ridge", train, test, seed)[2].values())))
    return max(scores, key=lambda k: (scores[k], -k)), scores


def corpus_record(texts: Sequence[str], path: str | None = None) -> dict[str, Any]:
    """What a stitch was fitted on: where the texts came from and a hash of them."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return {"path": path, "sha256": digest.hexdigest(), "n_texts": len(texts)}


def fit_stitch(
    source: TextActivations,
    target: TextActivations,
    *,
    target_layer: int,
    sae: str,
    source_layer: int | None = None,
    method: str = "ridge",
    pairing: str = "token",
    corpus: dict[str, Any] | None = None,
    source_model: str | None = None,
    target_model: str | None = None,
    source_fingerprint: str | None = None,
    target_fingerprint: str | None = None,
    preprocessing: SaePreprocessing | None = None,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = False,
) -> StitchMap:
    """Fit the map from B's layer `source_layer` (chosen by held-out ridge fit among B's captured layers when None)
    to A's `target_layer`, on activations of both models over the same corpus.

    Token pairs are the default: the SAE encodes every token, and a map fitted
    only on prompt means predicts the means well but single tokens poorly
    (benchmarks/results/transfer.md).

    The config's metrics hold the held-out explained variance of this map and of
    the identity baseline (truncated / padded when the widths differ), and the
    layer scores when the layer was chosen here. The fingerprints (`model_fingerprint` of B and A) let every
    route refuse the stitch on another model; without them only width and block can be checked.
    `preprocessing` is the SAE's (`sae_preprocessing`) that both activation sets were collected with: it is
    saved with the stitch, and every route that applies the stitch refuses an SAE that records another.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; choose one of {PAIRINGS}")
    layer_scores = None
    if source_layer is None:
        source_layer, layer_scores = select_layer(source, target, target_layer, sorted(source.layers), pairing, seed, heldout_fraction,
                                                    progress)
    pairs = make_pairs(pairing, source, target, source_layer, target_layer)
    train, test = split_texts(source.n_texts, heldout_fraction, seed)
    knob, heldout_ev, knob_scores = choose_and_score(pairs, method, train, test, seed)
    test_rows = _rows(pairs, test)
    eye, zero = identity_map(pairs.X.shape[1], pairs.Y.shape[1])
    metrics: dict[str, Any] = {
        "explained_variance": heldout_ev,
        "identity_explained_variance": explained_variance(pairs.Y[test_rows], pairs.X[test_rows] @ eye + zero),
        "identity": identity_kind(pairs.X.shape[1], pairs.Y.shape[1]),
        "n_train_texts": len(train),
        "n_test_texts": len(test),
        "n_test_pairs": len(test_rows),
        "validation": knob_scores,
    }
    if layer_scores is not None:
        metrics["layer_selection"] = {"by": f"validation explained variance of a ridge map ({pairing} pairs)", "scores": layer_scores}
    weight, bias = fit_affine(pairs.X, pairs.Y, method, knob, seed)
    knob_name = {"ridge": "alpha", "procrustes": "n_components", "cca": "n_components"}.get(method)
    config = StitchConfig(
        method=method,
        source_model=source_model or source.model,
        source_layer=int(source_layer),
        source_hook=source.hook_names[source_layer],
        d_source=pairs.X.shape[1],
        target_model=target_model or target.model,
        target_layer=int(target_layer),
        target_hook=target.hook_names[target_layer],
        d_target=pairs.Y.shape[1],
        sae=sae,
        pairing=pairing,
        corpus={**(corpus or {}), "n_pairs": int(len(pairs.X))},
        hyperparameters={knob_name: knob} if knob_name else {},
        metrics=metrics,
        identity=identity_kind(pairs.X.shape[1], pairs.Y.shape[1]) if method == "identity" else None,
        seed=seed,
        source_fingerprint=source_fingerprint,
        target_fingerprint=target_fingerprint,
        preprocessing=None if preprocessing is None else preprocessing.to_dict(),
    )
    return StitchMap(weight, bias, config)


def fit_stitch_on_texts(
    host_model: Any,
    host_tokenizer: Any,
    sae: Any,
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    source_layer: int | None = None,
    candidate_layers: Sequence[int] | None = None,
    method: str = "ridge",
    pairing: str = "token",
    max_length: int = 128,
    batch_size: int = 32,
    corpus_path: str | None = None,
    sae_name: str | None = None,
    source_model: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> StitchMap:
    """Run the shared corpus through host A (at the SAE's layer) and B (at `source_layer`, or at every candidate
    layer, default all, to choose one), then `fit_stitch`."""
    from saerl_zoo.featurizer import decoder_layers, resolve_layer
    from saerl_zoo.transfer.activations import collect_activations
    from saerl_zoo.transfer.scorer import model_fingerprint

    target_layer = resolve_layer(host_model, sae, None)
    if source_layer is not None:
        layers = [source_layer]
    else:
        layers = list(candidate_layers) if candidate_layers else list(range(len(decoder_layers(model))))
    preprocessing = sae_preprocessing(sae)  # the SAE's, applied to both models' tokens as featurize will
    kw = {"max_length": max_length, "batch_size": batch_size, "preprocessing": preprocessing, "progress": progress}
    target = collect_activations(host_model, host_tokenizer, texts, [target_layer], **kw)
    source = collect_activations(model, tokenizer, texts, layers, **kw)
    return fit_stitch(
        source, target, target_layer=target_layer, sae=sae_name or str(sae.cfg.metadata.get("zoo_name") or sae.cfg.metadata.get("hook_name")),
        source_layer=source_layer, method=method, pairing=pairing, corpus=corpus_record(texts, corpus_path),
        source_model=source_model, target_model=sae.cfg.metadata.get("model_name") or target.model,
        source_fingerprint=model_fingerprint(model), target_fingerprint=model_fingerprint(host_model), preprocessing=preprocessing,
        seed=seed, progress=progress,
    )
