"""Scorer transfer bookkeeping: who scored a curriculum, and a clear warning when another policy trains on it."""

from __future__ import annotations

import warnings

import pytest
from conftest import make_tiny_llama, synthetic_curriculum

from saerl_zoo.curriculum import Curriculum
from saerl_zoo.transfer import ScorerTransferWarning, check_policy, scorer_record


@pytest.fixture(scope="module")
def host(tokenizer):
    model = make_tiny_llama(len(tokenizer), seed=0)
    model.name_or_path = "org/host"
    return model


def scored_curriculum(host, tiny_sae, tmp_path):
    curriculum = synthetic_curriculum(40, (3,))
    curriculum.provenance = {"model": "org/host", "scorer": scorer_record(host, tiny_sae)}
    return Curriculum.load(curriculum.save(tmp_path / "curriculum"))  # the record survives save / load


def test_scorer_record_names_host_sae_and_probes(host, tiny_sae):
    from saerl_zoo.embedded import default_path
    from saerl_zoo.zoo.api import load_probe

    record = scorer_record(host, tiny_sae, difficulty_probe=load_probe(default_path("difficulty_probe")))
    assert record["host_model"] == "org/host" and len(record["host_model_sha256"]) == 16
    assert record["sae_hook"] == "model.layers.1" and record["d_sae"] == 64
    assert record["difficulty_probe"]["estimator"] == "elasticnet" and "quality_probe" not in record


def test_same_policy_is_not_a_transfer(host, tiny_sae, tmp_path):
    curriculum = scored_curriculum(host, tiny_sae, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_policy(curriculum, host)["transfer"] is False
        assert check_policy(curriculum, "org/host")["transfer"] is False


def test_runtime_config_flags_do_not_make_the_scorer_another_model(host, tiny_sae, tmp_path):
    curriculum = scored_curriculum(host, tiny_sae, tmp_path)
    host.config.use_cache = False  # what TRL's GRPOTrainer does to the policy when gradient checkpointing is on
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert check_policy(curriculum, host)["transfer"] is False
        assert host.config.use_cache is False  # fingerprinting leaves the model as it was
    finally:
        host.config.use_cache = True


def test_another_policy_warns_or_raises(host, tiny_sae, tmp_path, tokenizer):
    curriculum = scored_curriculum(host, tiny_sae, tmp_path)
    other = make_tiny_llama(len(tokenizer), hidden=48, seed=1)
    other.name_or_path = "org/host"  # same name, different weights: the fingerprint tells them apart
    with pytest.warns(ScorerTransferWarning, match="used to train org/host, but it was scored by org/host"):
        result = check_policy(curriculum, other)
    assert result["transfer"] is True and result["scorer"]["host_model"] == "org/host"
    with pytest.raises(ValueError, match="scorer transfer: this curriculum is used to train org/policy-b"):
        check_policy(curriculum, "org/policy-b", on_mismatch="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_policy(curriculum, "org/policy-b", on_mismatch="ignore")["transfer"] is True


def test_unrecorded_scorer_counts_as_transfer():
    curriculum = synthetic_curriculum(10, ())
    with pytest.warns(ScorerTransferWarning, match="records no scoring model"):
        assert check_policy(curriculum, "org/any")["transfer"] is True
    with pytest.raises(ValueError, match="on_mismatch must be"):
        check_policy(curriculum, "org/any", on_mismatch="loud")


def test_build_curriculum_records_its_scorer(host, tokenizer, tiny_sae, prompts):
    from saerl_zoo.curriculum import build_curriculum

    curriculum = build_curriculum(prompts, host, tokenizer, tiny_sae, n_clusters=2, progress=False)
    assert curriculum.provenance["scorer"] == scorer_record(host, tiny_sae)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_policy(curriculum, host)["transfer"] is False
    with pytest.warns(ScorerTransferWarning):
        assert check_policy(curriculum, make_tiny_llama(len(tokenizer), seed=1))["transfer"] is True
