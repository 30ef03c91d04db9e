"""Preprocessing travels with the SAE folder and every route applies it (issue 17, item 1).

The fault: a script set the attention-sink policy on an SAE in memory, so the
CLI, reading the saved folder, fitted and evaluated stitches on other tokens
and nothing warned. Here the policy lives in the folder's cfg.json, the CLI and
the library give the same numbers from it, and a stitch fitted under one policy
is refused with an SAE that records another.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_tiny_llama, make_tiny_sae

from saerl_zoo.cli import main
from saerl_zoo.errors import UserError
from saerl_zoo.featurizer import featurize
from saerl_zoo.preprocessing import SaePreprocessing, record_preprocessing, sae_preprocessing
from saerl_zoo.storage import load_csr
from saerl_zoo.transfer import StitchedSAE, StitchMap
from saerl_zoo.transfer.check import StitchMismatch
from saerl_zoo.transfer.fit import fit_stitch_on_texts
from saerl_zoo.zoo.api import load_sae
from saerl_zoo.zoo.formats import save_sae

PROMPTS = [f"What is {i} + {3 * i}? Think step by step." for i in range(12)]
CORPUS = [f"Q: {i} * {i + 3} = ? The answer is {i * (i + 3)}." for i in range(40)]
RATIO = 1.0  # keep only tokens at most their prompt's median norm: a policy whose effect is large on tiny models


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("pre")
    for name, hidden, seed in (("a", 32, 0), ("b", 48, 1)):
        model = make_tiny_llama(len(tokenizer), hidden=hidden, layers=2, seed=seed)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    with_policy = make_tiny_sae(32)
    record_preprocessing(with_policy, context_length=24, outlier_norm_ratio=RATIO)
    save_sae(with_policy, root / "sae")
    save_sae(make_tiny_sae(32), root / "sae_plain")  # the same weights, no policy
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    (root / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return root


def load(root, name, tokenizer):
    from saerl_zoo.models import load_model

    return load_model(root / name)


def test_policy_round_trips_through_the_folder(setup):
    assert sae_preprocessing(load_sae(setup / "sae")) == SaePreprocessing(context_length=24, special_tokens="drop",
                                                                           outlier_norm_ratio=RATIO, prepend_bos=True)
    assert sae_preprocessing(load_sae(setup / "sae_plain")).outlier_norm_ratio is None


@pytest.mark.parametrize("stored, message", [
    ({"outlier_norm_ratio": -2}, "outlier_norm_ratio=-2 is not a positive number"),
    ({"special_tokens": "strip"}, "special_tokens='strip': expected one of ('drop', 'keep')"),
    ({"context_length": 0}, "context_length=0 is not a positive token count"),
])
def test_values_that_cannot_be_applied_are_refused(stored, message):
    sae = make_tiny_sae(32)
    sae.cfg.metadata.zoo_preprocessing = stored
    with pytest.raises(UserError, match=message.replace("(", "\\(").replace(")", "\\)")):
        sae_preprocessing(sae)


def test_featurize_cli_gives_the_library_features_and_applies_the_policy(setup, tokenizer):
    a, tok = load(setup, "a", tokenizer)
    out = setup / "features.safetensors"
    result = CliRunner().invoke(main, ["featurize", "--model", str(setup / "a"), "--sae", str(setup / "sae"), "--prompts",
                                       str(setup / "prompts.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    library = featurize(PROMPTS, a, tok, load_sae(setup / "sae"), progress=False).toarray()
    np.testing.assert_allclose(load_csr(out).toarray(), library, atol=1e-6)
    plain = featurize(PROMPTS, a, tok, load_sae(setup / "sae_plain"), progress=False).toarray()
    assert np.abs(plain - library).max() > 1e-3  # the policy changed which tokens were pooled


def test_transfer_fit_cli_gives_the_library_stitch_and_records_the_policy(setup, tokenizer):
    a, tok_a = load(setup, "a", tokenizer)
    b, tok_b = load(setup, "b", tokenizer)
    result = CliRunner().invoke(main, ["transfer", "fit", "--sae", str(setup / "sae"), "--from", str(setup / "a"), "--to", str(setup / "b"),
                                       "--corpus", str(setup / "corpus.jsonl"), "--layer", "1", "--out", str(setup / "stitch")])
    assert result.exit_code == 0, result.output
    cli = StitchMap.load(setup / "stitch")
    library = fit_stitch_on_texts(a, tok_a, load_sae(setup / "sae"), b, tok_b, CORPUS, source_layer=1, progress=False)
    assert cli.config.preprocessing == library.config.preprocessing == sae_preprocessing(load_sae(setup / "sae")).to_dict()
    assert cli.metrics["explained_variance"] == pytest.approx(library.metrics["explained_variance"], abs=1e-6)
    np.testing.assert_allclose(cli.weight, library.weight, atol=1e-5)
    plain = fit_stitch_on_texts(a, tok_a, load_sae(setup / "sae_plain"), b, tok_b, CORPUS, source_layer=1, progress=False)
    assert plain.metrics["explained_variance"] != pytest.approx(library.metrics["explained_variance"], abs=1e-4)
    stitched = featurize(PROMPTS, b, tok_b, StitchedSAE(load_sae(setup / "sae"), cli), progress=False).toarray()
    assert stitched.shape == (len(PROMPTS), 64) and np.isfinite(stitched).all()


def test_a_policy_set_only_in_memory_is_refused_by_the_folder_routes(setup, tokenizer):
    """The issue's fault: the stitch was fitted with the policy set on the loaded SAE, the folder never got it."""
    a, tok_a = load(setup, "a", tokenizer)
    b, tok_b = load(setup, "b", tokenizer)
    in_memory = load_sae(setup / "sae_plain")
    record_preprocessing(in_memory, outlier_norm_ratio=RATIO)  # set, never saved
    stitch = fit_stitch_on_texts(a, tok_a, in_memory, b, tok_b, CORPUS, source_layer=1, progress=False)
    stitch.save(setup / "stitch_mem")
    with pytest.raises(StitchMismatch, match="outlier_norm_ratio 1.0 \\(stitch\\) vs None \\(SAE\\)"):
        StitchedSAE(load_sae(setup / "sae_plain"), stitch)
    result = CliRunner().invoke(main, ["transfer", "eval", "--stitch", str(setup / "stitch_mem"), "--sae", str(setup / "sae_plain"),
                                       "--from", str(setup / "a"), "--to", str(setup / "b"), "--prompts", str(setup / "prompts.jsonl")])
    last = result.output.strip().splitlines()[-1]  # (weight-loading progress bars come before it)
    assert result.exit_code == 1 and last.startswith("Error: ") and "outlier_norm_ratio 1.0 (stitch) vs None (SAE)" in last
