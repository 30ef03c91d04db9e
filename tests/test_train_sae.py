"""`saerl-zoo train-sae`: a tiny saved Llama, a few hundred prompts, budgets just above the minimum."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest
import yaml
from click.testing import CliRunner
from conftest import save_tiny_llama

from saerl_zoo.cli import main
from saerl_zoo.sae_folder import (DEAD_WARN, EV_WARN, MIN_TOKENS_PER_LATENT, BudgetError, budget_note, check_budget,
                                  metric_rows, quality_warnings, split_texts, trim_padding)

# 100 steps of 64 tokens (two dead-feature windows) = 100 tokens per latent for 64 latents: the smallest budget accepted
SMALL = ["--d-sae", 64, "--k", 8, "--batch-tokens", 64, "--training-tokens", 6400, "--context", 32, "--lr", 2e-3]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A 3-block tiny Llama saved with save_pretrained, 300 prompts, and one SAE trained with every default hook."""
    root = tmp_path_factory.mktemp("train_sae")
    save_tiny_llama(root / "model")
    rng = np.random.default_rng(0)
    rows = [{"id": f"q{i}", "prompt": f"What is {a} + {b}?"} for i, (a, b) in enumerate(rng.integers(0, 999, (300, 2)))]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "corpus.txt").write_text("".join(f"The sum of {a} and {b} is {a + b}.\n" for a, b in rng.integers(0, 999, (100, 2))))
    result = ok("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--corpus", root / "corpus.txt",
                "--out", root / "sae", *SMALL)
    return root, result


def test_folder_holds_sae_metrics_entry_and_card(ws):
    root, result = ws
    folder = root / "sae"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "cfg.json", "sae_metrics.json", "sae_weights.safetensors", "zoo_entry.yaml"]
    m = json.loads((folder / "sae_metrics.json").read_text())
    for key in ("explained_variance", "dead_fraction"):
        assert 0 <= m[key] <= 1, (key, m[key])
    assert m["l0"] == pytest.approx(8.0)  # TopK: exactly k latents per token
    assert m["d_sae"] == 64 and m["training_tokens"] == 6400 and m["tokens_per_latent"] == 100
    assert m["heldout_texts"] == 30 + 10  # 10% of the prompts and 10% of the corpus lines
    assert m["train_seconds"] > 0 and m["n_tokens"] > 300
    entry = yaml.safe_load((folder / "zoo_entry.yaml").read_text())
    assert entry["metrics"]["explained_variance"] == m["explained_variance"]
    assert entry["preprocessing"] == {"context_length": 32, "special_tokens": "drop", "normalization_scale": 1.0,
                                      "tokenizer_sha256": entry["preprocessing"]["tokenizer_sha256"]}
    card = (folder / "README.md").read_text()
    assert "model.layers.1" in card and "explained variance" in card
    assert "100 per latent" in result.output and "--training-tokens 64,000" in result.output


def test_default_hook_is_the_middle_block_and_featurize_reads_it(ws):
    from saerl_zoo.featurizer import featurize
    from saerl_zoo.hooks import resolve
    from saerl_zoo.models import load_model
    from saerl_zoo.zoo.api import load_sae

    root, _ = ws
    sae = load_sae(root / "sae")
    meta = sae.cfg.metadata
    assert (meta.hook_name, meta.hook_site, meta.context_size) == ("model.layers.1", "resid_out", 32)  # block 1 of 0..2
    assert meta.zoo_preprocessing == {"context_length": 32, "special_tokens": "drop", "outlier_norm_ratio": None}
    model, tokenizer = load_model(root / "model")
    assert resolve(model, sae).module_name == "model.layers.1"
    X = featurize(["What is 1 + 2?", "What is 30 + 4?"], model, tokenizer, sae, progress=False)
    assert X.shape == (2, 64) and X.nnz > 0


def test_explicit_hook_and_batchtopk_are_honoured(ws, tmp_path):
    from saerl_zoo.featurizer import featurize
    from saerl_zoo.models import load_model
    from saerl_zoo.zoo.api import load_sae

    root, _ = ws
    ok("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", tmp_path / "sae",
       "--hook", "blocks.2.hook_resid_post", "--arch", "batchtopk", *SMALL)
    sae = load_sae(tmp_path / "sae")
    assert sae.cfg.metadata.hook_name == "model.layers.2"  # the TransformerLens name, recorded as the module it reads
    entry = yaml.safe_load((tmp_path / "sae" / "zoo_entry.yaml").read_text())
    assert entry["hook"] == {"module": "model.layers.2", "site": "resid_out", "layer": 2}
    assert entry["sae"]["architecture"] == sae.cfg.architecture() == "jumprelu"  # sae-lens saves BatchTopK for inference so
    model, tokenizer = load_model(root / "model")
    assert featurize(["What is 1 + 2?"], model, tokenizer, sae, progress=False).nnz > 0


