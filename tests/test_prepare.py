"""`saerl-zoo prepare`: the whole bring-your-own-model path on a tiny saved Llama, resumed stage by stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import save_tiny_llama

from saerl_zoo.cli import main
from saerl_zoo.prepare import STAGES, PrepareConfig, choose_sae

# train-sae's smallest accepted budget for 64 latents (see tests/test_train_sae.py)
SMALL_SAE = ["--sae", "train", "--sae-d-sae", 64, "--sae-k", 8, "--sae-batch-tokens", 64, "--sae-training-tokens", 6400,
             "--sae-context", 32]
VERIFIER = '''
def even(completion, row):
    """A deterministic score that differs between completions, so pass rates vary."""
    return float(len(completion) % 2 == 0)
'''


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    save_tiny_llama(root / "model")
    rng = np.random.default_rng(0)
    rows = [{"id": f"q{i}", "prompt": f"What is {a} + {b}?", "answer": str(a + b)}
            for i, (a, b) in enumerate(rng.integers(0, 999, (240, 2)))]
    (root / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "prepare_verifier.py").write_text(VERIFIER)
    return root


def command(root, out, *extra):
    return ["prepare", "--model", root / "model", "--prompts", root / "prompts.jsonl", "--out", out, *SMALL_SAE,
            "--count", 24, "--k", 4, "--max-new-tokens", 4, "--verifier", "prepare_verifier:even", "--quality-count", 40,
            "--max-length", 32, *extra]


@pytest.fixture(scope="module")
def done(ws, tmp_path_factory):
    import os

    out = ws / "run"
    cwd = os.getcwd()
    os.chdir(ws)  # the user verifier is found in the current folder
    try:
        result = run(*command(ws, out))
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return out, result


def test_every_stage_writes_its_output(done):
    out, result = done
    manifest = json.loads((out / "prepare.json").read_text())
    assert sorted(manifest["stages"]) == sorted(STAGES)
    assert (out / "sae" / "cfg.json").exists() and (out / "sae" / "sae_metrics.json").exists()
    rates = [json.loads(line) for line in (out / "labels" / "pass_rates.jsonl").read_text().splitlines()]
    assert len(rates) == 24 and all(0 <= r["pass_rate"] <= 1 for r in rates)
    quality = [json.loads(line) for line in (out / "labels" / "quality_labels.jsonl").read_text().splitlines()]
    assert {q["label"] for q in quality} == {0, 1}
    assert (out / "features" / "pool.safetensors").exists() and (out / "features" / "quality.safetensors").exists()
    assert (out / "probes" / "difficulty").is_dir() and (out / "probes" / "quality").is_dir()
    ordered = (out / "curriculum" / "ordered.jsonl").read_text().splitlines()
    assert 0 < len(ordered) <= 240
    assert manifest["stages"]["curriculum"]["summary"]["kept"] == len(ordered)
    for stage in STAGES:
        assert manifest["stages"][stage]["seconds"] >= 0


def test_rerun_skips_finished_stages(done, ws, monkeypatch):
    out, _ = done
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "feature_cache" not in p.parts}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    for target in ("saerl_zoo.pass_rates.label_pass_rates", "saerl_zoo.quality_labels.label_quality",
                   "saerl_zoo.probe_files.fit_probe_files", "saerl_zoo.sae_folder.train_sae_folder",
                   "saerl_zoo.featurizer.featurize", "saerl_zoo.curriculum.build_curriculum"):
        monkeypatch.setattr(target, refuse)
    result = run(*command(ws, out))
    assert result.exit_code == 0, result.output
    assert result.output.count("done before, skipped") == len(STAGES)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "feature_cache" not in p.parts}
    assert before == after


def test_killed_run_resumes_at_the_stage_it_was_in(ws, done, monkeypatch, tmp_path):
    import shutil

    finished, _ = done
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    for stage in ("probes", "curriculum"):  # back to where a run stands after its features stage
        shutil.rmtree(out / stage)
    manifest = json.loads((out / "prepare.json").read_text())
    for stage in ("probes", "curriculum"):
        del manifest["stages"][stage]
    (out / "prepare.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(ws)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("saerl_zoo.probe_files.fit_probe_files", killed)
        assert run(*command(ws, out)).exit_code != 0
    pending = json.loads((out / "prepare.json").read_text())["stages"]["probes"]
    assert not (out / "probes").exists() and "seconds" not in pending  # recorded as running, never finished
    result = run(*command(ws, out))
    assert result.exit_code == 0, result.output
    ran = [line.split(":")[0] for line in result.output.splitlines() if line.endswith(": running")]
    assert ran == ["probes", "curriculum"]
    assert (out / "curriculum" / "ordered.jsonl").exists()


def test_other_settings_for_a_finished_stage_are_refused(done, ws, monkeypatch):
    out, _ = done
    monkeypatch.chdir(ws)
    result = run(*[("5" if a == 4 and i > 0 and command(ws, out)[i - 1] == "--k" else a)
                   for i, a in enumerate(command(ws, out))])
    assert result.exit_code == 1
    assert "pass_rates" in result.output and "other settings" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_stage_to_redo_refuses_stale_later_outputs(done, ws, monkeypatch, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(done[0], out)
    (out / "labels" / "pass_rates.jsonl").unlink()  # pass rates must be made again; the probes were fitted on the old ones
    monkeypatch.chdir(ws)
    result = run(*command(ws, out))
    assert result.exit_code == 1 and "pass_rates stage has to run" in result.output and "probes" in result.output


def test_an_input_edited_in_place_is_other_input(done, ws, monkeypatch, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(done[0], out)
    monkeypatch.chdir(ws)
    original = (ws / "prompts.jsonl").read_text()
    try:  # same path, other content
        (ws / "prompts.jsonl").write_text(original + json.dumps({"id": "new", "prompt": "What is 1 + 1?", "answer": "2"}) + "\n")
        result = run(*command(ws, out))
    finally:
        (ws / "prompts.jsonl").write_text(original)
    assert result.exit_code == 1 and "sae" in result.output and "other settings" in result.output


def test_a_named_sae_is_used_as_given(tmp_path):
    config = PrepareConfig(model="m", prompts="p", out=str(tmp_path), sae="some/folder")
    assert choose_sae(config) == "some/folder"


def test_local_model_without_id_trains(tmp_path):
    said = []
    config = PrepareConfig(model=str(tmp_path), prompts="p", out=str(tmp_path))
    assert choose_sae(config, said.append) is None
    assert "local folder" in said[0]


def test_auto_finds_a_published_sae_for_a_hub_id(tmp_path):
    said = []
    config = PrepareConfig(model="google/gemma-2-2b-it", prompts="p", out=str(tmp_path))
    chosen = choose_sae(config, said.append)
    assert chosen is not None and chosen.startswith("sae-lens:")
    assert "using" in said[0]


def test_auto_without_a_published_sae_trains(tmp_path):
    said = []
    config = PrepareConfig(model="nobody/unheard-of-model-7b", prompts="p", out=str(tmp_path))
    assert choose_sae(config, said.append) is None
    assert "training one" in said[0]
