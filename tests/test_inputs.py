"""Questionable input is refused with one line that points at it (issue 11, items 6, 7 and 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from saerl_zoo.cli import main
from saerl_zoo.data import align_labels, load_rows
from saerl_zoo.storage import save_csr


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_line_is_named_the_same_way_by_every_check(tmp_path):
    """Line 4 (after a blank line) is `file:4` whether it is broken JSON, not an object, or has no prompt."""
    head = ['{"id": "a", "prompt": "x"}', "", '{"id": "b", "prompt": "y"}']
    for bad, message in (("not json", "is not valid JSON"), ("[1, 2]", "is not a JSON object"), ('{"id": "c"}', "has no text")):
        path = write_jsonl(tmp_path / "p.jsonl", [*head, bad])
        with pytest.raises(ValueError) as err:
            load_rows(path)
        assert str(err.value).startswith(f"{path}:4 {message}")


def test_duplicated_label_ids_are_refused_with_their_lines(tmp_path):
    prompts = load_rows(write_jsonl(tmp_path / "p.jsonl", [json.dumps({"id": f"q{i}", "prompt": "x"}) for i in range(60)]))
    once = [json.dumps({"id": f"q{i}", "pass_rate": 0.5}) for i in range(60)]
    labels = load_rows(write_jsonl(tmp_path / "l.jsonl", once + once[:50]), prompt_field=None)
    with pytest.raises(ValueError) as err:
        align_labels(prompts, labels, "pass_rate")
    assert str(err.value) == (
        f"label id 'q0' appears 2 times: {tmp_path}/l.jsonl:1, {tmp_path}/l.jsonl:61 (50 ids repeat); label ids must be unique"
    )


def test_duplicated_prompt_ids_are_refused(tmp_path):
    prompts = [{"id": "a"}, {"id": "b"}, {"id": "a"}]
    with pytest.raises(ValueError, match=r"^prompt id 'a' appears 2 times: prompt 1, prompt 3; prompt ids must be unique$"):
        align_labels(prompts, [{"id": "b", "pass_rate": 1.0}], "pass_rate")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "null", '"0.5"'])
def test_a_label_that_is_not_a_finite_number_names_its_line(tmp_path, value):
    prompts = [{"id": "a"}, {"id": "b"}]
    path = write_jsonl(tmp_path / "l.jsonl", ['{"id": "a", "pass_rate": 0.5}', f'{{"id": "b", "pass_rate": {value}}}'])
    with pytest.raises(ValueError, match=rf"^{path}:2: 'pass_rate' is .*, not a finite number$"):
        align_labels(prompts, load_rows(path, prompt_field=None), "pass_rate")


@pytest.mark.parametrize(("field", "value", "check", "message"), [
    ("pass_rate", "1.5", {"bounds": (0, 1)}, "'pass_rate' is 1.5, outside \\[0, 1\\]"),
    ("pass_rate", "-0.25", {"bounds": (0, 1)}, "'pass_rate' is -0.25, outside \\[0, 1\\]"),
    ("label", "0.5", {"binary": True}, "'label' is 0.5; expected 0 or 1"),
    ("label", "2", {"binary": True}, "'label' is 2; expected 0 or 1"),
])
def test_a_label_outside_what_its_field_allows_names_its_line(tmp_path, field, value, check, message):
    """A pass rate of 1.5 would train the difficulty probe on a target of -0.5; refused where the file is read."""
    path = write_jsonl(tmp_path / "l.jsonl", [f'{{"id": "a", "{field}": 1}}', f'{{"id": "b", "{field}": {value}}}'])
    labels = load_rows(path, prompt_field=None)
    with pytest.raises(ValueError, match=rf"^{path}:2: {message}$"):
        align_labels([{"id": "a"}, {"id": "b"}], labels, field, **check)
    assert align_labels([{"id": "a"}, {"id": "b"}], labels, field)[1].tolist() == [1.0, float(value)]  # no check asked: kept


def test_fit_probe_refuses_a_pass_rate_above_one(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [json.dumps({"id": f"p{i}", "prompt": "x"}) for i in range(40)])
    labels = write_jsonl(tmp_path / "l.jsonl", [json.dumps({"id": f"p{i}", "pass_rate": 0.5}) for i in range(39)] + ['{"id": "p39", "pass_rate": 2}'])
    features = tmp_path / "X.safetensors"
    save_csr(features, sp.csr_matrix(np.ones((40, 4), dtype=np.float32)))
    result = CliRunner().invoke(main, ["fit-probe", "--features", str(features), "--prompts", str(prompts), "--labels", str(labels),
                                       "--kind", "difficulty", "--out", str(tmp_path / "probe")])
    assert result.exit_code == 1 and f"{labels}:40: 'pass_rate' is 2, outside [0, 1]" in result.output, result.output


def test_aligned_labels_keep_their_values():
    index, values = align_labels([{"id": 7}, {"id": "b"}], [{"id": "b", "label": True}, {"id": 7, "label": 0}], "label")
    assert index.tolist() == [1, 0] and values.tolist() == [1.0, 0.0]


def test_fit_probe_refuses_duplicated_labels_in_one_line(tmp_path):
    prompts = [{"id": f"p{i:05d}"} for i in range(2000)]
    labels = write_jsonl(tmp_path / "l.jsonl", [json.dumps({"id": p["id"], "pass_rate": 0.5}) for p in prompts[:3] + prompts[:3]])
    features = tmp_path / "X.safetensors"
    save_csr(features, sp.csr_matrix(np.ones((2000, 4), dtype=np.float32)))
    result = CliRunner().invoke(main, ["fit-probe", "--features", str(features), "--labels", str(labels), "--kind", "difficulty",
                                       "--out", str(tmp_path / "probe")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: label id 'p00000' appears 2 times: {labels}:1, {labels}:4 (3 ids repeat); label ids must be unique"]
    assert not (tmp_path / "probe").exists()


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_empty_artifact_names_are_refused(tmp_path, monkeypatch, name):
    """Not `... not str`, and not the probe that happens to sit in the current folder."""
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.zoo.api import load_probe, load_sae

    rng = np.random.default_rng(0)
    DifficultyProbe.fit(rng.random((40, 6)), rng.random(40)).save(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="^load_sae got an empty name; give a catalog name, a Hub repo id or a folder$"):
        load_sae(name)
    with pytest.raises(ValueError, match="^load_probe got an empty name; give a catalog name, a Hub repo id or a folder$"):
        load_probe(name)


def hard_to_converge(n: int = 40):
    """40 prompts whose 200 features are 5 features repeated with tiny noise: coordinate descent crawls on them."""
    rng = np.random.default_rng(0)
    X = np.repeat(rng.random((n, 5)), 40, axis=1) + 1e-3 * rng.random((n, 200))
    return X, rng.random(n)


def test_too_few_labels_say_how_many_are_needed():
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.quality import QualityProbe

    rng = np.random.default_rng(0)
    X = rng.random((40, 6))
    with pytest.raises(ValueError) as err:
        DifficultyProbe.fit(X[:3], [0.1, 0.5, 0.9])
    assert str(err.value) == ("3 labels are too few for a difficulty probe: it needs at least 8 "
                              "(4 to choose the regulariser by cross-validation, 2 to score on the held-out 20%)")
    with pytest.raises(ValueError) as err:
        QualityProbe.fit(X[:7], [0, 0, 0, 1, 1, 1, 1])
    assert str(err.value) == ("7 labels (3 of class 0, 4 of class 1) are too few for a quality probe: it needs at least 4 of each class "
                              "(2 per class to choose the regulariser by cross-validation, 1 to score on the held-out 20%)")
    with pytest.raises(ValueError, match="^7 labels are too few for a quality probe: it needs at least 8 "):
        QualityProbe.fit(X[:7], rng.random(7), kind="ridge")


@pytest.mark.parametrize("n_good, n_bad", [(4, 4), (4, 30)])
def test_the_fewest_labels_needed_fit_and_score(n_good, n_bad):
    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.quality import QualityProbe

    rng = np.random.default_rng(1)
    X = rng.random((n_good + n_bad, 6))
    assert np.isfinite(list(DifficultyProbe.fit(X[:8], rng.random(8)).metrics.values())).all()
    metrics = QualityProbe.fit(X, [1] * n_good + [0] * n_bad).metrics
    assert np.isfinite(metrics["auroc"])  # both classes reached the held-out split


def test_nonconvergence_is_one_count_not_a_warning_per_fit():
    import warnings

    from saerl_zoo.difficulty import DifficultyProbe

    X, y = hard_to_converge()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = DifficultyProbe.fit(X, y)
    assert caught == []
    fit = probe.config.fit
    assert fit["not_converged"] >= 1
    assert "not_converged" not in probe.metrics  # a solver count is not a held-out measurement of the probe
    final = "converged" if fit["final_fit_converged"] else "did not converge either"
    assert probe.convergence_note() == (f"difficulty probe: {int(fit['not_converged'])} solver runs of the fit stopped "
                                        f"at their iteration limit before converging; the final fit on all labels {final} "
                                        "(probe_config.json: fit.not_converged)")
    rng = np.random.default_rng(0)
    assert DifficultyProbe.fit(rng.random((40, 6)), rng.random(40)).convergence_note() is None


def test_fit_probe_reports_nonconvergence_in_one_line(tmp_path):
    X, y = hard_to_converge()
    save_csr(tmp_path / "X.safetensors", sp.csr_matrix(X.astype(np.float32)))
    prompts = write_jsonl(tmp_path / "p.jsonl", [json.dumps({"id": i, "prompt": "x"}) for i in range(40)])
    labels = write_jsonl(tmp_path / "l.jsonl", [json.dumps({"id": i, "pass_rate": v}) for i, v in enumerate(y)])
    result = CliRunner().invoke(main, ["fit-probe", "--features", str(tmp_path / "X.safetensors"), "--prompts", str(prompts),
                                       "--labels", str(labels), "--kind", "difficulty", "--out", str(tmp_path / "probe")])
    assert result.exit_code == 0, result.output
    assert "ConvergenceWarning" not in result.output
    notes = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(notes) == 1 and "solver runs of the fit stopped at their iteration limit" in notes[0]
    saved = json.loads((tmp_path / "probe" / "probe_config.json").read_text())
    assert saved["fit"]["not_converged"] >= 1 and "not_converged" not in saved["metrics"]


def test_probe_saved_with_diagnostics_among_metrics_loads_them_as_fit(tmp_path):
    """Probes saved before ProbeConfig.fit existed: the solver counts leave the held-out metrics on load."""
    from saerl_zoo.difficulty import DifficultyProbe

    rng = np.random.default_rng(0)
    DifficultyProbe.fit(rng.random((40, 6)), rng.random(40)).save(tmp_path / "p")
    raw = json.loads((tmp_path / "p" / "probe_config.json").read_text())
    raw["metrics"].update(raw.pop("fit"))
    (tmp_path / "p" / "probe_config.json").write_text(json.dumps(raw))
    loaded = DifficultyProbe.load(tmp_path / "p")
    assert set(loaded.config.fit) == {"not_converged", "final_fit_converged"}
    assert not set(loaded.metrics) & set(loaded.config.fit)


@pytest.fixture(scope="module")
def gpt2_128():
    """A tiny GPT-2 with 128 learned positions: position 128 and beyond would index out of its table."""
    import torch
    from conftest import make_char_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = make_char_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval(), tokenizer


def test_long_prompts_are_cut_at_the_models_context_and_counted(gpt2_128):
    from conftest import make_tiny_sae

    from saerl_zoo.featurizer import featurize, model_context

    model, tokenizer = gpt2_128
    sae = make_tiny_sae(32, hook_name="transformer.h.1")
    long = "What is 1 + 2? " * 2000  # 30k characters: 30k tokens of the character tokenizer
    assert model_context(model, tokenizer) == 128
    X, info = featurize(["What is 3 + 4?", long, long[:500]], model, tokenizer, sae, max_length=512, return_info=True, progress=False)
    assert (info.n_prompts, info.max_length, info.n_truncated) == (3, 128, 2)
    assert info.truncation_note() == "2 of 3 prompts were longer than 128 tokens and were truncated to it"
    cut, cut_info = featurize([long[:127]], model, tokenizer, sae, return_info=True, progress=False)  # BOS + 127 characters
    assert cut_info.n_truncated == 0 and cut_info.truncation_note() is None  # exactly at the limit is not cut
    np.testing.assert_allclose(X[1].toarray(), cut.toarray(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(X[2].toarray(), cut.toarray(), rtol=1e-5, atol=1e-6)


def test_truncation_count_survives_the_cache(gpt2_128, tmp_path):
    from conftest import make_tiny_sae

    from saerl_zoo.featurizer import featurize

    model, tokenizer = gpt2_128
    sae = make_tiny_sae(32, hook_name="transformer.h.1")
    prompts = ["short", "x" * 300, "y" * 400]
    kw = dict(shard_size=2, cache_dir=tmp_path / "cache", return_info=True, progress=False)
    first, info = featurize(prompts, model, tokenizer, sae, **kw)
    again, cached = featurize(prompts, model, tokenizer, sae, **kw)
    assert info.n_truncated == cached.n_truncated == 2
    assert (first != again).nnz == 0


def _sae_trained_on(context_size, seqpos_slice=(None,)):
    from conftest import make_tiny_sae

    sae = make_tiny_sae(32, hook_name="transformer.h.1")
    sae.cfg.metadata.context_size = context_size
    sae.cfg.metadata.seqpos_slice = seqpos_slice
    return sae


def test_long_prompts_are_cut_at_the_saes_training_context_and_counted(gpt2_128):
    """An SAE trained on 16-token windows never saw position 16: featurize reads 16 tokens and counts the prompts it cut."""
    from saerl_zoo.featurizer import featurize

    model, tokenizer = gpt2_128
    sae = _sae_trained_on(16)
    X, info = featurize(["2+2", "x" * 40, "x" * 15], model, tokenizer, sae, max_length=512, return_info=True, progress=False)
    assert (info.max_length, info.n_truncated) == (16, 1)
    assert info.truncation_note() == "1 of 3 prompts were longer than 16 tokens and were truncated to it"
    np.testing.assert_allclose(X[1].toarray(), X[2].toarray(), rtol=1e-5, atol=1e-6)  # BOS + 15 x's: the same tokens read
    assert featurize(["x" * 40], model, tokenizer, _sae_trained_on(-1), return_info=True, progress=False)[1].max_length == 128


@pytest.mark.parametrize("context_size, seqpos_slice, tokens", [
    (16, [None], 16), (16, [None, 10], 10), (16, [0, -4, 1], 12), (None, [None, 10], 10), (200, [None], 128), (None, [None], 128),
])
def test_seqpos_slice_that_keeps_leading_positions_cuts_there(gpt2_128, context_size, seqpos_slice, tokens):
    from saerl_zoo.featurizer import featurize

    model, tokenizer = gpt2_128
    info = featurize(["x" * 300], model, tokenizer, _sae_trained_on(context_size, seqpos_slice), return_info=True, progress=False)[1]
    assert (info.max_length, info.n_truncated) == (tokens, 1)


@pytest.mark.parametrize("context_size, seqpos_slice, why", [
    (16, [1, None], r"seqpos_slice=\[1, None\]: it was trained only on the token positions that slice keeps"),
    (16, [None, None, 2], r"seqpos_slice=\[None, None, 2\]: it was trained only on"),
    (None, [None, -4], r"seqpos_slice=\[None, -4\] counts from the end of a window, but it records no context_size"),
    (4, [None, -4], r"seqpos_slice=\[None, -4\] keeps no token position of its context_size=4"),
    ("128", [None], r"context_size='128' is not a token count"),
])
def test_training_positions_featurize_cannot_read_are_refused(gpt2_128, context_size, seqpos_slice, why):
    from saerl_zoo.errors import UserError
    from saerl_zoo.featurizer import featurize

    model, tokenizer = gpt2_128
    with pytest.raises(UserError, match=r"^the SAE's metadata " + why):
        featurize(["2+2"], model, tokenizer, _sae_trained_on(context_size, seqpos_slice), progress=False)


def test_curriculum_records_truncated_prompts(gpt2_128, tmp_path):
    from conftest import make_tiny_sae

    from saerl_zoo.curriculum import build_curriculum, write_report

    model, tokenizer = gpt2_128
    prompts = [f"What is {i} + {i}?" for i in range(12)] + ["z" * 200]
    result = build_curriculum(prompts, model, tokenizer, make_tiny_sae(32, hook_name="transformer.h.1"), n_clusters=2, progress=False)
    assert result.provenance["featurize"] == {"n_prompts": 13, "max_length": 128, "n_truncated": 1}
    write_report(result, tmp_path)
    assert "- prompts longer than 128 tokens (truncated to it): 1 of 13" in (tmp_path / "report.md").read_text().splitlines()
    assert json.loads((tmp_path / "report.json").read_text())["provenance"]["featurize"]["n_truncated"] == 1


def test_featurize_cli_prints_the_truncation_count(gpt2_128, tmp_path):
    from conftest import make_tiny_sae

    model, tokenizer = gpt2_128
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    make_tiny_sae(32, hook_name="transformer.h.1").save_model(tmp_path / "sae")
    prompts = write_jsonl(tmp_path / "p.jsonl", [json.dumps({"id": 0, "prompt": "2 + 2?"}), json.dumps({"id": 1, "prompt": "9" * 5000})])
    result = CliRunner().invoke(main, ["featurize", "--prompts", str(prompts), "--out", str(tmp_path / "X.safetensors"),
                                       "--model", str(tmp_path / "model"), "--sae", str(tmp_path / "sae")])
    assert result.exit_code == 0, result.output
    assert "warning: 1 of 2 prompts were longer than 128 tokens and were truncated to it" in result.output.splitlines()


def tokenizer_without(tokenizer, *tokens: str):
    import copy

    bare = copy.deepcopy(tokenizer)
    for name in tokens:
        setattr(bare, name, None)
    return bare


@pytest.mark.parametrize("missing", [("pad_token",), ("pad_token", "eos_token")])
def test_a_tokenizer_without_pad_featurizes_the_same_and_is_left_alone(tokenizer, tiny_model, tiny_sae, missing):
    """Padding is masked, so any pad id gives the same codes; the caller's tokenizer keeps its (missing) pad."""
    from conftest import PROMPTS

    from saerl_zoo.featurizer import featurize

    bare = tokenizer_without(tokenizer, *missing)
    assert bare.pad_token_id is None
    want = featurize(PROMPTS, tiny_model, tokenizer, tiny_sae, batch_size=4, progress=False).toarray()
    got = featurize(PROMPTS, tiny_model, bare, tiny_sae, batch_size=4, progress=False).toarray()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert bare.pad_token is None and bare.pad_token_id is None
    assert (bare.eos_token is None) == ("eos_token" in missing)


