"""Representation transfer end to end on two tiny models: fit, featurize through a StitchedSAE, catalog lookup, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import local_sae_entry, make_tiny_llama, make_tiny_sae, make_topk_sae
from test_zoo_support import write_catalog

from saerl_zoo.featurizer import featurize
from saerl_zoo.preprocessing import record_preprocessing
from saerl_zoo.transfer import (
    GroundTruth,
    RefitLabels,
    StitchedSAE,
    StitchMap,
    StitchMismatch,
    TransferEvaluation,
    collect_activations,
    fit_stitch,
    fit_stitch_on_texts,
    register_stitch,
)
from saerl_zoo.transfer.evaluate import pooled_codes
from saerl_zoo.transfer.scorer import model_fingerprint
from saerl_zoo.zoo import api, registry
from saerl_zoo.zoo.formats import save_sae
from saerl_zoo.zoo.hub import hash_folder

CORPUS = [f"Q: {a} + {b} = ? {w}" for a, b, w in zip(range(3, 180, 3), range(99, 5, -1), ["ok", "naïve", "x  y", "\tz", "é"] * 20)]
PROMPTS = ["What is 2 + 3?", "gcd(12, 18) = ?", "Simplify 6/8.", "Next in 2, 4, 8, 16, ?", "x", "Compute 17 * 4."]


@pytest.fixture(scope="module")
def models(tokenizer):
    return make_tiny_llama(len(tokenizer), hidden=32, layers=3, seed=0), make_tiny_llama(len(tokenizer), hidden=48, layers=2, seed=1)


@pytest.fixture(scope="module")
def acts(models, tokenizer):
    a, b = models
    return collect_activations(a, tokenizer, CORPUS, [1], progress=False), collect_activations(b, tokenizer, CORPUS, [0, 1], progress=False)


def test_activations_keep_the_featurizer_tokens(acts, tokenizer):
    target, source = acts
    assert target.n_texts == len(CORPUS) and sorted(source.layers) == [0, 1] and source.width == 48
    first = tokenizer(CORPUS[0])["input_ids"]
    assert target.text_ptr[1] == len(first) - 1  # BOS dropped
    assert source.hook_names == {0: "model.layers.0", 1: "model.layers.1"}


@pytest.mark.parametrize("make_sae", [lambda: make_topk_sae(32), lambda: make_tiny_sae(32)])
def test_featurize_through_a_stitch_equals_the_sae_on_mapped_activations(models, tokenizer, acts, make_sae):
    _, b = models
    target, source = acts
    sae = make_sae()
    stitch = fit_stitch(source, target, target_layer=1, sae="tiny", pairing="token", method="ridge")
    stitched = StitchedSAE(sae, stitch)
    assert stitched.cfg.d_in == 48 and stitched.cfg.metadata.hook_name == stitch.config.source_hook
    feats = featurize(PROMPTS, b, tokenizer, stitched, progress=False).toarray()
    expected = pooled_codes(sae, collect_activations(b, tokenizer, PROMPTS, [stitch.config.source_layer], progress=False),
                            stitch.config.source_layer, stitch).toarray()
    np.testing.assert_allclose(feats, expected, atol=1e-4)
    assert type(sae.activation_fn).__name__ != "_CapturePreActivations"  # featurize's TopK swap was undone on the host SAE


def test_stitched_sae_refuses_mismatches(models, tokenizer, acts):
    a, _ = models
    target, source = acts
    stitch = fit_stitch(source, target, target_layer=1, sae="tiny", source_layer=1)
    with pytest.raises(ValueError, match="SAE reads d_in=16"):
        StitchedSAE(make_tiny_sae(16), stitch)
    host = make_tiny_sae(32)
    host.cfg.metadata.model_name = "someone/else"
    with pytest.raises(ValueError, match="this SAE reads someone/else"):
        StitchedSAE(host, stitch)
    with pytest.raises(ValueError, match=r"the stitch reads 48-dim activations of \(unnamed model\), but this model \(LlamaForCausalLM\) is 32 wide"):
        featurize(PROMPTS, a, tokenizer, StitchedSAE(make_tiny_sae(32), stitch), progress=False)


@pytest.fixture()
def local_catalog(tmp_path, monkeypatch):
    """A user catalog with the tiny SAE as a local entry, for host model id test/tiny-a."""
    folder = save_sae(make_tiny_sae(32), tmp_path / "sae")
    entry = local_sae_entry(folder, "test/tiny-a", hash_folder(folder))
    catalog = write_catalog(tmp_path / "catalog.yaml", [entry])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))
    monkeypatch.delenv("SAERL_ZOO_HUB_CATALOGS", raising=False)
    registry._CATALOG_CACHE.clear()
    yield catalog
    registry._CATALOG_CACHE.clear()


def test_load_sae_for_model_applies_the_registered_stitch(models, tokenizer, local_catalog):
    a, b = models
    sae = api.load_sae("test/sae")
    stitch = fit_stitch_on_texts(a, tokenizer, sae, b, tokenizer, CORPUS, source_layer=1, sae_name="test/sae",
                                 source_model="test/tiny-b", progress=False)
    assert stitch.config.target_model == "test/tiny-a" and stitch.config.source_model == "test/tiny-b"
    folder = stitch.save(local_catalog.parent / "stitches" / "b-to-a")
    entry = register_stitch(stitch, folder, local_catalog, name="test/tiny-b-to-a", sae_name="test/sae", model_id="test/tiny-b")
    assert entry.kind == "stitch" and entry.source.path == "stitches/b-to-a"
    registry._CATALOG_CACHE.clear()
    assert [s.name for s in api.stitches_for("test/sae")] == ["test/tiny-b-to-a"]

    stitched = api.load_sae("test/sae", for_model="test/tiny-b")
    assert isinstance(stitched, StitchedSAE) and stitched.cfg.metadata.stitch["name"] == "test/tiny-b-to-a"
    assert featurize(PROMPTS, b, tokenizer, stitched, progress=False).shape == (len(PROMPTS), 64)
    assert stitch.config.source_fingerprint == model_fingerprint(b) and stitch.config.target_fingerprint == model_fingerprint(a)
    other = make_tiny_llama(len(tokenizer), hidden=48, layers=2, seed=5)  # B's shape, other weights
    with pytest.raises(StitchMismatch, match="another model of the same width"):
        featurize(PROMPTS, other, tokenizer, stitched, progress=False)
    forced = api.load_sae("test/sae", for_model="test/tiny-b", force_stitch=True)
    assert featurize(PROMPTS, other, tokenizer, forced, progress=False).shape == (len(PROMPTS), 64)
    assert not isinstance(api.load_sae("test/sae", for_model="test/tiny-a"), StitchedSAE)  # its own host: no stitch
    with pytest.raises(ValueError, match="no stitch from org/other into it; it has stitches from test/tiny-b"):
        api.load_sae("test/sae", for_model="org/other")
    with pytest.raises(ValueError, match="needs the catalog name of an SAE"):
        api.load_sae(str(local_catalog.parent / "sae"), for_model="test/tiny-b")
    (folder / "stitch.safetensors").write_bytes(b"tampered")
    with pytest.raises(api.IntegrityError):
        api.load_sae("test/sae", for_model="test/tiny-b")
    with pytest.raises(api.IntegrityError, match="restore it from your own copy"):  # by path too
        StitchMap.load(folder)


def test_local_entries_must_come_from_a_catalog_file():
    from saerl_zoo.zoo.registry import CatalogError, validate_entry

    with pytest.raises(CatalogError, match="source.path: required for a local source"):
        validate_entry({"name": "x", "kind": "stitch", "description": "", "model": {"id": "m"}, "features": "s",
                        "hook": {"module": "model.layers.0", "site": "resid_out", "layer": 0}, "license": "",
                        "source": {"type": "local", "format": "stitch"}, "files": {"a": "0" * 64},
                        "metrics": {"explained_variance": 0.5}, "preprocessing": {"context_length": 8, "special_tokens": "drop"}})


def test_transfer_evaluation_compares_with_the_native_pipeline(models, tokenizer, acts):
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.probe import ProbeConfig
    from saerl_zoo.quality import QualityProbe

    target, source = acts
    sae = make_tiny_sae(32)
    native_codes = pooled_codes(sae, target, 1)
    rng = np.random.default_rng(0)
    level = np.asarray(native_codes[:, :4].sum(1)).ravel() + 0.1 * rng.normal(size=len(CORPUS))
    quality = (level > np.median(level)).astype(float)
    weight = np.r_[np.ones(4), np.zeros(60)]  # the probes that generated the truth (no CV fit: keeps the test fast)
    config = dict(d_in=64, target="", hyperparameters={}, metrics={}, n_train=0, n_heldout=0, seed=0)
    d_probe = DifficultyProbe(weight, 0.0, ProbeConfig(probe="difficulty", estimator="elasticnet", **config))
    q_probe = QualityProbe(weight, -float(np.median(level)), ProbeConfig(probe="quality", estimator="logistic", **config))
    truth = GroundTruth(difficulty=level, quality=quality)
    evaluation = TransferEvaluation(sae, target, 1, difficulty_probe=d_probe, quality_probe=q_probe, truth=truth, n_clusters=3)
    native = evaluation.native()
    assert native["sae"]["l0"] > 0 and set(native["probes"]) == {"difficulty_spearman", "quality_auroc"}
    ridge = fit_stitch(source, target, target_layer=1, sae="tiny", pairing="token", source_layer=1)
    identity = fit_stitch(source, target, target_layer=1, sae="tiny", pairing="token", source_layer=1, method="identity")
    refit = RefitLabels(np.arange(20), level[:20], np.arange(20), quality[:20])
    good, bad = evaluation.evaluate(ridge, source, refit), evaluation.evaluate(identity, source)
    assert good["map"]["token_explained_variance"] > bad["map"]["token_explained_variance"]
    assert good["features"]["mean"] > bad["features"]["mean"]
    assert set(good["curriculum"]) == {"difficulty_spearman", "keep_agreement", "cluster_ari", "cluster_ari_refit"}
    assert set(good["probes"]) == {"transferred", "native_minus_transferred", "refit", "refit_heldout"}
    gap = good["probes"]["native_minus_transferred"]["quality_auroc"]
    assert gap["gap"] == pytest.approx(native["probes"]["quality_auroc"] - good["probes"]["transferred"]["quality_auroc"])
    assert gap["low"] <= gap["gap"] <= gap["high"]
    assert identity.config.identity == "truncated"


def test_sink_tokens_are_dropped_as_featurize_drops_them(models, tokenizer, acts, tmp_path):
    _, b = models
    target, source = acts
    sae = make_tiny_sae(32)
    preprocessing = record_preprocessing(sae, outlier_norm_ratio=1.0)  # keep only tokens at most the median norm
    stitch = fit_stitch(source, target, target_layer=1, sae="tiny", source_layer=1, preprocessing=preprocessing)
    kept = collect_activations(b, tokenizer, PROMPTS, [1], preprocessing=preprocessing, progress=False)
    full = collect_activations(b, tokenizer, PROMPTS, [1], progress=False)
    assert 0 < kept.text_ptr[-1] < full.text_ptr[-1] and (np.diff(kept.text_ptr) >= 1).all()
    np.testing.assert_allclose(featurize(PROMPTS, b, tokenizer, StitchedSAE(sae, stitch), progress=False).toarray(),
                               pooled_codes(sae, kept, 1, stitch).toarray(), atol=1e-4)
    loaded = type(kept).load(kept.save(tmp_path / "acts.safetensors"))
    assert loaded.hook_names == kept.hook_names and loaded.model == kept.model
    np.testing.assert_array_equal(loaded.layers[1], kept.layers[1])
    np.testing.assert_array_equal(loaded.spans, kept.spans)
    assert np.array_equal(loaded.subset([2, 0]).text_lengths, kept.text_lengths[[2, 0]])
