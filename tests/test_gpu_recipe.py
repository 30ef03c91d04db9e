"""The GPU recipe (scripts/gpu_recipe/) end to end on CPU with its tiny local stand-ins.

Nothing here says anything about accuracy on a GPU: the smoke test checks that
build_artifacts -> train (both arms, both losses, resume) -> evaluate run and
write what the next step reads, and that recipe.yaml's settings are ones TRL
and the library accept.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

RECIPE_DIR = Path(__file__).resolve().parents[1] / "scripts" / "gpu_recipe"


def load_script(name: str):
    """A recipe script as a module under a unique name (``train``/``evaluate`` would shadow other modules)."""
    sys.path.insert(0, str(RECIPE_DIR))  # the scripts import their shared recipe_lib
    spec = importlib.util.spec_from_file_location(f"gpu_recipe_{name}", RECIPE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def restore_threads():
    threads = torch.get_num_threads()  # the smoke recipe sets 1 thread; other tests keep theirs
    yield
    torch.set_num_threads(threads)


def test_recipe_settings_are_valid(tmp_path):
    from trl import GRPOConfig

    lib = load_script("recipe_lib")
    recipe = lib.load_recipe(RECIPE_DIR / "recipe.yaml")
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert set(recipe["train"]["trl"]) <= fields
    for settings in recipe["train"]["loss_types"].values():
        assert set(settings) <= fields
    assert {v["loss_type"] for v in recipe["train"]["loss_types"].values()} == {"grpo", "dr_grpo"}
    assert recipe["model"]["id"] == "Qwen/Qwen2.5-Math-1.5B" and recipe["data"]["hub"] == "zwhe99/DeepMath-103K"
    assert 0 < recipe["labels"]["fraction"] <= 0.10
    assert recipe["curriculum"]["mixing"] == 0.1
    assert set(recipe["eval"]["sets"]) == {"math500", "aime24", "amc23", "minerva", "olympiadbench"}
    smoke = lib.load_recipe(RECIPE_DIR / "recipe.yaml", smoke=True)
    assert smoke["train"]["trl"]["learning_rate"] == recipe["train"]["trl"]["learning_rate"]  # merged, not replaced
    assert set(smoke["train"]["trl"]) <= fields
    # one optimiser step = prompts_per_step x num_generations completions, whatever the GPU count
    train = load_script("train")
    assert train.gradient_accumulation(128, 8, 16, 8) == 8 and train.gradient_accumulation(128, 8, 16, 1) == 64
    with pytest.raises(ValueError, match="not a multiple"):
        train.gradient_accumulation(128, 8, 16, 3)
    with pytest.raises(ValueError, match="at most 10%"):
        load_script("build_artifacts").stage_labels({"labels": {"fraction": 0.2}}, tmp_path)


def test_recipe_reward_is_math_reward_with_its_normalisation():
    """The recipe trains on DeepMath/MATH references such as ``\\$32,\\!348``; its TRL reward must read them as
    saerl_zoo.rewards.math_reward does (build_artifacts and evaluate call math_reward directly)."""
    lib = load_script("recipe_lib")
    completions = ["\\boxed{32348}", "\\boxed{32,349}", "\\boxed{30}"]
    assert lib.accuracy_reward(completions, answer=["\\$32,\\!348", "\\$32,\\!348", "30^\\circ"]) == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("name", ["build_artifacts", "train", "evaluate"])
def test_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script(name).main(["--help"])
    assert exit_info.value.code == 0 and "--smoke" in capsys.readouterr().out


@pytest.mark.slow
def test_smoke_build_train_evaluate(tmp_path, restore_threads):
    from saerl_zoo.adapters.trl import STATE_NAME
    from saerl_zoo.curriculum import Curriculum
    from saerl_zoo.data import load_rows

    out = tmp_path / "run"
    common = ["--smoke", "--out", str(out)]
    build, train, evaluate = (load_script(n) for n in ("build_artifacts", "train", "evaluate"))

    build.main(common)
    artifacts = out / "artifacts"
    pool = load_rows(artifacts / "pool.jsonl")
    rates = load_rows(artifacts / "labels" / "pass_rates.jsonl", prompt_field=None)
    assert len(rates) == len(pool) // 10 and all(0 <= r["pass_rate"] <= 1 for r in rates)
    assert json.loads((artifacts / "sae" / "sae_metrics.json").read_text())["d_sae"] == 256
    curriculum = Curriculum.load(artifacts / "curriculum")
    assert len(curriculum) == len(pool) and 0 < curriculum.keep.sum() < len(pool)  # the quality filter dropped some
    assert curriculum.clusters is not None and curriculum.difficulty is not None
    assert not list(artifacts.glob(".*.tmp"))  # no staging folder left behind

    # Vanilla and SaeRL, GRPO and Dr.GRPO; the SaeRL arm stops at step 2, then resumes to step 3.
    vanilla = train.main([*common, "--arm", "vanilla", "--loss-type", "grpo", "--seed", "0"])
    saerl = train.main([*common, "--arm", "saerl", "--loss-type", "dr_grpo", "--seed", "0", "--max-steps", "2"])
    assert (saerl.parent / "checkpoint-2" / STATE_NAME).exists()  # the SaeRL position travels with the checkpoint
    assert not (vanilla.parent / "checkpoint-2" / STATE_NAME).exists()
    shutil.rmtree(saerl)
    train.main([*common, "--arm", "saerl", "--loss-type", "dr_grpo", "--seed", "0", "--max-steps", "3"])
    state = json.loads((saerl.parent / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (saerl / "model.safetensors").exists()
    mtime = (vanilla / "model.safetensors").stat().st_mtime
    train.main([*common, "--arm", "vanilla", "--loss-type", "grpo", "--seed", "0"])  # finished: skipped
    assert (vanilla / "model.safetensors").stat().st_mtime == mtime

    table = evaluate.main([*common, "--base", "--runs"])
    results = json.loads((table.parent / "results.json").read_text())
    assert set(results) == {"base", "vanilla-grpo-seed0", "saerl-dr_grpo-seed0"}
    for result in results.values():
        assert set(result["sets"]) == {"math500", "aime24", "amc23", "minerva", "olympiadbench"}
        assert result["sets"]["aime24"]["metric"] == "avg@2" and result["sets"]["math500"]["metric"] == "greedy"
        assert result["smoke"] and 0 <= result["average"] <= 1
    assert "mean nothing" in table.read_text()


@pytest.mark.slow
def test_smoke_with_a_given_sae(tmp_path, restore_threads):
    from saerl_zoo.embedded import default_path

    build = load_script("build_artifacts")
    common = ["--smoke", "--out", str(tmp_path), "--stage", "sae"]
    sae = str(default_path("sae"))  # the embedded policy's own SAE: block 2, 1024 latents
    build.main([*common, "--sae", sae])
    build.main(common)  # a later invocation uses the recorded SAE, without --sae and without training one
    assert not (tmp_path / "artifacts" / "sae").exists()
    recipe = build.lib.load_recipe(build.lib.DEFAULT_RECIPE, smoke=True)
    assert build.sae_source(recipe, tmp_path, None) == sae
    with pytest.raises(ValueError, match="use another --out"):
        build.main([*common, "--sae", "saerl-tiny-math/sae"])