def test_a_hook_train_sae_cannot_train_on_is_refused(ws, tmp_path):
    root, _ = ws
    result = run("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", tmp_path / "sae",
                 "--hook", "blocks.1.hook_resid_mid", *SMALL)
    assert result.exit_code == 1 and "blocks.1.hook_resid_mid" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "sae").exists()


@pytest.mark.parametrize("budget, message", [
    (["--batch-tokens", 256, "--d-sae", 64, "--training-tokens", 12_800], "50 steps of 256 tokens, fewer than 100 (2 dead-feature windows of 50 steps)"),
    (["--batch-tokens", 64, "--d-sae", 256, "--training-tokens", 12_800], "50 tokens per latent for 256 latents"),
])
def test_too_small_budget_is_refused_and_nothing_written(ws, tmp_path, budget, message):
    root, _ = ws
    result = run("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", tmp_path / "sae", *budget)
    assert result.exit_code == 1, result.output
    assert message in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.output
    assert not (tmp_path / "sae").exists() and list(tmp_path.iterdir()) == []


def test_existing_out_needs_overwrite_which_replaces_the_folder(ws, tmp_path):
    root, _ = ws
    out = tmp_path / "sae"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    args = ["train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", out, *SMALL]
    result = run(*args)
    assert result.exit_code == 1 and "--overwrite" in result.stderr.splitlines()[-1]
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    ok(*args, "--overwrite")
    assert not (out / "old.txt").exists() and (out / "sae_weights.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]  # no temporary folder left behind


def test_publish_dry_run_accepts_the_folder(ws, tmp_path):
    root, _ = ws
    result = ok("publish", root / "sae", "--repo-id", "me/tiny-sae", "--entry", root / "sae" / "zoo_entry.yaml", "--dry-run",
                "--out", tmp_path / "repo")
    entry = yaml.safe_load(result.output.split("catalog entry:\n", 1)[1])["artifacts"][0]
    metrics = json.loads((root / "sae" / "sae_metrics.json").read_text())
    assert entry["metrics"]["l0"] == metrics["l0"] and entry["hook"]["module"] == "model.layers.1"
    assert "reference" in entry["metrics"]  # publish re-measured it on the host model recorded in the folder
    assert (tmp_path / "repo" / "model.layers.1" / "sae_weights.safetensors").is_file() and (tmp_path / "repo" / "README.md").is_file()


def test_warnings_fire_when_most_latents_are_dead_and_ev_is_poor(ws, tmp_path):
    root, _ = ws
    # k = 1 on 64 latents, metrics on 6 held-out prompts (~100 tokens): most latents never fire, one latent explains little
    args = [a if a != 8 else 1 for a in SMALL]
    result = ok("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", tmp_path / "sae",
                "--heldout-fraction", 0.02, *args)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, result.stderr
    assert "latents never fired" in warnings[0] and "explained variance" in warnings[1]
    entry = yaml.safe_load((tmp_path / "sae" / "zoo_entry.yaml").read_text())
    assert [w.removeprefix("warning: ") for w in warnings] == entry["limitations"][1:]  # the card says so too


def test_thresholds_and_notes():
    good = {"dead_fraction": DEAD_WARN, "explained_variance": EV_WARN, "d_sae": 64, "n_tokens": 500}
    assert quality_warnings(good) == []
    assert len(quality_warnings({**good, "dead_fraction": DEAD_WARN + 0.01, "explained_variance": EV_WARN - 0.01})) == 2
    assert "needs --training-tokens" not in budget_note(64_000, 64, 10.0)  # 1,000 per latent: no advice
    assert "1,000 per latent needs --training-tokens 64,000 (~2 min at this run's 640 tokens/s)" in budget_note(6_400, 64, 10.0)
    check_budget(MIN_TOKENS_PER_LATENT * 64, 64, 64)
    with pytest.raises(BudgetError):
        check_budget(MIN_TOKENS_PER_LATENT * 64 - 1, 64, 1)


def test_split_is_seeded_and_disjoint():
    texts = [f"t{i}" for i in range(50)]
    train, held = split_texts(texts, 0.1, 3, "prompts")
    assert (train, held) == split_texts(texts, 0.1, 3, "prompts") and len(held) == 5 and not set(train) & set(held)
    assert split_texts(texts, 0.1, 4, "prompts")[1] != held
    with pytest.raises(ValueError, match="cannot be split"):
        split_texts(texts[:4], 0.1, 0, "prompts")


def test_metrics_read_the_first_held_out_rows_up_to_the_token_cap():
    rows = [[1, 5, 6, 0], [1, 7, 0, 0], [1, 8, 9, 10]]  # BOS 1 and pad 0 excluded: 2, 1, 3 real tokens
    assert metric_rows(rows, [0, 1], max_tokens=3) == rows[:2]
    assert metric_rows(rows, [0, 1], max_tokens=100) == rows


def test_padding_columns_are_trimmed_not_tokens():
    assert trim_padding([[1, 5, 0, 0, 0], [1, 6, 7, 0, 0]], 0) == [[1, 5, 0], [1, 6, 7]]
    assert trim_padding([[1, 5, 6]], 0) == [[1, 5, 6]]


def _with_first_token_sink(monkeypatch, scale: float = 1000.0):
    """load_model returns the tiny Llama with its first real token (after BOS) blown up by `scale` from block 0 on,
    as the first token of a model without BOS is (an attention sink)."""
    import saerl_zoo.models as models

    real = models.load_model

    def load(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)

        def sink(_module, _args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden[:, 1] = hidden[:, 1] * scale
            return output

        model.model.layers[0].register_forward_hook(sink)
        return model, tokenizer

    monkeypatch.setattr(models, "load_model", load)


def test_a_first_token_sink_is_skipped_in_training_and_recorded_for_readers(ws, tmp_path, monkeypatch):
    root, _ = ws
    _with_first_token_sink(monkeypatch)
    args = ["train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", *SMALL]
    result = ok(*args, "--out", tmp_path / "auto")
    assert "attention sinks (norm > 10x their text's median) at the first token of 64 and at 0 later positions of 64 sampled" in result.output
    assert "training skips the first 2 position(s)" in result.output  # BOS and the sink
    cfg = json.loads((tmp_path / "auto" / "cfg.json").read_text())["metadata"]
    assert cfg["zoo_preprocessing"]["outlier_norm_ratio"] == 10.0 and cfg["seqpos_slice"] == [None]
    entry = yaml.safe_load((tmp_path / "auto" / "zoo_entry.yaml").read_text())
    assert entry["preprocessing"]["outlier_norm_ratio"] == 10.0 and entry["training"]["skipped_leading_positions"] == 2
    assert not [line for line in result.stderr.splitlines() if "attention sinks" in line]  # every sink was skipped

    # the same budget trained on the sinks reconstructs the tokens readers keep (sinks dropped) worse
    kept = ok(*args, "--out", tmp_path / "none", "--outlier-norm-ratio", "none")
    assert "attention sinks" not in kept.output
    ev = {name: _ev_without_sinks(root, tmp_path / name) for name in ("auto", "none")}
    assert ev["auto"] > 0.5 and ev["auto"] > ev["none"] + 0.1, ev


def _ev_without_sinks(root, sae_folder) -> float:
    from saerl_zoo.hooks import resolve
    from saerl_zoo.models import load_model, special_token_ids
    from saerl_zoo.sae_training import sae_sequences, site_activations
    from saerl_zoo.zoo.api import load_sae, sae_metrics

    model, tokenizer = load_model(root / "model")  # the patched loader: the sink is there
    sae = load_sae(sae_folder)
    prompts = [json.loads(line)["prompt"] for line in (root / "prompts.jsonl").read_text().splitlines()][:100]
    acts = site_activations(model, resolve(model, sae), sae_sequences(tokenizer, prompts, 32), tokenizer.pad_token_id,
                            tuple(special_token_ids(tokenizer)), outlier_norm_ratio=10.0)
    return sae_metrics(sae, acts)["explained_variance"]


def test_sinks_training_cannot_skip_are_warned_about(ws, tmp_path, monkeypatch):
    from saerl_zoo.sae_folder import sink_warnings
    from saerl_zoo.sae_training import AttentionSinks

    assert sink_warnings(AttentionSinks(10.0, 64, 900, 64, 0, (1,))) == []  # all at the skipped first token
    later = sink_warnings(AttentionSinks(10.0, 64, 900, 64, 5, (1,)))
    assert len(later) == 1 and later[0].startswith("5 of 900 sampled training tokens are attention sinks")
    assert AttentionSinks(10.0, 64, 900, 30, 0, (1,)).skip_leading == 0  # not in every row: not skipped by position
    assert sink_warnings(AttentionSinks(10.0, 64, 900, 30, 0, (1,)))[0].startswith("30 of 900")
    assert AttentionSinks(10.0, 64, 900, 64, 0, (1, 2)).skip_leading == 0  # first tokens at different positions


@pytest.mark.parametrize("value, message", [("bogus", "expected auto, none or a number"), ("0.5", "a number above 1")])
def test_bad_outlier_ratio_is_refused_before_the_model_loads(ws, tmp_path, value, message):
    root, _ = ws
    result = run("train-sae", "--model", tmp_path / "no-model", "--prompts", root / "prompts.jsonl", "--out", tmp_path / "x",
                 "--outlier-norm-ratio", value, *SMALL)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_the_decoder_bias_starts_at_the_activations_centre(ws, tmp_path, monkeypatch):
    """A residual stream centred far from zero (SmolLM2's mean is ~130 in norm): sae-lens starts b_dec at zero and a
    short run never gets there; started at the geometric median (default) or the mean, the SAE reconstructs and its bias stays near the centre."""
    import saerl_zoo.models as models

    root, _ = ws
    real = models.load_model
    offset = {}

    def load(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)
        shift = offset.setdefault("v", torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 50)

        def shifted(_module, _args, output):
            return (output[0] + shift, *output[1:]) if isinstance(output, tuple) else output + shift

        model.model.layers[0].register_forward_hook(shifted)
        return model, tokenizer

    monkeypatch.setattr(models, "load_model", load)
    ok("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", tmp_path / "sae", *SMALL)
    for start in ("mean", "zero"):
        ok("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", tmp_path / start, *SMALL,
           "--b-dec-init", start)
    from saerl_zoo.zoo.api import load_sae

    for centred in ("sae", "mean"):
        b_dec = load_sae(tmp_path / centred).b_dec.detach()
        assert (b_dec - offset["v"]).norm() < 0.2 * offset["v"].norm()
        assert json.loads((tmp_path / centred / "sae_metrics.json").read_text())["explained_variance"] > 0.5
    # sae-lens's start, on request: the bias stays far from the centre and the choice is recorded
    assert (load_sae(tmp_path / "zero").b_dec.detach() - offset["v"]).norm() > 0.5 * offset["v"].norm()
    entries = {name: yaml.safe_load((tmp_path / name / "zoo_entry.yaml").read_text()) for name in ("sae", "mean", "zero")}
    assert [e["training"]["b_dec_init"] for e in entries.values()] == ["geometric-median", "mean", "zero"]


def test_geometric_median_resists_outliers_and_moves_with_the_points():
    from saerl_zoo.sae_training import geometric_median

    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [100.0, 0.0]])  # on a line, the geometric median is the middle point
    torch.testing.assert_close(geometric_median(line), torch.tensor([1.0, 0.0]), atol=1e-3, rtol=0)
    points = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    shift = torch.full((8,), 40.0)
    torch.testing.assert_close(geometric_median(points + shift), geometric_median(points) + shift, atol=1e-3, rtol=0)
    spiked = torch.cat([points, torch.full((10, 8), 1e4)])  # 2% of the rows far away: the mean follows them, this does not
    assert geometric_median(spiked).norm() < 1.0 < spiked.mean(0).norm()
    # started on a row that is not the median (the mean here is row 0): Weiszfeld alone would stop there
    on_a_row = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-3.0, 0.0]])
    torch.testing.assert_close(geometric_median(on_a_row), torch.tensor([1.0, 0.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(geometric_median(torch.ones(4, 3)), torch.ones(3))  # every row the same point


def test_sinks_are_looked_for_in_corpus_texts_too(ws, tmp_path, monkeypatch):
    """Training rows hold the prompts first, then the corpus: a sink only the corpus texts have is still found."""
    import saerl_zoo.models as models

    root, _ = ws
    real = models.load_model

    def load(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)
        corpus_start = tokenizer.convert_tokens_to_ids("T")  # corpus lines start "The sum of", prompts "What is"

        def sink(_module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            rows = args[0].shape[0] if args else hidden.shape[0]
            ids = sink.ids[:rows]
            hidden[ids[:, 1] == corpus_start, 1] *= 1000.0
            return output

        def remember(_module, args, kwargs):
            sink.ids = kwargs.get("input_ids", args[0] if args else None)

        model.register_forward_pre_hook(remember, with_kwargs=True)
        model.model.layers[0].register_forward_hook(sink)
        return model, tokenizer

    monkeypatch.setattr(models, "load_model", load)
    result = ok("train-sae", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--corpus", root / "corpus.txt",
                "--out", tmp_path / "sae", *SMALL)
    assert "attention sinks (norm > 10x their text's median) at the first token of" in result.output
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())["metadata"]
    assert cfg["zoo_preprocessing"]["outlier_norm_ratio"] == 10.0
    assert any("that training could not skip" in line for line in result.stderr.splitlines())  # only some rows have one
