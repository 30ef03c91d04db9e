"""`saerl-zoo transfer fit | eval` on two tiny saved models (no download)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import local_sae_entry, make_tiny_llama, make_tiny_sae
from test_zoo_support import write_catalog

from saerl_zoo.cli import main
from saerl_zoo.transfer import StitchedSAE, StitchMap
from saerl_zoo.zoo import api, registry
from saerl_zoo.zoo.formats import save_sae
from saerl_zoo.zoo.hub import hash_folder


def test_fit_register_then_load_for_model_and_eval(tmp_path, tokenizer, monkeypatch):
    for name, hidden, seed in (("a", 32, 0), ("b", 48, 1)):
        model = make_tiny_llama(len(tokenizer), hidden=hidden, layers=2, seed=seed)
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    folder = save_sae(make_tiny_sae(32), tmp_path / "sae")
    catalog = write_catalog(tmp_path / "catalog.yaml", [local_sae_entry(folder, "test/a", hash_folder(folder))])
    monkeypatch.setenv("SAERL_ZOO_CATALOG", str(catalog))
    monkeypatch.delenv("SAERL_ZOO_HUB_CATALOGS", raising=False)
    registry._CATALOG_CACHE.clear()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Q: {i} * {i + 3} = ? naïve  {i}"}) + "\n" for i in range(60)))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + {2 * i}?"}) + "\n" for i in range(24)))
    runner = CliRunner()

    args = ["transfer", "fit", "--sae", "test/sae", "--from", str(tmp_path / "a"), "--to", str(tmp_path / "b"), "--corpus", str(corpus),
            "--candidate-layers", "0,1", "--pairing", "token", "--out", str(tmp_path / "stitches" / "b"),
            "--register", str(catalog), "--name", "test/b-to-a", "--model-id", "test/b"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "held-out explained variance" in result.output and "registered test/b-to-a" in result.output
    stitch = StitchMap.load(tmp_path / "stitches" / "b")
    assert stitch.config.source_model == "test/b" and stitch.config.target_model == "test/a" and "layer_selection" in stitch.metrics
    registry._CATALOG_CACHE.clear()
    assert isinstance(api.load_sae("test/sae", for_model="test/b"), StitchedSAE)
    listed = runner.invoke(main, ["list", "--kind", "stitch"])
    assert "test/b-to-a" in listed.output and "local" in listed.output

    report = tmp_path / "report.json"
    result = runner.invoke(main, ["transfer", "eval", "--stitch", str(tmp_path / "stitches" / "b"), "--from", str(tmp_path / "a"),
                                  "--to", str(tmp_path / "b"), "--prompts", str(prompts), "--out", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert {"map", "sae", "features", "curriculum"} <= set(data["transfer"]) and data["native"]["n_prompts"] == 24

    bad = runner.invoke(main, ["transfer", "fit", "--sae", str(folder), "--to", str(tmp_path / "b"), "--corpus", str(corpus), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "give its host model with --from" in bad.output