def test_transfer_capture_cuts_at_the_context_and_pads_without_a_pad_token(gpt2_128):
    """The transfer path tokenises on its own; it follows the same context and padding rules as featurize."""
    from saerl_zoo.transfer.activations import collect_activations

    model, tokenizer = gpt2_128
    bare = tokenizer_without(tokenizer, "pad_token", "eos_token")
    texts = ["What is 3 + 4?", "7" * 1000]
    got = collect_activations(model, bare, texts, [1], max_length=512, progress=False)
    want = collect_activations(model, tokenizer, texts, [1], max_length=512, progress=False)
    assert got.truncated.tolist() == [False, True] and np.diff(got.text_ptr).tolist() == [14, 127]
    np.testing.assert_allclose(got.layers[1], want.layers[1], rtol=1e-5, atol=1e-6)
    assert bare.pad_token is None


def test_fit_probe_with_three_labels_says_how_many_it_needs(tmp_path):
    save_csr(tmp_path / "X.safetensors", sp.csr_matrix(np.random.default_rng(0).random((2000, 4), dtype=np.float32)))
    labels = write_jsonl(tmp_path / "l.jsonl", [json.dumps({"id": f"p{i:05d}", "pass_rate": i / 4}) for i in range(3)])
    result = CliRunner().invoke(main, ["fit-probe", "--features", str(tmp_path / "X.safetensors"), "--labels", str(labels),
                                       "--kind", "difficulty", "--out", str(tmp_path / "probe")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: 3 labels are too few for a difficulty probe: it needs at least 8 "
        "(4 to choose the regulariser by cross-validation, 2 to score on the held-out 20%)"
    ]
    assert not (tmp_path / "probe").exists()
