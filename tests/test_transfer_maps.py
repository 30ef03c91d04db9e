"""Stitch maps: recovery of a known linear relation, the identity baseline, layer choice, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest

from saerl_zoo.transfer.activations import TextActivations, prompt_pairs, token_pairs
from saerl_zoo.transfer.fit import fit_stitch
from saerl_zoo.transfer.maps import StitchMap, explained_variance, fit_affine, hyperparameter_grid


def related(n=1500, d_a=16, d_b=16, noise=0.01, seed=0):
    """Host activations A (anisotropic) and B = A·R + noise for a known R (d_a x d_b)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d_a)) * np.linspace(3.0, 0.5, d_a) + 2.0
    # well conditioned (singular values 0.5..2), so inverting it does not amplify the noise
    U, _ = np.linalg.qr(rng.normal(size=(d_a, d_a)))
    V, _ = np.linalg.qr(rng.normal(size=(d_b, d_b)))
    R = U @ np.diag(np.linspace(0.5, 2.0, d_a)) @ V[:, :d_a].T
    B = A @ R + noise * rng.normal(size=(n, d_b))
    return A.astype(np.float32), B.astype(np.float32), R


@pytest.mark.parametrize("method", ["ridge", "procrustes", "cca"])
def test_fitted_map_recovers_a_known_linear_relation(method):
    A, B, R = related()
    knob = {"ridge": 1e-2, "procrustes": 16, "cca": 16}[method]
    weight, bias = fit_affine(B, A, method, knob)
    # B -> A inverts R: weight ≈ R^-1, so R @ weight ≈ I, and the offset is recovered too
    np.testing.assert_allclose(R @ weight, np.eye(16), atol=0.05)
    assert explained_variance(A, B @ weight + bias) > 0.99


def test_wider_source_recovers_the_pseudo_inverse():
    A, B, R = related(d_a=12, d_b=20)
    weight, bias = fit_affine(B, A, "ridge", 1e-2)
    np.testing.assert_allclose(R @ weight, np.eye(12), atol=0.05)
    assert explained_variance(A, B @ weight + bias) > 0.99
    eye, zero = fit_affine(B, A, "identity", None)
    assert eye.shape == (20, 12) and np.array_equal(eye[:12], np.eye(12)) and not eye[12:].any()


def test_grids_respect_widths():
    assert hyperparameter_grid("procrustes", 20, 12, 1000)[-1] == 12
    assert max(hyperparameter_grid("cca", 640, 576, 10_000)) == 128
    with pytest.raises(ValueError, match="unknown method"):
        hyperparameter_grid("svd", 4, 4, 10)


def activations(layers: dict[int, np.ndarray], n_texts: int, tokens_per_text: int, name: str) -> TextActivations:
    n = n_texts * tokens_per_text
    spans = np.array([(i, i + 1) for _ in range(n_texts) for i in range(tokens_per_text)])
    return TextActivations(layers, np.arange(0, n + 1, tokens_per_text), spans, np.full(n_texts, tokens_per_text),
                           np.zeros(n_texts, dtype=bool), {k: f"model.layers.{k}" for k in layers}, name)


def test_fit_stitch_picks_the_related_layer_and_beats_identity():
    A, B, _ = related(n=3000, d_a=16, d_b=24, noise=0.05)
    rng = np.random.default_rng(1)
    source = activations({0: rng.normal(size=B.shape).astype(np.float32), 3: B}, 300, 10, "model-b")
    target = activations({2: A}, 300, 10, "model-a")
    stitch = fit_stitch(source, target, target_layer=2, sae="test/sae", pairing="token", corpus={"path": "synthetic"})
    c = stitch.config
    assert c.source_layer == 3 and c.source_hook == "model.layers.3" and c.d_source == 24 and c.d_target == 16
    assert set(c.metrics["layer_selection"]["scores"]) == {0, 3}
    assert c.metrics["explained_variance"] > 0.95 > c.metrics["identity_explained_variance"]
    assert c.metrics["identity"] == "truncated" and c.corpus["n_pairs"] == 3000 and "alpha" in c.hyperparameters
    # prompt-level pairs: one per text, the mean of its tokens
    pairs = prompt_pairs(source, target, 3, 2)
    assert pairs.X.shape == (300, 24) and np.allclose(pairs.Y[0], A[:10].mean(0), atol=1e-5)
    assert token_pairs(source, target, 3, 2).X.shape == (3000, 24)


def test_stitch_round_trips(tmp_path):
    A, B, _ = related(n=400)
    source, target = activations({1: B}, 40, 10, "model-b"), activations({2: A}, 40, 10, "model-a")
    stitch = fit_stitch(source, target, target_layer=2, sae="test/sae", source_layer=1, method="procrustes")
    loaded = StitchMap.load(stitch.save(tmp_path / "stitch"))
    assert sorted(p.name for p in (tmp_path / "stitch").iterdir()) == ["stitch.safetensors", "stitch_config.json"]
    assert loaded.config == stitch.config
    np.testing.assert_array_equal(loaded.weight, stitch.weight)
    np.testing.assert_array_equal(loaded.apply(B[:5]), stitch.apply(B[:5]))


def test_mismatches_give_clear_errors(tmp_path):
    A, B, _ = related(n=400, d_a=16, d_b=20)
    with pytest.raises(ValueError, match="paired row by row"):
        fit_affine(B[:300], A, "ridge", 1.0)
    source, target = activations({1: B}, 40, 10, "model-b"), activations({2: A}, 40, 10, "model-a")
    stitch = fit_stitch(source, target, target_layer=2, sae="test/sae", source_layer=1)
    with pytest.raises(ValueError, match="reads 20-dim activations of model-b"):
        stitch.apply(A)
    with pytest.raises(ValueError, match="different texts"):
        prompt_pairs(source.subset(range(30)), target, 1, 2)
    with pytest.raises(ValueError, match="layer 5 was not captured"):
        fit_stitch(source, target, target_layer=2, sae="x", source_layer=5)
    with pytest.raises(ValueError, match="unknown method"):
        fit_stitch(source, target, target_layer=2, sae="x", method="svd")
    folder = stitch.save(tmp_path / "s")
    (folder / "stitch_config.json").write_text('{"method": "ridge"}')
    with pytest.raises(ValueError, match="not a stitch config"):
        StitchMap.load(folder)
