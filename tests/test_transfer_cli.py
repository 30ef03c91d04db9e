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

    # probes fitted on prompts p0..p5: --exclude leaves those out of every score, and says how many were scored
    import numpy as np

    from saerl_zoo.difficulty import DifficultyProbe
    from saerl_zoo.quality import QualityProbe

    rng = np.random.default_rng(0)
    DifficultyProbe.fit(rng.random((40, 64)), rng.random(40), seed=0).save(tmp_path / "dprobe")  # the SAE's 64 latents
    QualityProbe.fit(rng.random((40, 64)), np.arange(40) % 2, seed=0).save(tmp_path / "qprobe")
    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps({"id": f"p{i}", "level": i % 5 + 1, "quality": int(i % 4 != 0)}) + "\n" for i in range(24)))
    fitted_on = tmp_path / "fitted_on.jsonl"
    fitted_on.write_text("".join(json.dumps({"id": f"p{i}"}) + "\n" for i in range(6)))
    scored = {}
    for name, extra in (("all", []), ("held_out", ["--exclude", str(fitted_on)])):
        result = runner.invoke(main, ["transfer", "eval", "--stitch", str(tmp_path / "stitches" / "b"), "--from", str(tmp_path / "a"),
                                      "--to", str(tmp_path / "b"), "--prompts", str(prompts), "--ground-truth", str(truth), "--difficulty-probe", str(tmp_path / "dprobe"),
                                      "--quality-probe", str(tmp_path / "qprobe"), "--out", str(tmp_path / f"{name}.json"), *extra])
        assert result.exit_code == 0, result.output
        scored[name] = json.loads((tmp_path / f"{name}.json").read_text())
    gaps = {name: r["transfer"]["probes"]["native_minus_transferred"] for name, r in scored.items()}
    assert [gaps[n]["quality_auroc"]["n"] for n in ("all", "held_out")] == [24, 18]
    assert [gaps[n]["difficulty_spearman"]["n"] for n in ("all", "held_out")] == [18, 14]  # good prompts only (p1-3, p5 left out)
    assert scored["held_out"]["scored_prompts"] == {"n": 18, "left_out": 6, "left_out_from": [str(fitted_on)]}
    fitted_on.write_text(json.dumps({"id": "nope"}) + "\n")
    unknown = runner.invoke(main, ["transfer", "eval", "--stitch", str(tmp_path / "stitches" / "b"), "--from", str(tmp_path / "a"),
                                   "--to", str(tmp_path / "b"), "--prompts", str(prompts), "--exclude", str(fitted_on)])
    assert unknown.exit_code != 0 and "1 ids are not among the prompts, e.g. 'nope'" in unknown.output

    bad = runner.invoke(main, ["transfer", "fit", "--sae", str(folder), "--to", str(tmp_path / "b"), "--corpus", str(corpus), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "give its host model with --from" in bad.output
